//! One owner task per container group. It alone acts on the group's host objects, so steps
//! never race; it learns the desired state from store watch events and the actual state from
//! the group's supervisor, and reconciles the two.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use skiff_image::{ImageError, ImageStore, RegistryAuth, ResolvedImage};
use skiff_model::arm::{ContainerInstanceView, ContainerState};
use skiff_model::image_ref::ImageRef;
use skiff_model::records::{Desired, GroupRecord, PullProgress};
use skiff_model::resources::allocate;
use skiff_model::ArmError;
use skiff_runtime::{ClientError, ContainerPlan, GroupLimits, GroupPlan, GroupStatus, RestartPolicy, SupervisorClient};
use tokio::sync::mpsc;

use crate::process::{merge_env, process_args, resolve_user};
use crate::records::{complete_operation, remove_group, update_group, update_operation};
use crate::view::{self, push_event};
use crate::Shared;

/// The supervisor's status stream, pumped by its own task so the owner stays `Sync`-free
/// of the client's stream type; dropping the feed stops the pump.
struct StatusFeed {
    rx: mpsc::UnboundedReceiver<Result<GroupStatus, ClientError>>,
    pump: tokio::task::JoinHandle<()>,
}

impl StatusFeed {
    fn new(stream: impl Stream<Item = Result<GroupStatus, ClientError>> + Send + 'static) -> StatusFeed {
        let (tx, rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(item) = stream.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        StatusFeed { rx, pump }
    }
}

impl Drop for StatusFeed {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

fn now() -> String {
    view::timestamp(&jiff::Timestamp::now())
}

/// Every image a group needs (app containers first, then init containers).
pub fn images_of(rec: &GroupRecord) -> Vec<String> {
    let p = &rec.spec.properties;
    let mut out: Vec<String> = p.containers.iter().map(|c| c.properties.image.clone()).collect();
    out.extend(p.init_containers.iter().flatten().filter_map(|c| c.properties.image.clone()));
    out.dedup();
    out
}

pub(crate) struct Owner {
    sh: Arc<Shared>,
    rec: GroupRecord,
    dir: PathBuf,
    /// The (desired, generation) pair the host was last brought to.
    applied: Option<(Desired, u64)>,
    watch: Option<StatusFeed>,
    /// Phase timestamps of the start in progress.
    phases: crate::phases::PhaseClock,
}

enum Flow {
    Continue,
    Done,
}

impl Owner {
    pub fn new(sh: Arc<Shared>, rec: GroupRecord) -> Owner {
        let dir = sh.group_dir(&rec.uid);
        Owner { sh, rec, dir, applied: None, watch: None, phases: Default::default() }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<GroupRecord>) {
        self.adopt().await;
        loop {
            while let Ok(rec) = rx.try_recv() {
                self.rec = rec;
            }
            if let Flow::Done = self.reconcile().await {
                return;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(rec) => self.rec = rec,
                    None => return,
                },
                status = next_status(&mut self.watch) => self.on_status_event(status).await,
            }
        }
    }

    fn plan_generation(&self) -> Option<u64> {
        GroupPlan::load(&self.dir).ok().map(|p| p.generation)
    }

    /// Find what a previous daemon left running for this group and take it over.
    async fn adopt(&mut self) {
        let alive = skiff_runtime::is_alive(&self.dir).await;
        let plan_gen = self.plan_generation();
        let gen = self.rec.generation;
        // A supervisor still holding its start was spawned by a daemon that died before the
        // network was finished: it is provisioned again from the start, not adopted.
        let held = skiff_runtime::read_status_file(&self.dir).is_ok_and(|s| s.held);
        match self.rec.desired {
            Desired::Running if alive && plan_gen == Some(gen) && !held => {
                self.applied = Some((Desired::Running, gen));
                self.connect().await;
            }
            Desired::Running if !alive && plan_gen == Some(gen) && self.rec.observed_generation == gen => {
                // The supervisor finished (or the host rebooted). Finished groups stay finished;
                // anything else is started again.
                if let Ok(status) = skiff_runtime::read_status_file(&self.dir) {
                    if status.state.is_finished() {
                        self.applied = Some((Desired::Running, gen));
                        self.apply_status(&status).await;
                    }
                }
            }
            Desired::Stopped if !alive => self.applied = Some((Desired::Stopped, gen)),
            _ => {}
        }
        crate::network::adopt(&self.sh, &self.rec);
        tracing::debug!(group = %self.rec.name, uid = %self.rec.uid, alive, adopted = self.applied.is_some(), "adopt");
    }

    async fn reconcile(&mut self) -> Flow {
        let want = (self.rec.desired, self.rec.generation);
        if self.applied == Some(want) {
            return Flow::Continue;
        }
        match self.rec.desired {
            Desired::Deleted => {
                self.teardown().await;
                self.sh.meter.event(&self.rec, None, "Deleted", "container group deleted", None, None, None).await;
                self.sh.meter.forget(&self.rec.uid);
                if let Err(e) = remove_group(self.sh.store.as_ref(), &self.rec, &now()).await {
                    tracing::error!(group = %self.rec.name, error = %e, "removing the group record failed");
                }
                tracing::info!(group = %self.rec.name, uid = %self.rec.uid, "group deleted");
                Flow::Done
            }
            Desired::Stopped => {
                self.stop_supervisor().await;
                self.sh.meter.event(&self.rec, None, "Stopped", "container group stopped", None, None, None).await;
                self.unmount_all();
                self.applied = Some(want);
                let final_status = skiff_runtime::read_status_file(&self.dir).ok();
                let names = self.app_container_names();
                let op = self.rec.pending_operation.clone();
                let gen = self.rec.generation;
                let _ = update_group(self.sh.store.as_ref(), &self.rec.key(), |r| {
                    if let Some(st) = &final_status {
                        r.container_views = view::container_views(st, &r.container_views);
                    }
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    r.group_view.state = Some(view::group_state(r.restart_policy(), true, &names, &r.container_views).as_str().to_string());
                    if r.observed_generation < gen {
                        r.observed_generation = gen;
                        r.provisioning_state = "Succeeded".to_string();
                    }
                    true
                })
                .await;
                if let Some(op) = op {
                    let _ = complete_operation(self.sh.store.as_ref(), &op, &now(), None).await;
                }
                Flow::Continue
            }
            Desired::Running => {
                self.applied = Some(want);
                // The Pending event is written while provisioning runs; it is durable before
                // provision returns, and so before any event the new run's status brings.
                let (sh, rec) = (Arc::clone(&self.sh), self.rec.clone());
                let pending = format!("provisioning generation {}", want.1);
                let (_, provisioned) = tokio::join!(sh.meter.event(&rec, None, "Pending", &pending, None, None, None), self.provision());
                if let Err(err) = provisioned {
                    self.fail_provisioning(err).await;
                }
                Flow::Continue
            }
        }
    }

    fn app_container_names(&self) -> Vec<String> {
        self.rec.container_names().map(str::to_string).collect()
    }

    async fn connect(&mut self) {
        match SupervisorClient::connect(&self.dir).await {
            Ok(client) => self.watch = Some(StatusFeed::new(client.watch())),
            Err(e) => tracing::warn!(group = %self.rec.name, error = %e, "cannot connect to the supervisor"),
        }
    }

    async fn stop_supervisor(&mut self) {
        self.watch = None;
        if !skiff_runtime::is_alive(&self.dir).await {
            // Metering: an interval left open by a supervisor that died unseen ends at its
            // last flush (or the finish time its status file records).
            self.sh.meter.close(&self.rec, skiff_runtime::read_status_file(&self.dir).ok().as_ref(), None).await;
            return;
        }
        match SupervisorClient::connect(&self.dir).await {
            Ok(mut client) => {
                if let Err(e) = client.stop(self.sh.cfg.stop_grace).await {
                    tracing::warn!(group = %self.rec.name, error = %e, "supervisor stop failed");
                }
            }
            Err(e) => tracing::warn!(group = %self.rec.name, error = %e, "cannot reach the supervisor to stop it"),
        }
        // Metering and events: the final status closes the interval at the containers' finish.
        let final_status = skiff_runtime::read_status_file(&self.dir).ok();
        if let Some(st) = &final_status {
            self.sh.meter.on_status(&self.rec, st).await;
        }
        self.sh.meter.close(&self.rec, final_status.as_ref(), Some(crate::metering::now_ms())).await;
    }

    fn unmount_all(&self) {
        unmount_containers(&self.dir);
    }

    async fn teardown(&mut self) {
        self.stop_supervisor().await;
        cleanup_host_objects(&self.sh, &self.dir, &self.rec.uid);
        crate::network::teardown(&self.sh, &self.rec).await;
        let uid = self.rec.uid.clone();
        if let Err(e) = crate::userns::release(self.sh.store.as_ref(), |owner| owner == uid).await {
            tracing::warn!(group = %self.rec.name, error = %e, "freeing the user id range failed");
        }
    }

    /// Bring the group to `Running` at the record's generation.
    async fn provision(&mut self) -> Result<(), ProvisionError> {
        let gen = self.rec.generation;
        let spec = self.rec.spec.clone();
        let t0 = Instant::now();
        self.phases.begin();

        // Images first: a failed pull leaves the previous generation running.
        let mut resolved: HashMap<String, ResolvedImage> = HashMap::new();
        for image in images_of(&self.rec) {
            if resolved.contains_key(&image) {
                continue;
            }
            let img = self.ensure_image(&image).await?;
            resolved.insert(image, img);
        }
        self.phases.mark(crate::phases::Phase::ImageReady);

        self.stop_supervisor().await;
        unmount_containers(&self.dir);
        crate::volumes::unmount_except(&self.dir, &crate::volumes::empty_dirs(&self.rec));
        let ids = match &self.sh.cfg.userns {
            Some(cfg) => Some(
                crate::userns::ensure_range(self.sh.store.as_ref(), cfg, &self.rec.uid)
                    .await
                    .map_err(|e| ProvisionError::internal(format!("allocating a user id range: {e}")))?
                    .ok_or_else(|| ProvisionError::internal("no user id range is free on this host".to_string()))?,
            ),
            None => None,
        };
        let mut volumes = crate::volumes::prepare(&self.sh, &self.rec, &self.dir).await.map_err(|e| ProvisionError { code: e.code.to_string(), message: e.message, container: None })?;
        if let Some(r) = ids {
            crate::volumes::map_ids(&self.dir, &mut volumes, skiff_image::IdMap { host_base: r.host_base, size: r.size })
                .map_err(|e| ProvisionError { code: e.code.to_string(), message: e.message, container: None })?;
        }
        let containers_dir = mount_writable_layers(&self.dir, self.sh.cfg.writable_layer_bytes).map_err(|e| ProvisionError::internal(format!("preparing the writable layers' tmpfs: {e}")))?;

        let alloc = allocate(&spec.properties);
        let mut containers = Vec::new();
        for (c, a) in spec.properties.containers.iter().zip(&alloc.containers) {
            let image = &resolved[&c.properties.image];
            let cdir = containers_dir.join(&c.name);
            let idmap = ids.map(|r| skiff_image::IdMap { host_base: r.host_base, size: r.size });
            let rootfs = self.mount_rootfs(image, cdir, idmap).await.map_err(|e| ProvisionError::internal(format!("preparing the root filesystem of container '{}': {e}", c.name)))?;
            let cfg = &image.config;
            let args = process_args(c.properties.command.as_deref(), &cfg.entrypoint, &cfg.cmd).map_err(|m| ProvisionError::container(&c.name, "InvalidContainerCommand", m))?;
            let env = merge_env(&cfg.env, c.properties.environment_variables.as_deref().unwrap_or_default());
            let mut user = resolve_user(&cfg.user, read_rootfs_file(&rootfs, "etc/passwd").as_deref(), read_rootfs_file(&rootfs, "etc/group").as_deref())
                .map_err(|m| ProvisionError::container(&c.name, "InvalidContainerUser", m))?;
            if let Some(sc) = &c.properties.security_context {
                if let Some(uid) = sc.run_as_user {
                    user.uid = uid as u32;
                }
                if let Some(gid) = sc.run_as_group {
                    user.gid = gid as u32;
                }
            }
            containers.push(ContainerPlan {
                name: c.name.clone(),
                rootfs,
                args,
                env,
                cwd: if cfg.working_dir.is_empty() { "/".to_string() } else { cfg.working_dir.clone() },
                uid: user.uid,
                gid: user.gid,
                additional_gids: user.additional_gids,
                hostname: self.rec.name.clone(),
                cpu_shares: a.cpu_shares,
                cpu_quota_us: a.cpu_quota_us,
                cpu_period_us: alloc.cpu_period_us,
                memory_limit_bytes: a.memory_limit_bytes,
                hostname_file: None,
                mounts: crate::volumes::mounts_for(&volumes, c.properties.volume_mounts.as_deref()),
                liveness_probe: c.properties.liveness_probe.as_ref().and_then(crate::probes::probe_plan),
                readiness_probe: c.properties.readiness_probe.as_ref().and_then(crate::probes::probe_plan),
                stdin: c.properties.stdin.unwrap_or(false),
            });
        }
        // Init containers: the group's whole allocation (ACI gives them no requests of their own).
        let mut init_containers = Vec::new();
        for c in spec.properties.init_containers.iter().flatten() {
            let p = &c.properties;
            let image = p.image.as_ref().and_then(|i| resolved.get(i)).ok_or_else(|| ProvisionError::container(&c.name, "InvalidImage", "an init container needs an image".to_string()))?;
            let idmap = ids.map(|r| skiff_image::IdMap { host_base: r.host_base, size: r.size });
            let rootfs = self.mount_rootfs(image, containers_dir.join(&c.name), idmap).await.map_err(|e| ProvisionError::internal(format!("preparing the root filesystem of init container '{}': {e}", c.name)))?;
            let cfg = &image.config;
            let args = process_args(p.command.as_deref(), &cfg.entrypoint, &cfg.cmd).map_err(|m| ProvisionError::container(&c.name, "InvalidContainerCommand", m))?;
            let user = resolve_user(&cfg.user, read_rootfs_file(&rootfs, "etc/passwd").as_deref(), read_rootfs_file(&rootfs, "etc/group").as_deref())
                .map_err(|m| ProvisionError::container(&c.name, "InvalidContainerUser", m))?;
            init_containers.push(ContainerPlan {
                name: c.name.clone(),
                rootfs,
                args,
                env: merge_env(&cfg.env, p.environment_variables.as_deref().unwrap_or_default()),
                cwd: if cfg.working_dir.is_empty() { "/".to_string() } else { cfg.working_dir.clone() },
                uid: p.security_context.as_ref().and_then(|s| s.run_as_user).map_or(user.uid, |u| u as u32),
                gid: p.security_context.as_ref().and_then(|s| s.run_as_group).map_or(user.gid, |g| g as u32),
                additional_gids: user.additional_gids,
                hostname: self.rec.name.clone(),
                cpu_shares: 1024,
                cpu_quota_us: None,
                cpu_period_us: alloc.cpu_period_us,
                memory_limit_bytes: alloc.memory_bytes,
                hostname_file: None,
                mounts: crate::volumes::mounts_for(&volumes, p.volume_mounts.as_deref()),
                liveness_probe: None,
                readiness_probe: None,
                stdin: false,
            });
        }
        // The namespace exists before anything uses it: the held supervisor (which joins it
        // for probes) and the network setup run at the same time below.
        let netns_path = self.sh.cfg.netns_dir.join(&self.rec.uid);
        let ns = netns_path.clone();
        tokio::task::spawn_blocking(move || skiff_runtime::ensure_netns(&ns))
            .await
            .map_err(|e| ProvisionError::internal(format!("creating the network namespace: {e}")))?
            .map_err(|e| ProvisionError::internal(format!("creating the network namespace: {e}")))?;
        let net_files = crate::network::files(&self.sh, &self.dir);
        let cfg = &self.sh.cfg;
        let plan = GroupPlan {
            group_id: self.rec.uid.clone(),
            generation: gen,
            restart_policy: match self.rec.restart_policy() {
                "Never" => RestartPolicy::Never,
                "OnFailure" => RestartPolicy::OnFailure,
                _ => RestartPolicy::Always,
            },
            cgroup_parent: cfg.cgroup_parent.clone(),
            group_limits: GroupLimits { cpu_cores: alloc.cpu_cores, memory_bytes: alloc.memory_bytes, pids_max: cfg.pids_max },
            netns_path: netns_path.clone(),
            runtime: cfg.runtime.clone(),
            rlimit_nofile: 1024 * 1024,
            log_max_bytes: cfg.log_max_bytes,
            backoff_initial_ms: cfg.backoff_initial_ms,
            backoff_max_ms: cfg.backoff_max_ms,
            hosts_file: net_files.as_ref().map(|f| f.hosts.clone()),
            resolv_conf_file: net_files.as_ref().map(|f| f.resolv.clone()),
            containers,
            userns: ids,
            init_containers,
            hold: true,
            seccomp_program: self.sh.seccomp_program.clone(),
            no_seccomp: !self.sh.cfg.seccomp,
        };
        plan.save(&self.dir).map_err(|e| ProvisionError::internal(format!("writing the group plan: {e}")))?;
        let exe = cfg.exe.clone();
        let dir = self.dir.clone();
        self.sh.meter.run_starting(&self.rec.uid);
        // The supervisor gets ready (a process, cgroups, bundles) while the network is made;
        // it starts the containers when released, once both are done.
        let spawn = tokio::task::spawn_blocking(move || skiff_runtime::spawn_supervisor(&exe, &dir));
        let network = crate::network::provision(&self.sh, &self.rec, &self.dir, &netns_path);
        let (spawned, network) = tokio::join!(spawn, network);
        let spawned = spawned.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
        let addresses = match network {
            Ok(a) => a,
            Err((code, message)) => {
                if spawned.is_ok() {
                    self.stop_supervisor().await;
                }
                return Err(ProvisionError { code, message, container: None });
            }
        };
        spawned.map_err(|e| ProvisionError::internal(format!("starting the supervisor: {e}")))?;
        self.phases.mark(crate::phases::Phase::SandboxReady);
        // The containers start now; the record gets the group's address meanwhile.
        let release = async {
            let mut client = SupervisorClient::connect(&self.dir).await.map_err(|e| ProvisionError::internal(format!("connecting to the supervisor: {e}")))?;
            client.release().await.map_err(|e| ProvisionError::internal(format!("releasing the supervisor: {e}")))?;
            Ok::<_, ProvisionError>(client)
        };
        let record = async {
            if let Some(a) = &addresses {
                crate::network::record_addresses(&self.sh, &self.rec, a).await;
            }
        };
        let (client, ()) = tokio::join!(release, record);
        self.watch = Some(StatusFeed::new(client?.watch()));
        tracing::info!(group = %self.rec.name, uid = %self.rec.uid, generation = gen, elapsed_ms = t0.elapsed().as_secs_f64() * 1e3, "supervisor started");
        Ok(())
    }

    /// Mount a container's root filesystem (mounts and a helper fork: off the async workers).
    async fn mount_rootfs(&self, image: &ResolvedImage, container_dir: PathBuf, ids: Option<skiff_image::IdMap>) -> Result<PathBuf, String> {
        let (sh, image) = (Arc::clone(&self.sh), image.clone());
        tokio::task::spawn_blocking(move || sh.images.mount_rootfs_mapped(&image, &container_dir, ids).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())?
    }

    /// The cached image, or a pull that reports progress on the operation and events on the
    /// containers that use it.
    async fn ensure_image(&mut self, image: &str) -> Result<ResolvedImage, ProvisionError> {
        let images = &self.sh.images;
        if let Ok(Some(img)) = images.lookup(image) {
            return Ok(img);
        }
        let users: Vec<String> = self.containers_using(image);
        self.record_event(&users, "Pulling", &format!("pulling image \"{image}\""), false).await;
        let auth = self.auth_for(image);
        let latest: Arc<Mutex<Option<skiff_image::PullProgress>>> = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&latest);
        let progress = move |p: skiff_image::PullProgress| {
            *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        };
        let started = Instant::now();
        let pull = images.pull(image, &auth, &progress);
        tokio::pin!(pull);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let result = loop {
            tokio::select! {
                r = &mut pull => break r,
                _ = tick.tick() => {
                    let snapshot = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(p) = snapshot {
                        self.report_progress(image, &p).await;
                    }
                }
            }
        };
        match result {
            Ok(img) => {
                let snapshot = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(p) = snapshot {
                    self.report_progress(image, &p).await;
                }
                let secs = started.elapsed().as_secs_f64();
                self.sh.cfg.telemetry.pull_succeeded(snapshot_bytes(&latest));
                self.record_event(&users, "Pulled", &format!("Successfully pulled image \"{image}\" in {secs:.3}s"), false).await;
                Ok(img)
            }
            Err(e) => {
                self.sh.cfg.telemetry.pull_failed();
                let (code, message) = pull_error(image, &e);
                self.record_event(&users, "Failed", &message, true).await;
                Err(ProvisionError { code, message, container: None })
            }
        }
    }

    fn containers_using(&self, image: &str) -> Vec<String> {
        let p = &self.rec.spec.properties;
        let app = p.containers.iter().filter(|c| c.properties.image == image).map(|c| c.name.clone());
        let init = p.init_containers.iter().flatten().filter(|c| c.properties.image.as_deref() == Some(image)).map(|c| c.name.clone());
        app.chain(init).collect()
    }

    fn auth_for(&self, image: &str) -> RegistryAuth {
        let Ok(r) = ImageRef::parse(image) else { return RegistryAuth::Anonymous };
        let host = r.registry_host().to_ascii_lowercase();
        let docker_hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
        let matches = |server: &str| {
            let s = server.trim_end_matches('/').to_ascii_lowercase();
            s == host || (docker_hub.contains(&s.as_str()) && docker_hub.contains(&host.as_str()))
        };
        self.rec
            .spec
            .properties
            .image_registry_credentials
            .iter()
            .flatten()
            .find(|c| matches(&c.server))
            .map(|c| RegistryAuth::Basic { username: c.username.clone().unwrap_or_default(), password: c.password.clone().unwrap_or_default() })
            .unwrap_or(RegistryAuth::Anonymous)
    }

    async fn report_progress(&self, image: &str, p: &skiff_image::PullProgress) {
        let Some(op) = self.rec.pending_operation.clone() else { return };
        let entry = PullProgress { image: image.to_string(), total_bytes: p.total_bytes, done_bytes: p.done_bytes, layers_total: p.layers_total, layers_done: p.layers_done };
        let _ = update_operation(self.sh.store.as_ref(), &op, |o| {
            if o.status.is_terminal() {
                return false;
            }
            match o.pulls.iter_mut().find(|x| x.image == entry.image) {
                Some(x) if *x == entry => return false,
                Some(x) => *x = entry.clone(),
                None => o.pulls.push(entry.clone()),
            }
            true
        })
        .await;
    }

    async fn record_event(&self, containers: &[String], name: &str, message: &str, warning: bool) {
        for c in containers {
            self.sh.meter.event(&self.rec, Some(c), name, message, None, None, None).await;
        }
        let ts = now();
        let _ = update_group(self.sh.store.as_ref(), &self.rec.key(), |r| {
            for c in containers {
                let v = r.container_views.entry(c.clone()).or_default();
                push_event(v, name, message, warning, &ts);
            }
            true
        })
        .await;
    }

    async fn fail_provisioning(&mut self, err: ProvisionError) {
        tracing::warn!(group = %self.rec.name, code = %err.code, message = %err.message, "provisioning failed");
        self.sh.cfg.telemetry.reconcile_error("provision");
        self.phases = Default::default();
        self.sh.meter.event(&self.rec, err.container.as_deref(), "Failed", &format!("{}: {}", err.code, err.message), None, None, None).await;
        let gen = self.rec.generation;
        let ts = now();
        let op = self.rec.pending_operation.clone();
        let _ = update_group(self.sh.store.as_ref(), &self.rec.key(), |r| {
            if r.generation != gen {
                return false;
            }
            r.observed_generation = gen;
            r.provisioning_state = "Failed".to_string();
            r.group_view.state = Some("Failed".to_string());
            if let Some(c) = &err.container {
                let v = r.container_views.entry(c.clone()).or_default();
                push_event(v, "Failed", &err.message, true, &ts);
            } else {
                crate::view::push_event_to(&mut r.group_view.events, "Failed", &format!("{}: {}", err.code, err.message), true, &ts);
            }
            for name in r.spec.properties.containers.iter().map(|c| c.name.clone()).collect::<Vec<_>>() {
                let v = r.container_views.entry(name).or_default();
                if v.current_state.is_none() {
                    v.current_state = Some(ContainerState { state: Some("Waiting".to_string()), detail_status: Some(err.code.clone()), ..Default::default() });
                }
            }
            true
        })
        .await;
        if let Some(op) = op {
            let error = ArmError::new(400, err.code.clone(), err.message.clone());
            let _ = complete_operation(self.sh.store.as_ref(), &op, &ts, Some(error)).await;
        }
    }

    async fn on_status_event(&mut self, event: Option<Result<GroupStatus, ClientError>>) {
        match event {
            Some(Ok(status)) => self.apply_status(&status).await,
            Some(Err(e)) => {
                tracing::debug!(group = %self.rec.name, error = %e, "supervisor stream ended");
                self.watch = None;
                self.apply_status_file().await;
            }
            None => {
                self.watch = None;
                self.apply_status_file().await;
            }
        }
    }

    async fn apply_status_file(&mut self) {
        if let Ok(status) = skiff_runtime::read_status_file(&self.dir) {
            self.apply_status(&status).await;
        }
    }

    /// Write what the supervisor reports into the record; finish the pending operation once
    /// every container has started.
    async fn apply_status(&mut self, status: &GroupStatus) {
        let Some((Desired::Running, gen)) = self.applied else { return };
        if status.generation != gen {
            return;
        }
        let names = self.app_container_names();
        let mut finished_op = None;
        // Start phases: written once every container of the start in progress runs.
        let (started_at, ready_at) = (crate::phases::last_start(status, &names), jiff::Timestamp::now());
        let phases = self.phases.pending().then(|| self.phases.complete(started_at, ready_at)).flatten();
        let mut phases_written = false;
        let result = update_group(self.sh.store.as_ref(), &self.rec.key(), |r| {
            if r.generation != gen || r.desired != Desired::Running {
                return false;
            }
            let views: BTreeMap<String, ContainerInstanceView> = view::container_views(status, &r.container_views);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut state = view::group_state(r.restart_policy(), false, &names, &views).as_str().to_string();
            if status.init_failed {
                state = "Failed".to_string();
            }
            let mut changed = views != r.container_views || r.group_view.state.as_deref() != Some(state.as_str());
            r.container_views = views;
            r.group_view.state = Some(state);
            if r.observed_generation < gen && (view::all_started(&names, &r.container_views) || status.init_failed) {
                r.observed_generation = gen;
                r.provisioning_state = "Succeeded".to_string();
                finished_op = r.pending_operation.clone();
                changed = true;
            }
            if phases.is_some() && started_at.is_some() && view::all_started(&names, &r.container_views) {
                r.group_view.skiff_start_phases = phases.clone();
                phases_written = true;
                changed = true;
            }
            changed
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(group = %self.rec.name, error = %e, "recording the group status failed");
            self.sh.cfg.telemetry.reconcile_error("status");
        } else if phases_written {
            self.phases.finish(&self.sh.cfg.telemetry, started_at, ready_at);
        }
        if let Some(op) = finished_op {
            let _ = complete_operation(self.sh.store.as_ref(), &op, &now(), None).await;
        }
        // Usage and the event log follow the state the user sees (their records carry the
        // supervisor's own timestamps), so they are written after it, off the start's path.
        self.sh.meter.on_status(&self.rec, status).await;
    }
}

async fn next_status(watch: &mut Option<StatusFeed>) -> Option<Result<GroupStatus, ClientError>> {
    match watch {
        Some(feed) => feed.rx.recv().await,
        None => std::future::pending().await,
    }
}

#[derive(Debug)]
struct ProvisionError {
    code: String,
    message: String,
    container: Option<String>,
}

impl ProvisionError {
    fn internal(message: String) -> ProvisionError {
        ProvisionError { code: "ContainerGroupDeploymentFailed".to_string(), message, container: None }
    }

    fn container(name: &str, code: &str, message: String) -> ProvisionError {
        ProvisionError { code: code.to_string(), message: format!("container '{name}': {message}"), container: Some(name.to_string()) }
    }
}

/// ACI's error code and a user-facing message for a failed pull.
fn pull_error(image: &str, e: &ImageError) -> (String, String) {
    let code = match e {
        ImageError::Unauthorized { .. } | ImageError::NotFound { .. } => "InaccessibleImage",
        _ => "RegistryErrorResponse",
    };
    (code.to_string(), format!("Failed to pull image \"{image}\": {e}"))
}

/// Read a small text file of an image rootfs without following a symlink out of it.
fn read_rootfs_file(rootfs: &Path, rel: &str) -> Option<String> {
    let mut path = rootfs.to_path_buf();
    for part in rel.split('/') {
        path.push(part);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
    }
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 1024 * 1024 {
        return None;
    }
    std::fs::read_to_string(&path).ok()
}

/// Unmount every container's root filesystem, then the tmpfs holding their writable layers.
fn unmount_containers(dir: &Path) {
    let scratch = dir.join("containers");
    let Ok(entries) = std::fs::read_dir(&scratch) else { return };
    for entry in entries.flatten() {
        if let Err(e) = ImageStore::unmount_rootfs(&entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "unmounting a container rootfs failed");
        }
    }
    if let Err(e) = skiff_image::unmount_all_at(&scratch) {
        tracing::warn!(path = %scratch.display(), error = %e, "unmounting the writable layers' tmpfs failed");
    }
}

/// The tmpfs of `bytes` at `DIR/containers` that holds the group's writable layers (overlay
/// upper and work dirs): a size limit per group that the kernel enforces, off the data disk.
fn mount_writable_layers(dir: &Path, bytes: u64) -> std::io::Result<PathBuf> {
    let scratch = dir.join("containers");
    std::fs::create_dir_all(&scratch)?;
    if !skiff_image::is_mounted_at(&scratch)? {
        // 0711: the runtime resolves each rootfs beneath it as the group's unprivileged root.
        crate::volumes::mount_tmpfs(&scratch, &format!("mode=0711,size={}k", bytes.div_ceil(1024)), false)?;
    }
    Ok(scratch)
}

/// Mount points at or beneath `dir`, from the mount table.
fn mounts_beneath(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

/// Remove every host object of a group whose supervisor is gone: runtime containers,
/// cgroups, the network namespace, rootfs mounts and the group directory.
fn cleanup_host_objects(sh: &Shared, dir: &Path, uid: &str) {
    let plan = GroupPlan::load(dir).ok();
    if let Some(plan) = &plan {
        skiff_runtime::cleanup_group(plan);
    } else {
        let _ = skiff_runtime::remove_netns(&sh.cfg.netns_dir.join(uid));
    }
    unmount_containers(dir);
    crate::volumes::unmount_all(dir);
    // Never delete through a mount that is still there (a shared layer, a file share).
    let still_mounted = mounts_beneath(dir);
    if !still_mounted.is_empty() {
        tracing::error!(dir = %dir.display(), mounts = ?still_mounted, "not removing the group directory: mounts remain beneath it");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the group directory failed");
        }
    }
}

/// Group directories without a record are what a crash between "record removed" and
/// "host cleaned" (or a crash mid-create) leaves: stop and remove them.
pub(crate) async fn remove_orphans(sh: &Arc<Shared>, known: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(sh.cfg.data_dir.join("groups")) else { return };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().to_string();
        if known.contains(&uid) {
            continue;
        }
        let dir = entry.path();
        tracing::info!(uid, "removing an orphaned group left by an earlier run");
        if skiff_runtime::is_alive(&dir).await {
            if let Ok(mut client) = SupervisorClient::connect(&dir).await {
                let _ = client.stop(Duration::from_secs(1)).await;
            }
        }
        cleanup_host_objects(sh, &dir, &uid);
    }
    crate::network::sweep(sh, known).await;
}

/// Bytes a finished pull reported (telemetry).
fn snapshot_bytes(latest: &Mutex<Option<skiff_image::PullProgress>>) -> u64 {
    latest.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |p| p.done_bytes)
}
