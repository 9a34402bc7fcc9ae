//! The node agent: watches the desired state of container groups in the store and drives
//! each one to it on this host, with one owner task per group (an actor: no state shared
//! between groups). It pulls images, mounts rootfs, hands a plan to the group's supervisor,
//! and writes what it observes (instance views, provisioning state, operation results) back
//! to the store. The host is the truth for actual state: on start the agent re-adopts live
//! supervisors and removes host objects no record owns, so a `kill -9` at any point converges.

mod git;
mod maintenance;
pub mod metering;
mod metrics;
mod network;
mod owner;
mod phases;
pub mod probes;
pub mod process;
mod streams;
pub mod volumes;
mod records;
pub mod userns;
pub mod view;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use skiff_image::{ImageStore, ImageStoreConfig};
use skiff_model::records::{GroupRecord, GROUPS_PREFIX};
use skiff_runtime::RuntimeConfig;
use skiff_store::{Store, WatchEvent};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// The `skiff` executable; supervisors run as `skiff supervisor --group-dir DIR`.
    pub exe: PathBuf,
    pub runtime: RuntimeConfig,
    /// Cgroup parent of every group (`/<parent>/<group uid>` in each hierarchy).
    pub cgroup_parent: String,
    /// Where group network namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    pub log_max_bytes: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub stop_grace: Duration,
    pub pids_max: Option<i64>,
    /// Apply the seccomp profile (`false`: the operator turned it off).
    pub seccomp: bool,
    /// Size of the tmpfs holding one group's writable layers.
    pub writable_layer_bytes: u64,
    /// Size of each emptyDir volume's tmpfs.
    pub empty_dir_bytes: u64,
    pub gc_interval: Duration,
    /// User-namespace id ranges per group; `None` runs containers as real host root.
    pub userns: Option<userns::UsernsConfig>,
    /// Opens the secrets the API sealed into the group records (`None`: records hold them as is).
    pub secrets: Option<Arc<skiff_secrets::SecretKey>>,
    /// Usage metering and event log settings.
    pub meter: metering::MeterConfig,
    /// Group networking (bridge, addresses, public IPs, DNS); `None`: each group gets a
    /// namespace with only `lo`.
    pub network: Option<skiff_net::NetConfig>,
    /// Metrics shared with the API (resource samples, pulls, start phases, errors).
    pub telemetry: Arc<skiff_telemetry::Telemetry>,
    /// How often the resource sampler reads the groups' cgroup and network counters.
    pub metrics_interval: Duration,
}

impl AgentConfig {
    pub fn with_defaults(data_dir: PathBuf, exe: PathBuf) -> AgentConfig {
        AgentConfig {
            data_dir,
            exe,
            runtime: RuntimeConfig::default(),
            cgroup_parent: "skiff".to_string(),
            netns_dir: PathBuf::from("/run/skiff/netns"),
            insecure_registries: Vec::new(),
            log_max_bytes: 16 * 1024 * 1024,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            stop_grace: Duration::from_secs(10),
            pids_max: Some(4096),
            seccomp: true,
            writable_layer_bytes: 1 << 30,
            empty_dir_bytes: 1 << 30,
            gc_interval: Duration::from_secs(600),
            userns: Some(userns::UsernsConfig::default()),
            secrets: None,
            meter: metering::MeterConfig::default(),
            network: None,
            telemetry: Arc::new(skiff_telemetry::Telemetry::default()),
            metrics_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("host preflight failed")]
    Preflight(#[source] skiff_runtime::HostError),
    #[error("cannot open the image store")]
    Images(#[source] skiff_image::ImageError),
    #[error("store error while {context}")]
    Store {
        context: &'static str,
        #[source]
        source: skiff_store::StoreError,
    },
    #[error("cannot set up group networking")]
    Network(#[source] skiff_net::NetError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub images: ImageStore,
    pub cfg: AgentConfig,
    pub net: Option<skiff_net::Network>,
    /// Owner task inboxes, by group uid.
    owners: Mutex<HashMap<String, mpsc::UnboundedSender<GroupRecord>>>,
    pub meter: Arc<metering::Meter>,
    /// The default seccomp profile compiled once for this daemon (crun only).
    pub seccomp_program: Option<PathBuf>,
}

impl Shared {
    pub fn group_dir(&self, uid: &str) -> PathBuf {
        self.cfg.data_dir.join("groups").join(uid)
    }

    fn dispatch(self: &Arc<Self>, mut rec: GroupRecord) {
        // Owners work on the opened document; they never write it back (updates go through
        // `update_group` on the stored record), so the clear values stay in memory.
        if let Some(k) = &self.cfg.secrets {
            match skiff_secrets::open_group(k, &rec.spec) {
                Ok(spec) => rec.spec = spec,
                Err(e) => tracing::error!(group = %rec.name, error = %e, "cannot open the group's secrets"),
            }
        }
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = owners.get(&rec.uid) {
            if tx.send(rec.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        owners.insert(rec.uid.clone(), tx);
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let uid = rec.uid.clone();
            owner::Owner::new(Arc::clone(&shared), rec).run(rx).await;
            let mut owners = shared.owners.lock().unwrap_or_else(|p| p.into_inner());
            if owners.get(&uid).is_some_and(|tx| tx.is_closed()) {
                owners.remove(&uid);
            }
        });
    }
}

/// Compile the default seccomp profile into `DATA/seccomp/default.bpf` for bundles to hand to
/// crun pre-compiled; `None` (the profile then goes to the runtime as it is) for a runtime
/// that does not read crun's annotation, or if compiling fails.
fn compile_seccomp(data_dir: &Path, runtime_version: &str) -> Option<PathBuf> {
    if !runtime_version.starts_with("crun") {
        return None;
    }
    let path = data_dir.join("seccomp").join("default.bpf");
    match skiff_runtime::seccomp::write_program(&path, &skiff_runtime::bundle::default_seccomp()) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "compiling the seccomp profile failed; crun will compile it on every start");
            None
        }
    }
}

/// The running agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
}

impl Agent {
    /// Check the host, open the image cache, adopt or clean up what previous runs left, and
    /// start following the store.
    pub async fn start(store: Arc<dyn Store>, cfg: AgentConfig) -> Result<Agent, AgentError> {
        let report = skiff_runtime::preflight(&cfg.runtime).map_err(AgentError::Preflight)?;
        tracing::info!(?report, "host preflight passed");
        for dir in [cfg.data_dir.join("groups"), cfg.netns_dir.clone(), cfg.runtime.root.clone()] {
            std::fs::create_dir_all(&dir).map_err(|source| AgentError::Io { context: format!("creating {}", dir.display()), source })?;
        }
        // Plans and bundles hold the containers' environment, secure values included (the
        // runtime needs them in clear): nobody but root may list `groups/`, and those files are
        // written 0600. Search permission stays, because a container's runtime resolves its
        // rootfs beneath it as the group's unprivileged root.
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = cfg.data_dir.join("groups");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(|source| AgentError::Io { context: format!("restricting {}", dir.display()), source })?;
        }
        let images = ImageStore::open(ImageStoreConfig {
            root: cfg.data_dir.join("images"),
            insecure_registries: cfg.insecure_registries.clone(),
            max_concurrent_layers: 4,
        })
        .map_err(AgentError::Images)?;
        let meter = Arc::new(metering::Meter::new(Arc::clone(&store), cfg.meter.clone()));
        let net = match cfg.network.clone() {
            Some(nc) => Some(skiff_net::Network::start(Arc::clone(&store), nc).await.map_err(AgentError::Network)?),
            None => None,
        };
        let seccomp_program = compile_seccomp(&cfg.data_dir, &report.runtime_version);
        let shared = Arc::new(Shared { store, images, cfg, net, owners: Mutex::new(HashMap::new()), meter, seccomp_program });

        let (groups, revision) = shared.store.list(GROUPS_PREFIX, None, None).await.map_err(|source| AgentError::Store { context: "listing groups", source })?;
        let mut known = HashSet::new();
        for kv in groups {
            match serde_json::from_slice::<GroupRecord>(&kv.value) {
                Ok(rec) => {
                    known.insert(rec.uid.clone());
                    shared.dispatch(rec);
                }
                Err(e) => tracing::error!(key = kv.key, error = %e, "skipping an unreadable group record"),
            }
        }
        owner::remove_orphans(&shared, &known).await;
        if let Err(e) = userns::release(shared.store.as_ref(), |owner| !known.contains(owner)).await {
            tracing::warn!(error = %e, "freeing user id ranges of removed groups failed");
        }
        shared.meter.close_orphans(&known).await;
        tokio::spawn(metering::flush_loop(Arc::clone(&shared.meter)));
        tokio::spawn(watch_loop(Arc::clone(&shared), revision));
        tokio::spawn(network::follow_subnets(Arc::clone(&shared)));
        tokio::spawn(gc_loop(Arc::clone(&shared)));
        tokio::spawn(metrics::sample_loop(Arc::clone(&shared)));
        tokio::spawn(maintenance::run(Arc::clone(&shared.store)));
        Ok(Agent { shared })
    }

    /// The container's log, read from the files its supervisor writes.
    pub fn logs(&self, rec: &GroupRecord, container: &str, tail: Option<usize>, timestamps: bool) -> std::io::Result<String> {
        let dir = self.shared.group_dir(&rec.uid);
        match skiff_runtime::logs::read(&dir, container, tail, timestamps) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            other => other,
        }
    }

    pub fn cached_images(&self) -> Vec<String> {
        self.shared.images.list_cached().map(|v| v.into_iter().map(|i| i.reference).collect()).unwrap_or_default()
    }

    pub fn group_dir(&self, uid: &str) -> PathBuf {
        self.shared.group_dir(uid)
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.cfg.data_dir
    }
}

async fn watch_loop(shared: Arc<Shared>, mut revision: skiff_store::Revision) {
    loop {
        let mut events = shared.store.watch(GROUPS_PREFIX, revision);
        while let Some(ev) = events.next().await {
            match ev {
                Ok(WatchEvent::Put(kv)) => {
                    revision = revision.max(kv.mod_revision);
                    match serde_json::from_slice::<GroupRecord>(&kv.value) {
                        Ok(rec) => shared.dispatch(rec),
                        Err(e) => tracing::error!(key = kv.key, error = %e, "unreadable group record"),
                    }
                }
                Ok(WatchEvent::Delete { mod_revision, .. }) => revision = revision.max(mod_revision),
                Err(e) => {
                    tracing::warn!(error = %e, "store watch failed; re-listing");
                    break;
                }
            }
        }
        // Re-list so nothing between the broken watch and the new one is missed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match shared.store.list(GROUPS_PREFIX, None, None).await {
            Ok((groups, rev)) => {
                for kv in groups {
                    if let Ok(rec) = serde_json::from_slice::<GroupRecord>(&kv.value) {
                        shared.dispatch(rec);
                    }
                }
                revision = rev;
            }
            Err(e) => tracing::error!(error = %e, "re-listing groups failed"),
        }
    }
}

/// Remove cached images no group refers to.
async fn gc_loop(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.cfg.gc_interval).await;
        let Ok((groups, _)) = shared.store.list(GROUPS_PREFIX, None, None).await else { continue };
        let mut keep = HashSet::new();
        let mut complete = true;
        'groups: for kv in groups {
            let Ok(rec) = serde_json::from_slice::<GroupRecord>(&kv.value) else { continue };
            for image in owner::images_of(&rec) {
                match shared.images.lookup(&image) {
                    Ok(Some(img)) => {
                        keep.insert(img.manifest_digest);
                    }
                    // A group whose image is not cached yet is being provisioned; its blobs
                    // may be in flight, so this round collects nothing.
                    Ok(None) | Err(_) => {
                        complete = false;
                        break 'groups;
                    }
                }
            }
        }
        if !complete {
            continue;
        }
        let sh = Arc::clone(&shared);
        match tokio::task::spawn_blocking(move || sh.images.gc(&keep)).await {
            Ok(Ok(report)) => tracing::info!(?report, "image garbage collection"),
            Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "image garbage collection panicked"),
        }
    }
}
