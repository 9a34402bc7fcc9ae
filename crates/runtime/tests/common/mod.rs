//! Shared fixture: a busybox rootfs, a group directory, a unique cgroup parent,
//! and cleanup of everything on drop (even when a test fails).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_runtime::oci_runtime::OciRuntime;
use skiff_runtime::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

pub const EXE: &str = env!("CARGO_BIN_EXE_skiff-runtime-supervisor");

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub plan: GroupPlan,
    pub supervisor_pid: Option<u32>,
}

/// A rootfs with `/bin/busybox` and a symlink per applet.
pub fn busybox_rootfs(root: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
}

pub fn container(name: &str, rootfs: &Path, script: &str) -> ContainerPlan {
    ContainerPlan {
        name: name.into(),
        rootfs: rootfs.to_owned(),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: name.into(),
        cpu_shares: 512,
        cpu_quota_us: None,
        cpu_period_us: 100_000,
        memory_limit_bytes: 64 << 20,
        hostname_file: None,
        mounts: Vec::new(),
        liveness_probe: None,
        readiness_probe: None,
        stdin: false,
    }
}

impl Fixture {
    pub fn new(policy: RestartPolicy) -> Fixture {
        let report = preflight(&RuntimeConfig::default()).expect("preflight");
        assert!(report.runtime_version.contains("crun"));
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let group_id = format!("{:x}{n}", pid);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("group");
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = tmp.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let plan = GroupPlan {
            group_id: group_id.clone(),
            generation: 1,
            restart_policy: policy,
            cgroup_parent: format!("skiff-test-{pid}-{n}"),
            group_limits: GroupLimits {
                cpu_cores: 2,
                memory_bytes: 256 << 20,
                pids_max: Some(200),
            },
            netns_path: PathBuf::from(format!("/run/skiff-test/netns/{group_id}")),
            runtime: RuntimeConfig {
                binary: "/usr/bin/crun".into(),
                root: format!("/run/skiff-test/crun-{pid}").into(),
            },
            rlimit_nofile: 1 << 20,
            log_max_bytes: 1 << 20,
            backoff_initial_ms: 50,
            backoff_max_ms: 200,
            hosts_file: None,
            resolv_conf_file: None,
            containers: vec![],
            userns: None,
            hold: false,
            seccomp_program: None,
            no_seccomp: false,
            init_containers: vec![],
        };
        Fixture {
            tmp,
            dir,
            rootfs,
            plan,
            supervisor_pid: None,
        }
    }

    pub fn spawn(&mut self) -> u32 {
        self.plan.save(&self.dir).unwrap();
        let pid = spawn_supervisor(Path::new(EXE), &self.dir).expect("spawn supervisor");
        self.supervisor_pid = Some(pid);
        pid
    }

    pub fn runtime(&self) -> OciRuntime {
        OciRuntime::new(&self.plan.runtime)
    }

    /// Every `/sys/fs/cgroup/*/<parent>/<group>` directory that still exists.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let hs = skiff_runtime::cgroup::hierarchies().unwrap();
        hs.iter()
            .map(|h| {
                h.mount_point
                    .join(self.plan.group_cgroup().trim_start_matches('/'))
            })
            .filter(|p| p.exists())
            .collect()
    }
}

/// Whether a process is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(pid) = self.supervisor_pid {
            let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| c.contains("skiff-runtime-supervisor"))
                .unwrap_or(false);
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let rt = self.runtime();
        for c in &self.plan.containers {
            let _ = rt.delete_force(&self.plan.container_id(&c.name));
        }
        let hs = skiff_runtime::cgroup::hierarchies().unwrap();
        let _ = skiff_runtime::cgroup::remove_everywhere(&hs, &self.plan.cgroup_parent);
        let _ = remove_netns(&self.plan.netns_path);
        let _ = std::fs::remove_dir(self.plan.netns_path.parent().unwrap());
        let _ = std::fs::remove_dir("/run/skiff-test");
        if let Ok(mut d) = std::fs::read_dir(&self.plan.runtime.root) {
            if d.next().is_none() {
                let _ = std::fs::remove_dir(&self.plan.runtime.root);
            }
        }
    }
}

/// Watch the group until `pred` holds; panics after `timeout`.
pub async fn wait_for(
    dir: &Path,
    timeout: Duration,
    pred: impl Fn(&GroupStatus) -> bool,
) -> (GroupStatus, Duration) {
    let start = Instant::now();
    let client = SupervisorClient::connect(dir).await.expect("connect");
    let mut stream = Box::pin(client.watch());
    let mut last = None;
    let res = tokio::time::timeout(timeout, async {
        while let Some(st) = stream.next().await {
            let st = st.expect("watch");
            if pred(&st) {
                return Some(st);
            }
            last = Some(st);
        }
        None
    })
    .await;
    match res {
        Ok(Some(st)) => (st, start.elapsed()),
        _ => panic!("condition not met in {timeout:?}; last status: {:#?}", last),
    }
}

pub fn read_cg(controller: &str, rel: &str, file: &str) -> String {
    let hs = skiff_runtime::cgroup::hierarchies().unwrap();
    let m = skiff_runtime::cgroup::v1_mount(&hs, controller).unwrap();
    std::fs::read_to_string(m.join(rel.trim_start_matches('/')).join(file))
        .unwrap_or_else(|e| panic!("{controller} {rel}/{file}: {e}"))
        .trim()
        .to_owned()
}
