//! Host preflight: the OCI runtime works and the cgroup layout is one crun supports.
//!
//! ## Why v1 hierarchies get mounted
//! This host runs "hybrid" cgroups: v1 controllers under `/sys/fs/cgroup/<ctrl>`
//! and cgroup2 at `/sys/fs/cgroup/unified`. A controller that is not bound to
//! any v1 hierarchy stays available on cgroup2 (here: `hugetlb`), and crun 1.8
//! refuses such a layout ("cgroups in hybrid mode not supported, drop all
//! controllers from cgroupv2"). Mounting a v1 hierarchy for each such controller
//! moves it to v1; cgroup2 is then a pure tracking hierarchy with no
//! controllers, which is the layout crun (and runc) support. The change is
//! idempotent and affects nothing else: no v2 cgroup used those controllers.

use std::path::{Path, PathBuf};

use crate::cgroup;
use crate::oci_runtime::{OciError, OciRuntime};
use crate::plan::RuntimeConfig;

/// What preflight found (and changed).
#[derive(Debug, Clone, PartialEq)]
pub struct HostReport {
    /// First line of `<runtime> --version`, e.g. `crun version 1.8.1`.
    pub runtime_version: String,
    /// Controllers for which preflight mounted a v1 hierarchy now.
    pub mounted_controllers: Vec<String>,
    /// Mount point of cgroup2, if any.
    pub cgroup2_mount: Option<PathBuf>,
    /// Hard `RLIMIT_NOFILE` of this process: the ceiling for `GroupPlan::rlimit_nofile`.
    pub nofile_hard: u64,
    /// Hard `RLIMIT_NPROC` of this process.
    pub nproc_hard: u64,
    /// Whether memory+swap limits are available (`memory.memsw.*`).
    pub memsw: bool,
}

/// Errors of [`preflight`].
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// the OCI runtime does not work
    #[error("the OCI runtime does not work")]
    Runtime(#[from] OciError),
    /// cannot inspect or fix the cgroup layout
    #[error("cannot inspect or fix the cgroup layout")]
    Cgroup(#[from] std::io::Error),
    /// cgroup2 still offers controllers; crun refuses this hybrid layout
    #[error("cgroup2 at {mount} still offers controllers {controllers:?} that are not mounted as v1 hierarchies; crun refuses this hybrid layout (mount each with `mount -t cgroup -o <ctrl> cgroup /sys/fs/cgroup/<ctrl>`)")]
    Hybrid {
        mount: PathBuf,
        controllers: Vec<String>,
    },
}

/// Check the runtime and fix the hybrid cgroup layout (see the module docs).
/// Also creates the runtime's `--root`. Call once at daemon start.
pub fn preflight(runtime: &RuntimeConfig) -> Result<HostReport, HostError> {
    let version = OciRuntime::new(runtime).version()?;
    std::fs::create_dir_all(&runtime.root)?;
    let hs = cgroup::hierarchies()?;
    let v2 = hs.iter().find(|h| h.v2).map(|h| h.mount_point.clone());
    let mut mounted = Vec::new();
    if let Some(v2) = &v2 {
        for ctrl in v2_controllers(v2)? {
            if cgroup::v1_mount(&hs, &ctrl).is_some() {
                continue;
            }
            let target = Path::new("/sys/fs/cgroup").join(&ctrl);
            std::fs::create_dir_all(&target)?;
            nix::mount::mount(
                Some("cgroup"),
                &target,
                Some("cgroup"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some(ctrl.as_str()),
            )
            .map_err(|e| {
                std::io::Error::new(
                    std::io::Error::from(e).kind(),
                    format!("mount v1 {ctrl} at {}: {e}", target.display()),
                )
            })?;
            mounted.push(ctrl);
        }
        let left = v2_controllers(v2)?;
        if !left.is_empty() {
            return Err(HostError::Hybrid {
                mount: v2.clone(),
                controllers: left,
            });
        }
    }
    Ok(HostReport {
        runtime_version: version,
        mounted_controllers: mounted,
        cgroup2_mount: v2,
        nofile_hard: crate::sys::nofile_hard_limit(),
        nproc_hard: crate::sys::nproc_hard_limit(),
        memsw: cgroup::v1_mount(&cgroup::hierarchies()?, "memory")
            .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists()),
    })
}

fn v2_controllers(mount: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_to_string(mount.join("cgroup.controllers")) {
        Ok(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e),
    }
}
