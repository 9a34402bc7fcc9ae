//! Escape attempts from inside a container. Each must fail safely, with nothing changed
//! outside the group, and the tests check that from the host.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn container<'a>(g: &'a Value, name: &str) -> &'a Value {
    g["properties"]["containers"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).unwrap_or_else(|| panic!("container {name} in {g}"))
}

#[test]
fn dangerous_syscalls_and_privileged_files_are_refused() {
    let s = TestServer::start();
    s.ensure_rg("sbx");
    let probes = [
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "mount",
        "unshare-user",
        "unshare-net",
        "clone-newuser",
        "raw-socket",
        "packet-socket",
        "settime",
        "init_module",
        "setns",
    ];
    let script = format!(
        "for p in {}; do probe $p; done; \
         echo 1 > /proc/sys/kernel/panic_on_oops 2>/dev/null && echo proc-sys: ALLOWED || echo proc-sys: blocked; \
         echo b > /proc/sysrq-trigger 2>/dev/null && echo sysrq: ALLOWED || echo sysrq: blocked; \
         touch /sys/kernel/skiff 2>/dev/null && echo sys: ALLOWED || echo sys: blocked; \
         test -s /proc/kcore && echo kcore: ALLOWED || echo kcore: blocked; \
         mknod /tmp/sda b 8 0 2>/dev/null && (head -c 1 /tmp/sda >/dev/null 2>&1 && echo blockdev: ALLOWED || echo blockdev: blocked) || echo blockdev: blocked; \
         echo probes-done; sleep 3600",
        probes.join(" ")
    );
    let host_file = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let panic_on_oops = host_file("/proc/sys/kernel/panic_on_oops");
    let body = simple_group(&image("busybox-probe:latest"), &["sh", "-c", &script]);
    assert_eq!(s.put_group("sbx", "probe", &body).status, 201);
    s.wait_state("sbx", "probe", "Running");
    let logs = s.wait_logs("sbx", "probe", "main", "probes-done");
    for p in probes.iter().copied().chain(["proc-sys", "sysrq", "sys", "kcore", "blockdev"]) {
        let line = logs.lines().find(|l| l.starts_with(&format!("{p}:"))).unwrap_or_else(|| panic!("no result for {p} in {logs}"));
        assert!(line.contains("blocked"), "{line}");
    }
    assert_eq!(host_file("/proc/sys/kernel/panic_on_oops"), panic_on_oops, "the host's sysctl is unchanged");
    // What refused those calls is the profile the daemon compiled once, handed to crun as BPF.
    let uid = s.group_uid("sbx", "probe");
    let config: Value = serde_json::from_str(&host_file(&s.data_dir.join("groups").join(&uid).join("bundles/main/config.json").to_string_lossy())).unwrap();
    assert!(config["linux"].get("seccomp").is_none(), "no profile for crun to compile again");
    let program = std::fs::read(s.data_dir.join("seccomp/default.bpf")).unwrap();
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(config["annotations"]["run.oci.seccomp_bpf_data"].as_str().unwrap()).unwrap(), program);
    assert!(!Path::new("/sys/kernel/skiff").exists());
}

/// The profile, capabilities and masks are not the app container's alone: an init container
/// and a process started with `exec` get them too.
#[test]
fn init_containers_and_exec_get_the_same_sandbox() {
    let s = TestServer::start();
    s.ensure_rg("sbx2");
    let checks = "probe keyctl; probe bpf; probe unshare-user; touch /sys/kernel/skiff 2>/dev/null && echo sys: ALLOWED || echo sys: blocked";
    let mut body = simple_group(&image("busybox-probe:latest"), &["sh", "-c", "echo app-up; sleep 3600"]);
    body["properties"]["initContainers"] = json!([{"name": "init", "properties": {"image": image("busybox-probe:latest"), "command": ["sh", "-c", checks]}}]);
    assert_eq!(s.put_group("sbx2", "both", &body).status, 201);
    s.wait_logs("sbx2", "both", "main", "app-up");
    let init = s.logs("sbx2", "both", "init");
    let (code, exec) = common::pod::exec_piped(&s, "sbx2", "both", &format!("sh -c \"{checks}\""), None);
    assert_eq!(code, 0, "{exec}");
    for (who, out) in [("init container", &init), ("exec", &exec)] {
        for p in ["keyctl", "bpf", "unshare-user", "sys"] {
            let line = out.lines().find(|l| l.starts_with(&format!("{p}:"))).unwrap_or_else(|| panic!("{who}: no result for {p} in {out}"));
            assert!(line.contains("blocked"), "{who}: {line}");
        }
    }
}

#[test]
fn groups_cannot_see_each_others_processes_files_or_environment() {
    let s = TestServer::start();
    s.ensure_rg("iso");
    let mut a = simple_group(&image("busybox-probe:latest"), &["sh", "-c", "echo top-secret > /tmp/a-secret; exec sleep 7777"]);
    a["properties"]["containers"][0]["properties"]["environmentVariables"] = json!([{"name": "A_TOKEN", "secureValue": "a-token-value"}]);
    assert_eq!(s.put_group("iso", "a", &a).status, 201);
    s.wait_state("iso", "a", "Running");
    let uid = s.group_uid("iso", "a");
    let status: Value = serde_json::from_str(&std::fs::read_to_string(s.data_dir.join("groups").join(&uid).join("status.json")).unwrap()).unwrap();
    let a_pid = status["containers"][0]["pid"].as_u64().unwrap();

    let script = format!(
        "ps -o args | grep -c 'sleep 777[7]' ; \
         grep -rl top-secret / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | wc -l; \
         cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c a-token-value; \
         probe ptrace {a_pid}; \
         echo cgroup-hits $(find /sys 2>/dev/null | grep -c {uid}); \
         echo netdevs $( (ls -A /sys/class/net; ls -A /sys/devices/virtual/net) 2>/dev/null | grep -c .); \
         echo own-limit $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
         echo iso-done; sleep 3600"
    );
    let b = simple_group(&image("busybox-probe:latest"), &["sh", "-c", &script]);
    assert_eq!(s.put_group("iso", "b", &b).status, 201);
    s.wait_state("iso", "b", "Running");
    let logs = s.wait_logs("iso", "b", "main", "iso-done");
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[0].trim(), "0", "a's process is invisible: {logs}");
    assert_eq!(lines[1].trim(), "0", "a's files are invisible: {logs}");
    assert_eq!(lines[2].trim(), "0", "a's environment is invisible: {logs}");
    assert!(lines[3].contains("blocked"), "ptrace of another group's pid: {logs}");
    // /sys shows neither the other group's cgroups nor the host's network devices (every
    // group's veth is named after its uid); the container still reads its own limits.
    assert!(logs.contains("cgroup-hits 0"), "a's cgroups are visible in b's /sys: {logs}");
    assert!(logs.contains("netdevs 0"), "the host's network devices are visible: {logs}");
    assert!(logs.contains(&format!("own-limit {}", 512u64 << 20)), "{logs}");
}

#[test]
fn a_fork_bomb_hits_the_group_pids_limit_and_the_neighbours_keep_working() {
    let s = TestServer::start_with(&["--group-pids-max", "64"]);
    s.ensure_rg("bomb");
    let bomb = simple_group(&image("busybox:latest"), &["sh", "-c", "while true; do sleep 1000 & done"]);
    assert_eq!(s.put_group("bomb", "bomb", &bomb).status, 201);
    s.wait_state("bomb", "bomb", "Running");
    let uid = s.group_uid("bomb", "bomb");
    let pids = Path::new("/sys/fs/cgroup/pids").join(&s.cgroup_parent).join(&uid);
    assert_eq!(std::fs::read_to_string(pids.join("pids.max")).unwrap().trim(), "64");
    // The shell reports failed forks once the group is at its limit.
    s.wait_logs("bomb", "bomb", "main", "can't fork");
    let peak: u64 = std::fs::read_to_string(pids.join("pids.peak")).unwrap().trim().parse().unwrap();
    assert!(peak <= 64, "the group exceeded its pids limit: peak {peak}");

    // The daemon and a neighbour group are unaffected.
    let calm = simple_group(&image("busybox:latest"), &["sh", "-c", "echo calm; sleep 3600"]);
    assert_eq!(s.put_group("bomb", "calm", &calm).status, 201);
    s.wait_state("bomb", "calm", "Running");
    s.wait_logs("bomb", "calm", "main", "calm");
}

/// Filling "the disk" fills only the group's own writable-layer tmpfs (and an emptyDir its
/// own): the writes stop with ENOSPC at the configured size, nothing lands on the data disk,
/// and a neighbour still writes.
#[test]
fn filling_the_disk_stops_at_the_group_quota() {
    let s = TestServer::start_with(&["--writable-layer-mb", "16", "--empty-dir-mb", "8"]);
    s.ensure_rg("disk");
    let fill = "dd if=/dev/zero of=/big bs=1M count=64 2>&1 | grep -o 'No space left on device'; echo layer-done; \
                dd if=/dev/zero of=/scratch/big bs=1M count=64 2>&1 | grep -o 'No space left on device'; echo empty-done; \
                echo layer-kb $(du -k /big | cut -f1); echo empty-kb $(du -k /scratch/big | cut -f1); sleep 3600";
    let mut body = simple_group(&image("busybox:latest"), &["sh", "-c", fill]);
    // Memory well above both limits: the size limits, not the memory limit, stop the writes.
    body["properties"]["containers"][0]["properties"]["resources"]["requests"]["memoryInGB"] = json!(1.0);
    body["properties"]["containers"][0]["properties"]["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}]);
    body["properties"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    assert_eq!(s.put_group("disk", "filler", &body).status, 201);
    s.wait_state("disk", "filler", "Running");
    let logs = s.wait_logs("disk", "filler", "main", "empty-kb");
    assert_eq!(logs.matches("No space left on device").count(), 2, "{logs}");
    let kb = |what: &str| -> u64 { logs.lines().find_map(|l| l.strip_prefix(what)).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("{what} in {logs}")) };
    assert!(kb("layer-kb") <= 16 * 1024 && kb("layer-kb") > 8 * 1024, "{logs}");
    assert!(kb("empty-kb") <= 8 * 1024 && kb("empty-kb") > 4 * 1024, "{logs}");
    // Both live in memory-backed filesystems of the group, not on the data disk.
    let uid = s.group_uid("disk", "filler");
    let group_dir = s.data_dir.join("groups").join(&uid);
    for dir in [group_dir.join("containers"), group_dir.join("volumes/scratch")] {
        let fstype = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (f.get(4) == Some(&dir.to_string_lossy().as_ref())).then(|| f[sep + 1].to_string())
        });
        assert_eq!(fstype.as_deref(), Some("tmpfs"), "{}", dir.display());
    }
    // A neighbour is unaffected.
    let calm = simple_group(&image("busybox:latest"), &["sh", "-c", "echo ok > /f && cat /f && sleep 3600"]);
    assert_eq!(s.put_group("disk", "calm", &calm).status, 201);
    s.wait_logs("disk", "calm", "main", "ok");
    // Deleting the group releases both.
    s.delete_group("disk", "filler");
    assert!(mounts_beneath(&group_dir).is_empty(), "{:?}", mounts_beneath(&group_dir));
}

#[test]
fn a_memory_bomb_kills_only_its_own_container() {
    let s = TestServer::start();
    s.ensure_rg("oom");
    let body = json!({
        "location": "westus",
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [
                {"name": "hog", "properties": {"image": image("busybox:latest"), "command": ["sh", "-c", "tail /dev/zero"],
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.2}}}},
                {"name": "quiet", "properties": {"image": image("busybox:latest"), "command": ["sh", "-c", "echo quiet; sleep 3600"],
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.2}}}}
            ]
        }
    });
    assert_eq!(s.put_group("oom", "pair", &body).status, 201);
    let g = s.wait_group("oom", "pair", "the hog's OOM kill", Duration::from_secs(60), |g| {
        container(g, "hog")["properties"]["instanceView"]["currentState"]["state"] == "Terminated"
    });
    assert_eq!(container(&g, "hog")["properties"]["instanceView"]["currentState"]["exitCode"], 137, "{g}");
    assert_eq!(container(&g, "quiet")["properties"]["instanceView"]["currentState"]["state"], "Running");
    assert_eq!(g["properties"]["instanceView"]["state"], "Running");
}

#[test]
fn a_malicious_layer_is_rejected_with_a_clear_event_and_writes_nothing_outside() {
    let s = TestServer::start();
    s.ensure_rg("evil");
    let body = simple_group(&image("evil-layer:latest"), &["true"]);
    assert_eq!(s.put_group("evil", "evil", &body).status, 201);
    let g = s.wait_group("evil", "evil", "failure", Duration::from_secs(60), |g| g["properties"]["provisioningState"] == "Failed");
    let events = container(&g, "main")["properties"]["instanceView"]["events"].to_string();
    assert!(events.contains("Failed to pull image") && (events.contains("unsafe") || events.contains("outside")), "{events}");
    for escaped in ["/etc/skiff-escape-dotdot", "/etc/skiff-escape-symlink"] {
        assert!(!Path::new(escaped).exists(), "{escaped} was written on the host");
    }
    let images = s.data_dir.join("images");
    let found = std::process::Command::new("find").arg(&images).args(["-name", "skiff-escape*"]).output().unwrap();
    assert!(found.stdout.is_empty(), "escape files inside the cache: {}", String::from_utf8_lossy(&found.stdout));
}

fn uid_map_of(s: &TestServer, rg: &str, name: &str) -> (u64, u64) {
    let logs = s.wait_logs(rg, name, "main", "map:");
    let line = logs.lines().find(|l| l.starts_with("map:")).unwrap().to_string();
    let nums: Vec<u64> = line.trim_start_matches("map:").split_whitespace().filter_map(|n| n.parse().ok()).collect();
    assert_eq!(nums.len(), 3, "{line}");
    assert_eq!(nums[0], 0, "{line}");
    (nums[1], nums[2])
}

#[test]
fn every_group_runs_as_root_of_its_own_unprivileged_id_range() {
    let mut s = TestServer::start();
    s.ensure_rg("uns");
    let script = "echo map: $(cat /proc/self/uid_map); ls -ln /bin/busybox | awk '{print \"owner:\", $3, $4}'; \
                  echo changed > /etc/motd && echo etc-write: ok; id -u; sleep 3600";
    for name in ["one", "two"] {
        let body = simple_group(&image("busybox:latest"), &["sh", "-c", script]);
        assert_eq!(s.put_group("uns", name, &body).status, 201);
        s.wait_state("uns", name, "Running");
    }
    let (base1, size1) = uid_map_of(&s, "uns", "one");
    let (base2, _) = uid_map_of(&s, "uns", "two");
    assert_eq!(size1, 65536);
    assert!(base1 >= 100_000 && base2 >= 100_000, "ranges are far from real host users: {base1} {base2}");
    assert!(base1.abs_diff(base2) >= 65536, "two live groups never share ids: {base1} {base2}");
    let logs = s.logs("uns", "one", "main");
    assert!(logs.contains("owner: 0 0"), "image files keep their ownership inside: {logs}");
    assert!(logs.contains("etc-write: ok"), "container root can change image files (copy-up): {logs}");

    // On the host, the container's root is the range's first id, not root.
    let uid = s.group_uid("uns", "one");
    let status: Value = serde_json::from_str(&std::fs::read_to_string(s.data_dir.join("groups").join(&uid).join("status.json")).unwrap()).unwrap();
    let pid = status["containers"][0]["pid"].as_u64().unwrap();
    let owner = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uid: u64 = owner.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|u| u.parse().ok()).unwrap();
    assert_eq!(host_uid, base1);
    // The shared image cache on disk is untouched: still owned by real root.
    let cached = std::process::Command::new("find").arg(s.data_dir.join("images/layers")).args(["-name", "busybox", "-uid", "0"]).output().unwrap();
    assert!(!cached.stdout.is_empty(), "the layer cache keeps real ownership");

    // The range survives a daemon crash and is freed with the group.
    s.kill9();
    s.spawn();
    s.wait_state("uns", "one", "Running");
    let uid_two = s.group_uid("uns", "two");
    assert_eq!(range_owners(&s), vec![uid.clone(), uid_two.clone()].into_iter().collect(), "one persisted range per live group");
    s.delete_group("uns", "one");
    assert_eq!(range_owners(&s), [uid_two.clone()].into_iter().collect(), "the deleted group's range is freed");
    let body = simple_group(&image("busybox:latest"), &["sh", "-c", script]);
    assert_eq!(s.put_group("uns", "three", &body).status, 201);
    s.wait_state("uns", "three", "Running");
    let (base3, _) = uid_map_of(&s, "uns", "three");
    assert!(base3.abs_diff(base2) >= 65536, "a new group never shares the live group's ids: {base3} {base2}");
}

/// The owners (group uids) of the id ranges on record in the store.
fn range_owners(s: &TestServer) -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("sqlite3")
        .arg(s.data_dir.join("skiff.db"))
        .arg("SELECT CAST(value AS TEXT) FROM kv WHERE CAST(key AS TEXT) LIKE 'uidranges/%'")
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}
