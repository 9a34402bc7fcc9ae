//! cgroupfs (v1 + the cgroup2 tracking hierarchy): the only module that writes
//! cgroup files. The group cgroup holds the group's hard limits; crun creates the
//! container cgroups below it from each bundle's `linux.resources`.

use std::io;
use std::path::{Path, PathBuf};

use crate::plan::GroupPlan;

/// Default CFS period (µs) used for the group quota.
pub const CFS_PERIOD_US: u64 = 100_000;

const KNOWN_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
];

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// v1 controllers (and `name=...`) bound to it; empty for cgroup2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// Parse `/proc/self/mountinfo` content into cgroup hierarchies.
pub fn parse_mountinfo(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        let fstype = post.next().unwrap_or("");
        let _source = post.next();
        let opts = post.next().unwrap_or("");
        let Some(mp) = pre.split_whitespace().nth(4) else {
            continue;
        };
        match fstype {
            "cgroup" => out.push(Hierarchy {
                mount_point: PathBuf::from(mp),
                controllers: opts
                    .split(',')
                    .filter(|o| KNOWN_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .map(str::to_owned)
                    .collect(),
                v2: false,
            }),
            "cgroup2" => out.push(Hierarchy {
                mount_point: PathBuf::from(mp),
                controllers: vec![],
                v2: true,
            }),
            _ => {}
        }
    }
    out
}

/// The cgroup hierarchies mounted in this mount namespace.
pub fn hierarchies() -> io::Result<Vec<Hierarchy>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Mount point of the v1 hierarchy holding `controller`.
pub fn v1_mount(hs: &[Hierarchy], controller: &str) -> Option<PathBuf> {
    hs.iter()
        .find(|h| !h.v2 && h.controllers.iter().any(|c| c == controller))
        .map(|h| h.mount_point.clone())
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

/// Create `rel` (e.g. `/skiff/abc`) in every hierarchy. In cpuset, every new
/// level inherits `cpuset.cpus`/`cpuset.mems` from its parent (v1 leaves them
/// empty, and no task could join).
pub fn create_everywhere(hs: &[Hierarchy], rel: &str) -> io::Result<()> {
    for h in hs {
        let mut cur = h.mount_point.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            let parent = cur.clone();
            cur.push(part);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("mkdir {}: {e}", cur.display()),
                    ))
                }
            }
            if h.controllers.iter().any(|c| c == "cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let mine = std::fs::read_to_string(cur.join(f)).unwrap_or_default();
                    if mine.trim().is_empty() {
                        let theirs = std::fs::read_to_string(parent.join(f))?;
                        write(&cur.join(f), theirs.trim())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Create the group cgroup `/<parent>/<group_id>` in every hierarchy and write
/// the group's hard limits: CPU quota = cores × period, memory (+memsw), pids.
pub fn setup_group(hs: &[Hierarchy], plan: &GroupPlan) -> io::Result<()> {
    let rel = plan.group_cgroup();
    create_everywhere(hs, &rel)?;
    let rel = rel.trim_start_matches('/');
    if let Some(cpu) = v1_mount(hs, "cpu") {
        let d = cpu.join(rel);
        write(&d.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
        let quota = u64::from(plan.group_limits.cpu_cores.max(1)) * CFS_PERIOD_US;
        write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
    }
    if let Some(mem) = v1_mount(hs, "memory") {
        let d = mem.join(rel);
        let limit = plan.group_limits.memory_bytes.to_string();
        // memsw must stay ≥ the memory limit: order the writes accordingly.
        let memsw = d.join("memory.memsw.limit_in_bytes");
        let current: u64 = std::fs::read_to_string(d.join("memory.limit_in_bytes"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u64::MAX);
        if memsw.exists() && plan.group_limits.memory_bytes < current {
            write(&d.join("memory.limit_in_bytes"), &limit)?;
            write(&memsw, &limit)?;
        } else {
            if memsw.exists() {
                write(&memsw, &limit)?;
            }
            write(&d.join("memory.limit_in_bytes"), &limit)?;
        }
    }
    if let (Some(pids), Some(max)) = (v1_mount(hs, "pids"), plan.group_limits.pids_max) {
        write(&pids.join(rel).join("pids.max"), &max.to_string())?;
    }
    Ok(())
}

/// Remove `rel` and all cgroups below it in every hierarchy (deepest first).
/// Missing directories are fine; a busy cgroup is retried briefly.
pub fn remove_everywhere(hs: &[Hierarchy], rel: &str) -> io::Result<()> {
    let mut first_err = None;
    for h in hs {
        let dir = h.mount_point.join(rel.trim_start_matches('/'));
        if let Err(e) = remove_tree(&dir) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&e.path())?;
        }
    }
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("rmdir {}: {e}", dir.display()),
                ))
            }
        }
    }
}

/// Remove the group cgroup (with any container cgroups left below it).
pub fn remove_group(hs: &[Hierarchy], plan: &GroupPlan) -> io::Result<()> {
    remove_everywhere(hs, &plan.group_cgroup())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let hs = parse_mountinfo(mi);
        assert_eq!(hs.len(), 4);
        assert_eq!(hs[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(hs[2].controllers, ["name=systemd"]);
        assert!(hs[3].v2);
        assert_eq!(
            v1_mount(&hs, "cpuacct").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(v1_mount(&hs, "memory"), None);
    }
}

/// Whether the kernel OOM-killed a process of cgroup `rel` (v1 `memory.oom_control`'s
/// `oom_kill` counter, or failing that a memory limit that was hit).
pub fn oom_killed(hs: &[Hierarchy], rel: &str) -> bool {
    let Some(mem) = v1_mount(hs, "memory") else { return false };
    let d = mem.join(rel.trim_start_matches('/'));
    if let Ok(text) = std::fs::read_to_string(d.join("memory.oom_control")) {
        if let Some(n) = oom_kill_count(&text) {
            return n > 0;
        }
    }
    std::fs::read_to_string(d.join("memory.failcnt")).ok().and_then(|s| s.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
}

/// The `oom_kill N` line of `memory.oom_control` (kernels ≥ 4.13).
pub fn oom_kill_count(oom_control: &str) -> Option<u64> {
    oom_control.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod oom_tests {
    #[test]
    fn parses_oom_kill_counter() {
        assert_eq!(super::oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), Some(2));
        assert_eq!(super::oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None);
    }
}
