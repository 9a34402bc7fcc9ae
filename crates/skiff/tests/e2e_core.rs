//! End-to-end: real daemon, real registry, real containers, driven through the ARM API.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn container<'a>(g: &'a Value, name: &str) -> &'a Value {
    g["properties"]["containers"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).unwrap_or_else(|| panic!("container {name} in {g}"))
}

fn list_count(s: &TestServer) -> usize {
    let r = s.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}&$top=1000"), None);
    r.body["value"].as_array().map_or(0, Vec::len)
}

#[test]
fn create_is_a_long_running_operation_that_reaches_running() {
    let s = TestServer::start();
    s.ensure_rg("demo");
    let mut body = simple_group(&image("busybox:latest"), &["sh", "-c", "echo hi; echo err >&2; sleep 3600"]);
    body["properties"]["containers"][0]["properties"]["environmentVariables"] = json!([{"name": "A", "value": "1"}, {"name": "SECRET", "secureValue": "hunter2"}]);
    let r = s.put_group("demo", "hello", &body);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["properties"]["provisioningState"], "Pending");
    assert_eq!(r.body["type"], "Microsoft.ContainerInstance/containerGroups");
    assert_eq!(r.body["id"], format!("/subscriptions/{SUB}/resourceGroups/demo/providers/Microsoft.ContainerInstance/containerGroups/hello"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(!r.text.contains("hunter2"));
    let op_url = r.header("azure-asyncoperation").expect("Azure-AsyncOperation header");
    assert!(op_url.starts_with("http://127.0.0.1:") && op_url.contains("/operations/"), "{op_url}");

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let final_status = loop {
        let op = s.request("GET", &op_url, None);
        assert_eq!(op.status, 200, "{}", op.text);
        let status = op.body["status"].as_str().unwrap_or_default().to_string();
        if status == "Succeeded" || status == "Failed" {
            break op.body;
        }
        assert!(std::time::Instant::now() < deadline, "operation never finished: {}", op.text);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(final_status["status"], "Succeeded", "{final_status}");

    let g = s.wait_state("demo", "hello", "Running");
    assert_eq!(g["properties"]["provisioningState"], "Succeeded");
    let c = container(&g, "main");
    assert_eq!(c["properties"]["instanceView"]["currentState"]["state"], "Running");
    let events: Vec<&str> = c["properties"]["instanceView"]["events"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(events.contains(&"Started"), "{events:?}");
    let env = &c["properties"]["environmentVariables"];
    assert_eq!(env[1]["name"], "SECRET");
    assert!(env[1].get("secureValue").is_none(), "secure value echoed: {env}");
    assert!(!g.to_string().contains("hunter2"));

    let logs = s.wait_logs("demo", "hello", "main", "hi");
    assert!(logs.contains("err"), "stderr is captured too: {logs:?}");
    let ts = s.request("GET", &format!("{}/containers/main/logs?{API}&timestamps=true&tail=1", TestServer::group_path("demo", "hello")), None);
    let line = ts.body["content"].as_str().unwrap();
    assert_eq!(line.lines().count(), 1, "{line:?}");
    assert!(line.starts_with("20") && line.contains('T'), "timestamped: {line:?}");

    let missing = s.request("GET", &format!("{}/containers/nope/logs?{API}", TestServer::group_path("demo", "hello")), None);
    assert_eq!(missing.status, 404);

    s.delete_group("demo", "hello");
}

#[test]
fn multi_container_group_shares_localhost_and_both_logs_are_readable() {
    let s = TestServer::start();
    s.ensure_rg("demo");
    let body = json!({
        "location": "westus",
        "properties": {
            "osType": "Linux",
            "containers": [
                {"name": "web", "properties": {"image": image("busybox-httpd:latest"), "ports": [{"port": 80}],
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}}},
                {"name": "probe", "properties": {"image": image("busybox:latest"),
                    "command": ["sh", "-c", "until wget -q -O - http://127.0.0.1:80/; do sleep 0.2; done; echo; echo probe-done; sleep 3600"],
                    "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}}}}
            ]
        }
    });
    assert_eq!(s.put_group("demo", "pod", &body).status, 201);
    s.wait_state("demo", "pod", "Running");
    let logs = s.wait_logs("demo", "pod", "probe", "probe-done");
    assert!(logs.contains("hello from skiff"), "sidecar reached the web container on localhost: {logs:?}");
}

#[test]
fn restart_policies_and_exit_codes() {
    let s = TestServer::start();
    s.ensure_rg("rp");
    let bb = image("busybox:latest");

    let mut never = simple_group(&bb, &["sh", "-c", "echo bye; exit 3"]);
    never["properties"]["restartPolicy"] = "Never".into();
    assert_eq!(s.put_group("rp", "never", &never).status, 201);
    let g = s.wait_state("rp", "never", "Failed");
    let cs = &container(&g, "main")["properties"]["instanceView"];
    assert_eq!(cs["currentState"]["state"], "Terminated");
    assert_eq!(cs["currentState"]["exitCode"], 3);
    assert_eq!(cs["restartCount"], 0);
    assert!(s.logs("rp", "never", "main").contains("bye"), "logs survive the exit");

    let mut ok = simple_group(&bb, &["true"]);
    ok["properties"]["restartPolicy"] = "OnFailure".into();
    assert_eq!(s.put_group("rp", "onfailure-ok", &ok).status, 201);
    let g = s.wait_state("rp", "onfailure-ok", "Succeeded");
    assert_eq!(container(&g, "main")["properties"]["instanceView"]["restartCount"], 0);

    let mut failing = simple_group(&bb, &["sh", "-c", "echo attempt; exit 1"]);
    failing["properties"]["restartPolicy"] = "OnFailure".into();
    assert_eq!(s.put_group("rp", "onfailure-bad", &failing).status, 201);
    s.wait_group("rp", "onfailure-bad", "a restart", Duration::from_secs(60), |g| {
        container(g, "main")["properties"]["instanceView"]["restartCount"].as_i64().unwrap_or(0) >= 1
    });

    let always = simple_group(&bb, &["sh", "-c", "echo tick; exit 0"]);
    assert_eq!(s.put_group("rp", "always", &always).status, 201);
    let g = s.wait_group("rp", "always", "a restart", Duration::from_secs(60), |g| {
        container(g, "main")["properties"]["instanceView"]["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(g["properties"]["instanceView"]["state"], "Running");
}

#[test]
fn cgroup_limits_follow_the_seed_arithmetic() {
    let s = TestServer::start();
    s.ensure_rg("cg");
    let bb = image("busybox:latest");
    let body = json!({
        "location": "westus",
        "properties": {
            "osType": "Linux",
            "containers": [
                {"name": "c1", "properties": {"image": bb, "command": ["sleep", "3600"], "resources": {"requests": {"cpu": 0.75, "memoryInGB": 0.5}}}},
                {"name": "c2", "properties": {"image": bb, "command": ["sleep", "3600"], "resources": {"requests": {"cpu": 0.5, "memoryInGB": 1.5}, "limits": {"cpu": 1.0, "memoryInGB": 1.5}}}}
            ]
        }
    });
    assert_eq!(s.put_group("cg", "seed", &body).status, 201);
    s.wait_state("cg", "seed", "Running");
    let uid = s.group_uid("cg", "seed");
    let read = |ctrl: &str, rel: &str, file: &str| -> String {
        let p = Path::new("/sys/fs/cgroup").join(ctrl).join(&s.cgroup_parent).join(&uid).join(rel).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
    };
    // ceil(0.75 + 0.5) = 2 cores; 0.5 + 1.5 = 2 GiB.
    assert_eq!(read("cpu", "", "cpu.cfs_quota_us"), "200000");
    assert_eq!(read("cpu", "", "cpu.cfs_period_us"), "100000");
    assert_eq!(read("memory", "", "memory.limit_in_bytes"), (2u64 << 30).to_string());
    // Spare CPU in proportion to the requests: 0.75 : 0.5.
    assert_eq!(read("cpu", "c1", "cpu.shares"), "768");
    assert_eq!(read("cpu", "c2", "cpu.shares"), "512");
    assert_eq!(read("cpu", "c2", "cpu.cfs_quota_us"), "100000");
    assert_eq!(read("memory", "c1", "memory.limit_in_bytes"), (512u64 << 20).to_string());
    assert_eq!(read("memory", "c2", "memory.limit_in_bytes"), (1536u64 << 20).to_string());
}

#[test]
fn daemon_kill_9_loses_nothing_and_readopts_running_groups() {
    let mut s = TestServer::start();
    s.ensure_rg("crash");
    let body = simple_group(&image("busybox:latest"), &["sh", "-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.1; done"]);
    assert_eq!(s.put_group("crash", "survivor", &body).status, 201);
    s.wait_state("crash", "survivor", "Running");
    s.wait_logs("crash", "survivor", "main", "line-3");
    let uid = s.group_uid("crash", "survivor");
    let status: Value = serde_json::from_str(&std::fs::read_to_string(s.data_dir.join("groups").join(&uid).join("status.json")).unwrap()).unwrap();
    let pid = status["containers"][0]["pid"].as_u64().expect("container pid") as u32;
    // The supervisor runs crun from the daemon's sealed copy, which it keeps open: its stop
    // below, after the daemon that made the copy was killed, still goes through it.
    let supervisor = status["supervisorPid"].as_u64().expect("supervisor pid");
    let holds_copy = std::fs::read_dir(format!("/proc/{supervisor}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|l| l.to_string_lossy().starts_with("/memfd:skiff-oci-runtime"));
    assert!(holds_copy, "the supervisor has no sealed copy of the OCI runtime");

    s.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(pid_alive(pid), "the container must outlive the daemon");
    s.spawn();

    let g = s.wait_state("crash", "survivor", "Running");
    assert_eq!(g["properties"]["provisioningState"], "Succeeded");
    assert_eq!(container(&g, "main")["properties"]["instanceView"]["restartCount"], 0, "re-adopted, not restarted");
    assert!(pid_alive(pid));
    let logs = s.wait_logs("crash", "survivor", "main", "line-3");
    let before: usize = logs.lines().count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.logs("crash", "survivor", "main").lines().count() > before, "log capture continues after the restart");

    // Stop/start still work on the adopted group.
    let r = s.request("POST", &format!("{}/stop?{API}", TestServer::group_path("crash", "survivor")), None);
    assert_eq!(r.status, 204, "{}", r.text);
    s.wait_state("crash", "survivor", "Stopped");
    assert!(!pid_alive(pid));
}

#[test]
fn stop_start_restart_and_delete_leaves_nothing_behind() {
    let s = TestServer::start();
    s.ensure_rg("life");
    let body = simple_group(&image("busybox:latest"), &["sh", "-c", "echo started; sleep 3600"]);
    assert_eq!(s.put_group("life", "cycle", &body).status, 201);
    s.wait_state("life", "cycle", "Running");
    let uid = s.group_uid("life", "cycle");
    let gp = TestServer::group_path("life", "cycle");

    let r = s.request("POST", &format!("{gp}/stop?{API}"), None);
    assert_eq!(r.status, 204);
    let g = s.wait_state("life", "cycle", "Stopped");
    assert_eq!(container(&g, "main")["properties"]["instanceView"]["currentState"]["state"], "Terminated");
    assert!(s.logs("life", "cycle", "main").contains("started"), "logs survive a stop");

    let r = s.request("POST", &format!("{gp}/start?{API}"), None);
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.header("azure-asyncoperation").is_some());
    s.wait_state("life", "cycle", "Running");

    let r = s.request("POST", &format!("{gp}/start?{API}"), None);
    assert_eq!(r.status, 204, "start of a running group is a no-op");

    let r = s.request("POST", &format!("{gp}/restart?{API}"), None);
    assert_eq!(r.status, 204, "{}", r.text);
    s.wait_group("life", "cycle", "restart", Duration::from_secs(60), |g| {
        g["properties"]["instanceView"]["state"] == "Running" && g["properties"]["provisioningState"] == "Succeeded"
    });

    let status: Value = serde_json::from_str(&std::fs::read_to_string(s.data_dir.join("groups").join(&uid).join("status.json")).unwrap()).unwrap();
    let supervisor = status["supervisorPid"].as_u64().expect("supervisor pid") as u32;
    let app = status["containers"][0]["pid"].as_u64().expect("container pid") as u32;
    assert!(pid_alive(supervisor) && pid_alive(app));

    let r = s.request("DELETE", &format!("{gp}?{API}"), None);
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.header("location").is_some() && r.header("azure-asyncoperation").is_some());
    s.delete_group("life", "cycle");
    // The supervisor exits right after it answered the stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pid_alive(supervisor) || pid_alive(app) {
        assert!(std::time::Instant::now() < deadline, "processes outlived their group: supervisor {supervisor} alive {}, container {app} alive {}", pid_alive(supervisor), pid_alive(app));
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = s.request("DELETE", &format!("{gp}?{API}"), None);
    assert_eq!(r.status, 204, "deleting an absent group");

    assert!(!s.data_dir.join("groups").join(&uid).exists(), "group directory removed");
    assert!(mounts_beneath(&s.data_dir).is_empty(), "mounts left: {:?}", mounts_beneath(&s.data_dir));
    assert!(mounts_beneath(&s.run_dir).is_empty(), "mounts left: {:?}", mounts_beneath(&s.run_dir));
    for ctrl in cgroup_controllers() {
        let p = Path::new("/sys/fs/cgroup").join(&ctrl).join(&s.cgroup_parent).join(&uid);
        assert!(!p.exists(), "cgroup left behind: {}", p.display());
    }
    let crun = std::process::Command::new("crun").arg("--root").arg(s.run_dir.join("crun")).arg("list").output().unwrap();
    assert!(!String::from_utf8_lossy(&crun.stdout).contains(&uid), "runtime state left: {}", String::from_utf8_lossy(&crun.stdout));
}

#[test]
fn bad_input_gets_arm_errors_and_changes_nothing() {
    let s = TestServer::start();
    s.ensure_rg("bad");
    let bb = image("busybox:latest");
    let good = simple_group(&bb, &["sleep", "3600"]);
    let gp = TestServer::group_path("bad", "g1");

    let r = s.request("PUT", &gp, Some(&good));
    assert_eq!((r.status, r.code().as_str()), (400, "MissingApiVersionParameter"), "{}", r.text);
    let r = s.request("PUT", &format!("{gp}?api-version=1999-01-01"), Some(&good));
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidApiVersionParameter"));
    let r = s.raw("PUT", &format!("{gp}?{API}"), "{\"properties\": ");
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidRequestContent"), "{}", r.text);
    let r = s.put_group("bad", "Invalid_Name", &good);
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.put_group("nowhere", "g1", &good);
    assert_eq!((r.status, r.code().as_str()), (404, "ResourceGroupNotFound"));

    let mut windows = good.clone();
    windows["properties"]["osType"] = "Windows".into();
    let r = s.put_group("bad", "g1", &windows);
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("not supported"), "{}", r.text);

    let mut dup = good.clone();
    dup["properties"]["containers"] = json!([
        {"name": "a", "properties": {"image": bb, "ports": [{"port": 80}], "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}}},
        {"name": "b", "properties": {"image": bb, "ports": [{"port": 80}], "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}}}
    ]);
    assert_eq!(s.put_group("bad", "g1", &dup).code(), "DuplicateContainerPorts");

    assert_eq!(list_count(&s), 0, "nothing was stored");
    assert_eq!(s.get_group("bad", "g1").status, 404);
    assert_eq!(s.get_group("bad", "g1").code(), "ResourceNotFound");

    // Problems only the registry can reveal: a Failed provisioning with a clear event, no crash.
    let unknown = simple_group(&image("does-not-exist:latest"), &["true"]);
    assert_eq!(s.put_group("bad", "unknown-image", &unknown).status, 201);
    let g = s.wait_group("bad", "unknown-image", "failure", Duration::from_secs(60), |g| g["properties"]["provisioningState"] == "Failed");
    let ev = container(&g, "main")["properties"]["instanceView"]["events"].to_string();
    assert!(ev.contains("Failed to pull image"), "{ev}");

    let (auth_host, user, _) = auth_registry();
    let mut wrong = simple_group(&format!("{auth_host}/busybox:latest"), &["true"]);
    wrong["properties"]["imageRegistryCredentials"] = json!([{"server": auth_host, "username": user, "password": "wrong-password"}]);
    assert_eq!(s.put_group("bad", "wrong-creds", &wrong).status, 201);
    let g = s.wait_group("bad", "wrong-creds", "failure", Duration::from_secs(60), |g| g["properties"]["provisioningState"] == "Failed");
    let ev = container(&g, "main")["properties"]["instanceView"]["events"].to_string();
    assert!(ev.to_lowercase().contains("unauthorized") || ev.contains("authentication"), "{ev}");
    assert!(!g.to_string().contains("wrong-password"), "registry password is never echoed");

    // The daemon is still healthy afterwards.
    assert_eq!(s.put_group("bad", "fine", &good).status, 201);
    s.wait_state("bad", "fine", "Running");
}

#[test]
fn private_registry_with_credentials_and_cached_images() {
    let s = TestServer::start();
    s.ensure_rg("reg");
    let (auth_host, user, pass) = auth_registry();
    let img = format!("{auth_host}/busybox:latest");
    let mut body = simple_group(&img, &["sh", "-c", "echo private-ok; sleep 3600"]);
    body["properties"]["imageRegistryCredentials"] = json!([{"server": auth_host, "username": user, "password": pass}]);
    assert_eq!(s.put_group("reg", "first", &body).status, 201);
    let g = s.wait_state("reg", "first", "Running");
    let events = container(&g, "main")["properties"]["instanceView"]["events"].to_string();
    assert!(events.contains("Pulled"), "{events}");
    s.wait_logs("reg", "first", "main", "private-ok");

    // A second group with the cached image pulls nothing.
    assert_eq!(s.put_group("reg", "second", &body).status, 201);
    let g = s.wait_state("reg", "second", "Running");
    let events = container(&g, "main")["properties"]["instanceView"]["events"].to_string();
    assert!(!events.contains("Pulling"), "cached image pulled again: {events}");

    let cached = s.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/locations/westus/cachedImages?{API}"), None);
    assert!(cached.text.contains("busybox"), "{}", cached.text);
}

/// What the image says and what the group says meet as ACI's do: without `command` the image's
/// ENTRYPOINT and CMD run; `command` replaces both; the image's working directory and
/// environment stay, the group's variables add to (and override) them. Layers with whiteouts
/// and Docker v2 schema 2 manifests run too.
#[test]
fn image_config_entrypoint_workdir_env_and_layer_formats() {
    let s = TestServer::start();
    s.ensure_rg("img");
    let never = |mut g: Value| {
        g["properties"]["restartPolicy"] = json!("Never");
        g
    };
    let mut plain = simple_group(&image("busybox-entrypoint:latest"), &[]);
    plain["properties"]["containers"][0]["properties"].as_object_mut().unwrap().remove("command");
    assert_eq!(s.put_group("img", "ep", &never(plain)).status, 201);
    s.wait_state("img", "ep", "Succeeded");
    assert_eq!(s.logs("img", "ep", "main"), "from-entrypoint default-arg\n");

    let mut own = simple_group(&image("busybox-entrypoint:latest"), &["sh", "-c", "pwd; echo $IMAGE_ENV $OWN; id -u"]);
    own["properties"]["containers"][0]["properties"]["environmentVariables"] = json!([{"name": "OWN", "value": "mine"}]);
    assert_eq!(s.put_group("img", "cmd", &never(own)).status, 201);
    s.wait_state("img", "cmd", "Succeeded");
    assert_eq!(s.logs("img", "cmd", "main"), "/srv\nyes mine\n0\n");

    let layers = simple_group(&image("busybox-multilayer:latest"), &["sh", "-c", "ls /data"]);
    assert_eq!(s.put_group("img", "wh", &never(layers)).status, 201);
    s.wait_state("img", "wh", "Succeeded");
    assert_eq!(s.logs("img", "wh", "main"), "b.txt\n", "a.txt was whited out by the top layer");

    let v2 = simple_group(&image("busybox-v2s2:latest"), &["echo", "v2s2-ok"]);
    assert_eq!(s.put_group("img", "v2", &never(v2)).status, 201);
    s.wait_state("img", "v2", "Succeeded");
    assert_eq!(s.logs("img", "v2", "main"), "v2s2-ok\n");
}
