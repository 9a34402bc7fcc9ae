//! The plan of a container group: pure data, built by the daemon, serialized to
//! `DIR/plan.json` and read by the supervisor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the supervisor needs to run one container group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupPlan {
    /// Short hex id, used in every host-side name (cgroups, crun ids, netns).
    pub group_id: String,
    pub generation: u64,
    pub restart_policy: RestartPolicy,
    /// Parent cgroup (relative to each hierarchy root), e.g. `skiff`.
    pub cgroup_parent: String,
    pub group_limits: GroupLimits,
    /// Where the group's network namespace is bind-mounted, e.g. `/run/skiff/netns/<group_id>`.
    pub netns_path: PathBuf,
    pub runtime: RuntimeConfig,
    /// `RLIMIT_NOFILE` for the containers; clamped to the supervisor's hard limit when rendered.
    pub rlimit_nofile: u64,
    /// Size cap of one container log file before it is rotated to `.log.1`.
    pub log_max_bytes: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Host file bind-mounted read-only at `/etc/hosts` in every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<PathBuf>,
    /// Host file bind-mounted read-only at `/etc/resolv.conf` in every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf_file: Option<PathBuf>,
    pub containers: Vec<ContainerPlan>,
    /// Run to completion one after the other, before `containers` start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerPlan>,
    /// The group's user-namespace id range; `None` runs containers without a user namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<IdRange>,
    /// Start no container until the agent sends [`Request::Release`](crate::protocol::Request):
    /// the supervisor gets ready (cgroups, bundles, control socket) while the agent finishes
    /// the group's network, and the containers start only once it is in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
    /// The default seccomp profile compiled to BPF ([`crate::seccomp`]); bundles hand it to
    /// the runtime pre-compiled. Only for crun (the one runtime that reads it); `None`, or a
    /// file that cannot be read, keeps the profile itself in `config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_program: Option<PathBuf>,
    /// No seccomp profile at all (the operator's `--seccomp false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_seccomp: bool,
}

/// Container ids `0..size` are host ids `host_base..host_base + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    pub host_base: u32,
    pub size: u32,
}

/// Hard limits of the whole group (written to the group cgroup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLimits {
    /// Whole cores (the daemon rounds the sum of requests up).
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    #[serde(default)]
    pub pids_max: Option<i64>,
}

/// The OCI runtime binary and its state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Path of the OCI runtime (crun).
    pub binary: PathBuf,
    /// `--root` of the runtime, e.g. `/run/skiff/crun`.
    pub root: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            binary: PathBuf::from("/usr/bin/crun"),
            root: PathBuf::from("/run/skiff/crun"),
        }
    }
}

/// One container of the group; its rootfs is already mounted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPlan {
    pub name: String,
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub cpu_shares: u64,
    #[serde(default)]
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: u64,
    pub memory_limit_bytes: u64,
    /// Host file bind-mounted read-only at `/etc/hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_file: Option<PathBuf>,
    /// Volumes, prepared on the host by the daemon, bind-mounted in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<crate::probe::ProbePlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<crate::probe::ProbePlan>,
    /// Give the container a stdin pipe that attach sessions write to (else /dev/null).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
}

/// One volume mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPlan {
    /// Prepared host directory (emptyDir, secret tmpfs, gitRepo clone, file share).
    pub source: PathBuf,
    /// Absolute path in the container (validated by the API).
    pub destination: String,
    /// Mounted read-only (enforced by the kernel, not by convention).
    pub read_only: bool,
}

/// ACI restart policy of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl GroupPlan {
    /// Name of the OCI container (`crun` id) of `container`.
    pub fn container_id(&self, container: &str) -> String {
        format!("skiff-{}-{}", self.group_id, container)
    }

    /// Cgroup path of the group, relative to each hierarchy root (`/<parent>/<group_id>`).
    pub fn group_cgroup(&self) -> String {
        format!(
            "/{}/{}",
            self.cgroup_parent.trim_matches('/'),
            self.group_id
        )
    }

    /// Cgroup path of one container (`/<parent>/<group_id>/<container>`).
    pub fn container_cgroup(&self, container: &str) -> String {
        format!("{}/{}", self.group_cgroup(), container)
    }

    /// Read `DIR/plan.json`.
    pub fn load(dir: &Path) -> std::io::Result<GroupPlan> {
        let raw = std::fs::read(dir.join(PLAN_FILE))?;
        serde_json::from_slice(&raw).map_err(std::io::Error::other)
    }

    /// Write `DIR/plan.json` atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let raw = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::util::write_atomic(&dir.join(PLAN_FILE), &raw)
    }
}

/// File names inside the group directory.
pub const PLAN_FILE: &str = "plan.json";
pub const STATUS_FILE: &str = "status.json";
pub const CTL_SOCKET: &str = "ctl.sock";
pub const SUPERVISOR_LOG: &str = "supervisor.log";
