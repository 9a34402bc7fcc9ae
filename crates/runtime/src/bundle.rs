//! Rendering of OCI runtime bundles (`config.json`). Pure: no I/O except
//! [`write_bundle`].

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::plan::{ContainerPlan, GroupPlan};

/// Host facts the renderer needs (kept out of the plan so rendering stays pure).
#[derive(Debug, Clone, PartialEq)]
pub struct BundleContext {
    /// The caller's hard `RLIMIT_NOFILE`; OCI rlimits above it fail with EPERM.
    pub nofile_hard: u64,
    /// Whether `memory.memsw.*` exists (then swap is limited to the memory limit).
    pub memsw: bool,
    /// The plan's compiled seccomp program, base64 (`run.oci.seccomp_bpf_data`).
    pub seccomp_program: Option<String>,
}

impl BundleContext {
    /// Facts of the current host/process, and the plan's compiled seccomp program.
    pub fn detect(plan: &GroupPlan) -> BundleContext {
        use base64::Engine as _;
        let program = plan.seccomp_program.as_ref().and_then(|p| std::fs::read(p).ok()).filter(|p| !p.is_empty() && p.len() % 8 == 0);
        BundleContext {
            nofile_hard: crate::sys::nofile_hard_limit(),
            memsw: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
            seccomp_program: program.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        }
    }
}

/// The conventional container-engine default capability set, without `CAP_NET_RAW` (as
/// podman ships it): raw and packet sockets let a tenant spoof traffic on the group's link.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// crun's annotation for a pre-compiled seccomp program (base64 of the `sock_filter` array).
pub const SECCOMP_PROGRAM_ANNOTATION: &str = "run.oci.seccomp_bpf_data";

/// The default seccomp profile, kept as data (`seccomp/default.json`, OCI `linux.seccomp`
/// format): an allow-list, so a syscall added to the kernel later is refused until reviewed.
const DEFAULT_SECCOMP: &str = include_str!("../seccomp/default.json");

/// The profile as it goes into `config.json` (documentation keys starting with `_` removed).
pub fn default_seccomp() -> Value {
    let mut v: Value = serde_json::from_str(DEFAULT_SECCOMP).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.retain(|k, _| !k.starts_with('_'));
    }
    v
}

/// Nofile limit actually given to a container: the plan's value, never above the hard limit.
pub fn clamp_nofile(requested: u64, hard: u64) -> u64 {
    requested.min(hard).max(1)
}

/// Render the `config.json` of `container`.
pub fn render_config(plan: &GroupPlan, container: &ContainerPlan, ctx: &BundleContext) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let nofile = clamp_nofile(plan.rlimit_nofile, ctx.nofile_hard);

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        sys_mount(plan),
        cgroup_mount(),
    ];
    let binds: [(&str, Option<&PathBuf>); 3] = [
        ("/etc/hosts", plan.hosts_file.as_ref()),
        ("/etc/resolv.conf", plan.resolv_conf_file.as_ref()),
        ("/etc/hostname", container.hostname_file.as_ref()),
    ];
    for (dest, src) in binds {
        if let Some(src) = src {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src,
                               "options": ["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"]}));
        }
    }

    for m in &container.mounts {
        let rw = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source,
                           "options": ["rbind", "rprivate", rw, "nosuid", "nodev"]}));
    }

    let mut memory = json!({"limit": container.memory_limit_bytes});
    if ctx.memsw {
        memory["swap"] = json!(container.memory_limit_bytes);
    }
    let mut cpu = json!({"shares": container.cpu_shares, "period": container.cpu_period_us});
    if let Some(q) = container.cpu_quota_us {
        cpu["quota"] = json!(q);
    }

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    if plan.userns.is_some() {
        namespaces.push(json!({"type": "user"}));
    }
    namespaces.push(json!({"type": "network", "path": plan.netns_path}));

    let mut config = json!({
        "ociVersion": "1.0.2",
        "root": {"path": container.rootfs, "readonly": false},
        "hostname": container.hostname,
        "process": {
            "terminal": false,
            "user": {"uid": container.uid, "gid": container.gid, "additionalGids": container.additional_gids},
            "args": container.args,
            "env": container.env,
            "cwd": if container.cwd.is_empty() { "/" } else { container.cwd.as_str() },
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": plan.container_cgroup(&container.name),
            "resources": {
                "devices": default_device_rules(),
                "memory": memory,
                "cpu": cpu
            },
            "maskedPaths": masked_paths(plan),
            "readonlyPaths": READONLY_PATHS,
            "seccomp": default_seccomp()
        }
    });
    if plan.no_seccomp {
        if let Some(linux) = config["linux"].as_object_mut() {
            linux.remove("seccomp");
        }
    } else if let Some(program) = &ctx.seccomp_program {
        // The same profile, compiled once by the daemon: crun loads it instead of compiling
        // `linux.seccomp` again on every start.
        if let Some(linux) = config["linux"].as_object_mut() {
            linux.remove("seccomp");
        }
        config["annotations"] = Value::Object([(SECCOMP_PROGRAM_ANNOTATION.to_string(), Value::from(program.as_str()))].into_iter().collect());
    }
    if let Some(ids) = plan.userns {
        let map = json!([{"containerID": 0, "hostID": ids.host_base, "size": ids.size}]);
        config["linux"]["uidMappings"] = map.clone();
        config["linux"]["gidMappings"] = map;
    }
    config
}

/// `/sys`, read-only. A container in its own user namespace cannot mount sysfs for a network
/// namespace that namespace does not own, so it gets the host's sysfs bound read-only instead,
/// minus what would show other groups: the host's cgroup trees (every group's cgroups, pids and
/// usage; replaced by the container's own cgroups, see [`cgroup_mount`]) and the host's
/// network devices (every group's veth, named after its uid; masked, see [`HOST_SYSFS_MASKS`]).
fn sys_mount(plan: &GroupPlan) -> Value {
    if plan.userns.is_some() {
        json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "ro", "nosuid", "noexec", "nodev", "rprivate"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]})
    }
}

/// `/sys/fs/cgroup` as the container's own cgroups only (crun binds each controller's
/// directory of the container, read-only), so programs that size themselves from their
/// cgroup limits (JVMs, Go) still find them.
fn cgroup_mount() -> Value {
    json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
}

/// Masked in the host's sysfs bound into user-namespaced containers: the network devices of
/// the host's namespace, which include every group's veth.
pub const HOST_SYSFS_MASKS: &[&str] = &["/sys/class/net", "/sys/devices/virtual/net"];

fn masked_paths(plan: &GroupPlan) -> Vec<&'static str> {
    let host_sysfs = plan.userns.is_some().then_some(HOST_SYSFS_MASKS).unwrap_or_default();
    MASKED_PATHS.iter().chain(host_sysfs).copied().collect()
}

/// Device cgroup rules: deny everything, then allow the default devices
/// (null, zero, full, tty, random, urandom, ptmx, pts, console, tun) and mknod.
fn default_device_rules() -> Value {
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    for (kind, major, minor, access) in [
        ("c", Some(1), Some(3), "rwm"),    // null
        ("c", Some(1), Some(5), "rwm"),    // zero
        ("c", Some(1), Some(7), "rwm"),    // full
        ("c", Some(5), Some(0), "rwm"),    // tty
        ("c", Some(1), Some(8), "rwm"),    // random
        ("c", Some(1), Some(9), "rwm"),    // urandom
        ("c", Some(5), Some(1), "rwm"),    // console
        ("c", Some(5), Some(2), "rwm"),    // ptmx
        ("c", Some(136), None, "rwm"),     // pts
        ("c", Some(10), Some(200), "rwm"), // tun
        ("c", None, None, "m"),
        ("b", None, None, "m"),
    ] {
        let mut r = json!({"allow": true, "type": kind, "access": access});
        if let Some(m) = major {
            r["major"] = json!(m);
        }
        if let Some(m) = minor {
            r["minor"] = json!(m);
        }
        rules.push(r);
    }
    Value::Array(rules)
}

/// Directory of a container's bundle inside the group directory.
pub fn bundle_dir(group_dir: &Path, container: &str) -> PathBuf {
    group_dir.join("bundles").join(container)
}

/// Render and write `DIR/bundles/<name>/config.json`; returns the bundle directory.
pub fn write_bundle(
    group_dir: &Path,
    plan: &GroupPlan,
    container: &ContainerPlan,
    ctx: &BundleContext,
) -> std::io::Result<PathBuf> {
    let dir = bundle_dir(group_dir, &container.name);
    std::fs::create_dir_all(&dir)?;
    let cfg = render_config(plan, container, ctx);
    let raw = serde_json::to_vec_pretty(&cfg).map_err(std::io::Error::other)?;
    crate::util::write_atomic(&dir.join("config.json"), &raw)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::*;

    pub(crate) fn sample_plan() -> GroupPlan {
        GroupPlan {
            group_id: "abc123".into(),
            generation: 1,
            restart_policy: RestartPolicy::Always,
            cgroup_parent: "skiff".into(),
            group_limits: GroupLimits {
                cpu_cores: 2,
                memory_bytes: 1 << 30,
                pids_max: Some(512),
            },
            netns_path: "/run/skiff/netns/abc123".into(),
            runtime: RuntimeConfig::default(),
            rlimit_nofile: 1_048_576,
            log_max_bytes: 1 << 20,
            backoff_initial_ms: 10_000,
            backoff_max_ms: 300_000,
            hosts_file: Some("/g/hosts".into()),
            resolv_conf_file: None,
            containers: vec![ContainerPlan {
                name: "web".into(),
                rootfs: "/g/rootfs/web".into(),
                args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/bin".into()],
                cwd: String::new(),
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
                hostname: "web".into(),
                cpu_shares: 512,
                cpu_quota_us: Some(50_000),
                cpu_period_us: 100_000,
                memory_limit_bytes: 256 << 20,
                hostname_file: None,
                mounts: Vec::new(),
                liveness_probe: None,
                readiness_probe: None,
                stdin: false,
            }],
            userns: None,
            hold: false,
            seccomp_program: None,
            no_seccomp: false,
            init_containers: Vec::new(),
        }
    }

    #[test]
    fn a_user_namespace_maps_the_group_range_and_binds_sys() {
        let mut plan = sample_plan();
        let ctx = BundleContext { nofile_hard: 20_000, memsw: true, seccomp_program: None };
        let c = render_config(&plan, &plan.containers[0], &ctx);
        assert!(c["linux"].get("uidMappings").is_none());
        assert!(c["mounts"].as_array().unwrap().iter().any(|m| m["destination"] == "/sys" && m["type"] == "sysfs"));
        plan.userns = Some(crate::plan::IdRange { host_base: 1_000_000, size: 65536 });
        let c = render_config(&plan, &plan.containers[0], &ctx);
        let ns: Vec<&str> = c["linux"]["namespaces"].as_array().unwrap().iter().filter_map(|n| n["type"].as_str()).collect();
        assert!(ns.contains(&"user"));
        assert_eq!(c["linux"]["uidMappings"], json!([{"containerID": 0, "hostID": 1_000_000, "size": 65536}]));
        assert_eq!(c["linux"]["gidMappings"], c["linux"]["uidMappings"]);
        let mounts = c["mounts"].as_array().unwrap();
        let sys = mounts.iter().position(|m| m["destination"] == "/sys").unwrap();
        assert_eq!(mounts[sys]["type"], "bind");
        assert!(mounts[sys]["options"].as_array().unwrap().contains(&json!("ro")));
        // The host's cgroup trees and network devices are replaced or masked.
        let cg = mounts.iter().position(|m| m["destination"] == "/sys/fs/cgroup").unwrap();
        assert!(cg > sys && mounts[cg]["type"] == "cgroup" && mounts[cg]["options"].as_array().unwrap().contains(&json!("ro")));
        let masked: Vec<&str> = c["linux"]["maskedPaths"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
        assert!(HOST_SYSFS_MASKS.iter().all(|m| masked.contains(m)), "{masked:?}");
    }

    #[test]
    fn renders_volume_mounts_after_the_defaults() {
        let mut plan = sample_plan();
        plan.containers[0].mounts = vec![MountPlan { source: "/g/volumes/data".into(), destination: "/data".into(), read_only: true }];
        let ctx = BundleContext { nofile_hard: 20_000, memsw: true, seccomp_program: None };
        let c = render_config(&plan, &plan.containers[0], &ctx);
        let last = c["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["destination"], "/data");
        assert_eq!(last["source"], "/g/volumes/data");
        assert_eq!(last["options"], json!(["rbind", "rprivate", "ro", "nosuid", "nodev"]));
    }

    #[test]
    fn no_seccomp_means_no_profile_and_no_program() {
        let mut plan = sample_plan();
        plan.no_seccomp = true;
        let ctx = BundleContext { nofile_hard: 20_000, memsw: true, seccomp_program: Some("AAAAAAAAAAA=".into()) };
        let c = render_config(&plan, &plan.containers[0], &ctx);
        assert!(c["linux"].get("seccomp").is_none() && c.get("annotations").is_none(), "{c}");
    }

    #[test]
    fn a_compiled_seccomp_program_replaces_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = sample_plan();
        let without = render_config(&plan, &plan.containers[0], &BundleContext::detect(&plan));
        assert!(without["linux"]["seccomp"]["syscalls"].is_array());
        assert!(without.get("annotations").is_none());
        // A file that is not a sock_filter array is ignored (the profile stays).
        std::fs::write(dir.path().join("bad.bpf"), b"123").unwrap();
        plan.seccomp_program = Some(dir.path().join("bad.bpf"));
        assert!(render_config(&plan, &plan.containers[0], &BundleContext::detect(&plan))["linux"]["seccomp"].is_object());
        let program = dir.path().join("default.bpf");
        crate::seccomp::write_program(&program, &default_seccomp()).unwrap();
        plan.seccomp_program = Some(program.clone());
        let with = render_config(&plan, &plan.containers[0], &BundleContext::detect(&plan));
        assert!(with["linux"].get("seccomp").is_none());
        use base64::Engine as _;
        let b64 = with["annotations"][SECCOMP_PROGRAM_ANNOTATION].as_str().unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), std::fs::read(&program).unwrap());
    }

    #[test]
    fn renders_namespaces_cgroup_and_resources() {
        let plan = sample_plan();
        let ctx = BundleContext {
            nofile_hard: 20_000,
            memsw: true,
            seccomp_program: None,
        };
        let c = render_config(&plan, &plan.containers[0], &ctx);
        assert_eq!(c["linux"]["cgroupsPath"], "/skiff/abc123/web");
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(ns[4]["path"], "/run/skiff/netns/abc123");
        assert_eq!(c["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(c["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 256u64 << 20);
        assert_eq!(c["linux"]["resources"]["memory"]["swap"], 256u64 << 20);
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(c["process"]["cwd"], "/");
        assert_eq!(c["process"]["user"]["additionalGids"], json!([10]));
        assert_eq!(c["hostname"], "web");
    }

    #[test]
    fn clamps_nofile_to_hard_limit() {
        let plan = sample_plan();
        let ctx = BundleContext {
            nofile_hard: 20_000,
            memsw: false,
            seccomp_program: None,
        };
        let c = render_config(&plan, &plan.containers[0], &ctx);
        assert_eq!(
            c["process"]["rlimits"][0],
            json!({"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000})
        );
        assert!(c["linux"]["resources"]["memory"].get("swap").is_none());
        assert_eq!(clamp_nofile(1024, 20_000), 1024);
    }

    #[test]
    fn default_security_settings() {
        let plan = sample_plan();
        let ctx = BundleContext {
            nofile_hard: 20_000,
            memsw: false,
            seccomp_program: None,
        };
        let c = render_config(&plan, &plan.containers[0], &ctx);
        let bounding: Vec<&str> = c["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(bounding.len(), 13);
        assert!(bounding.contains(&"CAP_NET_BIND_SERVICE"));
        assert!(!bounding.contains(&"CAP_SYS_ADMIN"));
        let masked = c["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.contains(&json!("/proc/kcore")) && masked.contains(&json!("/sys/firmware")));
        assert!(c["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
        assert_eq!(
            c["linux"]["resources"]["devices"][0],
            json!({"allow": false, "access": "rwm"})
        );
        let dests: Vec<&str> = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hosts"
            ]
        );
        let hosts = &c["mounts"][7];
        assert_eq!(hosts["source"], "/g/hosts");
        assert!(hosts["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn seccomp_profile_is_an_allow_list_without_dangerous_syscalls() {
        let p = default_seccomp();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(p.get("_comment").is_none());
        let allowed: Vec<&str> = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()))
            .collect();
        assert!(allowed.contains(&"read") && allowed.contains(&"execve"));
        for denied in ["keyctl", "add_key", "bpf", "perf_event_open", "mount", "umount2", "init_module", "finit_module", "clock_settime", "settimeofday", "kexec_load", "unshare", "clone", "setns", "userfaultfd", "io_uring_setup"] {
            assert!(!allowed.contains(&denied), "{denied} must not be allowed unconditionally");
        }
        assert!(!DEFAULT_CAPABILITIES.contains(&"CAP_SYS_ADMIN") && !DEFAULT_CAPABILITIES.contains(&"CAP_NET_RAW"));
    }
}
