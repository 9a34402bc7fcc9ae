//! End-to-end: init containers (order, shared network and volumes, failure and the restart
//! policy), probes and secure values.

mod common;

use std::time::Duration;

use common::pod::*;
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn ctr(name: &str, script: &str) -> Value {
    json!({"name": name, "properties": {
        "image": image("busybox:latest"),
        "command": ["sh", "-c", script],
        "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}},
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }})
}

fn init(name: &str, script: &str) -> Value {
    json!({"name": name, "properties": {
        "image": image("busybox:latest"),
        "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }})
}

fn group_with_inits(policy: &str, inits: Vec<Value>, app: Value) -> Value {
    json!({"location": "westus", "properties": {
        "osType": "Linux", "restartPolicy": policy,
        "containers": [app], "initContainers": inits,
        "volumes": [{"name": "work", "emptyDir": {}}],
    }})
}

fn init_view<'a>(g: &'a Value, name: &str) -> &'a Value {
    g["properties"]["initContainers"].as_array().and_then(|a| a.iter().find(|c| c["name"] == name)).map(|c| &c["properties"]["instanceView"]).unwrap_or_else(|| panic!("init container {name} in {g}"))
}

#[test]
fn init_containers_run_in_order_before_the_app_sharing_network_and_volumes() {
    let s = TestServer::start();
    s.ensure_rg("life");
    let body = group_with_inits(
        "Always",
        vec![
            init("first", "sleep 0.3; echo one >> /work/order; readlink /proc/self/ns/net > /work/netns-init"),
            init("second", "echo two >> /work/order"),
        ],
        // netns-app is written before the log line the test waits for.
        ctr("app", "readlink /proc/self/ns/net > /work/netns-app; echo app >> /work/order; cat /work/order; sleep 3600"),
    );
    assert_eq!(s.put_group("life", "inits", &body).status, 201);
    let g = s.wait_state("life", "inits", "Running");
    assert_eq!(s.wait_logs("life", "inits", "app", "app"), "one\ntwo\napp\n");
    for name in ["first", "second"] {
        let v = init_view(&g, name);
        assert_eq!(v["currentState"]["state"], "Terminated", "{v}");
        assert_eq!(v["currentState"]["exitCode"], 0, "{v}");
    }
    let (code, out) = exec_piped(&s, "life", "inits", "cat /work/netns-init /work/netns-app", None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!((code, lines.len()), (0, 2), "{out}");
    assert_eq!(lines[0], lines[1], "init and app containers are in different network namespaces");
    assert_eq!(s.logs("life", "inits", "second"), "");
}

#[test]
fn a_failing_init_container_follows_the_restart_policy() {
    let s = TestServer::start();
    s.ensure_rg("life");
    // Never: the group fails and the app never starts.
    let body = group_with_inits("Never", vec![init("boom", "echo failing; exit 3")], ctr("app", "echo app-ran; sleep 3600"));
    assert_eq!(s.put_group("life", "never", &body).status, 201);
    let g = s.wait_group("life", "never", "state Failed", T, |g| g["properties"]["instanceView"]["state"] == "Failed");
    let v = init_view(&g, "boom");
    assert_eq!(v["currentState"]["exitCode"], 3, "{g}");
    let app = &g["properties"]["containers"][0]["properties"]["instanceView"];
    assert_eq!(app["currentState"]["state"], "Waiting", "{g}");
    assert_eq!(s.logs("life", "never", "app"), "");
    assert_eq!(s.logs("life", "never", "boom"), "failing\n");

    // OnFailure: the init container is retried (the volume keeps its state) until it succeeds.
    let body = group_with_inits("OnFailure", vec![init("flaky", "[ -f /work/once ] || { touch /work/once; exit 1; }")], ctr("app", "echo app-ran; sleep 3600"));
    assert_eq!(s.put_group("life", "retry", &body).status, 201);
    let g = s.wait_state("life", "retry", "Running");
    s.wait_logs("life", "retry", "app", "app-ran");
    let v = init_view(&g, "flaky");
    assert_eq!(v["restartCount"], 1, "{g}");
    assert_eq!(v["currentState"]["exitCode"], 0, "{g}");
    assert_eq!(v["previousState"]["exitCode"], 1, "{g}");
}

fn main_view(g: &Value) -> &Value {
    &g["properties"]["containers"][0]["properties"]["instanceView"]
}

#[test]
fn a_failing_liveness_probe_restarts_the_container_with_an_event() {
    let s = TestServer::start();
    s.ensure_rg("probe");
    let mut body = simple_group(&image("busybox:latest"), &["sh", "-c", "touch /tmp/healthy; echo started; sleep 3600"]);
    body["properties"]["containers"][0]["properties"]["livenessProbe"] =
        json!({"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2, "timeoutSeconds": 5});
    assert_eq!(s.put_group("probe", "live", &body).status, 201);
    s.wait_state("probe", "live", "Running");
    // Healthy probes keep it running: still the first run after a few periods.
    std::thread::sleep(Duration::from_millis(2500));
    let g = s.get_group("probe", "live").body;
    assert_eq!(main_view(&g)["restartCount"], 0, "{g}");
    let (code, _) = exec_piped(&s, "probe", "live", "rm /tmp/healthy", None);
    assert_eq!(code, 0);
    let g = s.wait_group("probe", "live", "a liveness restart", T, |g| main_view(g)["restartCount"].as_i64().unwrap_or(0) >= 1);
    let events = main_view(&g)["events"].to_string();
    assert!(events.contains("Liveness probe failed") && events.contains("failed liveness probe, will be restarted"), "{events}");
    // The restarted container is healthy again (its script recreated the file).
    s.wait_group("probe", "live", "running again", T, |g| main_view(g)["currentState"]["state"] == "Running");
    s.wait_logs("probe", "live", "main", "started\nstarted");
}

#[test]
fn readiness_follows_an_http_probe_in_the_groups_network() {
    let s = TestServer::start();
    s.ensure_rg("probe");
    let body = json!({"location": "westus", "properties": {"osType": "Linux", "containers": [{"name": "web", "properties": {
        "image": image("busybox-httpd:latest"),
        "ports": [{"port": 80}],
        "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}},
        "readinessProbe": {"httpGet": {"path": "/ready.html", "port": 80, "scheme": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                           "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1},
    }}]}});
    assert_eq!(s.put_group("probe", "ready", &body).status, 201);
    // The first checks may find httpd not listening yet; then it answers 404 until the file exists.
    s.wait_group("probe", "ready", "not ready (404)", T, |g| {
        main_view(g)["currentState"]["detailStatus"] == "NotReady" && main_view(g)["events"].to_string().contains("statuscode: 404")
    });
    let (code, _) = exec_piped(&s, "probe", "ready", "sh -c 'echo ok > /www/ready.html'", None);
    assert_eq!(code, 0);
    let g = s.wait_group("probe", "ready", "ready", T, |g| main_view(g)["currentState"]["detailStatus"] == "Ready");
    assert_eq!(main_view(&g)["restartCount"], 0, "readiness must never restart: {g}");
    // Invalid probes are refused up front.
    let mut bad = body.clone();
    bad["properties"]["containers"][0]["properties"]["readinessProbe"] = json!({"httpGet": {"path": "/", "port": 80, "httpHeaders": [{"name": "X\r\nY", "value": "1"}]}});
    let r = s.put_group("probe", "bad", &bad);
    assert_eq!((r.status, r.code()), (400, "InvalidProbe".to_string()), "{}", r.text);
}

fn md5_hex(s: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("md5sum");
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn secure_values_reach_the_container_but_no_api_log_export_or_store_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start();
    s.ensure_rg("sec");
    let (env_secret, reg_secret, vol_secret_b64) = ("sv-topsecret-4711", "regpass-0815-secret", "dm9sdW1lLXNlY3JldC0yMjI=");
    let mut body = simple_group(&image("busybox:latest"), &["sh", "-c", "printf %s \"$S\" | md5sum; sleep 3600"]);
    let p = &mut body["properties"];
    p["containers"][0]["properties"]["environmentVariables"] = json!([{"name": "S", "secureValue": env_secret}, {"name": "PLAIN", "value": "visible"}]);
    p["containers"][0]["properties"]["volumeMounts"] = json!([{"name": "v", "mountPath": "/v"}]);
    p["volumes"] = json!([{"name": "v", "secret": {"f": vol_secret_b64}}]);
    p["imageRegistryCredentials"] = json!([{"server": "registry.invalid", "username": "u", "password": reg_secret}]);
    let r = s.put_group("sec", "g", &body);
    assert_eq!(r.status, 201, "{}", r.text);
    s.wait_state("sec", "g", "Running");
    // The container got the clear value.
    s.wait_logs("sec", "g", "main", &md5_hex(env_secret));
    assert_eq!(exec_piped(&s, "sec", "g", "cat /v/f", None).1, "volume-secret-222");

    let secrets = [env_secret, reg_secret, vol_secret_b64, "volume-secret-222"];
    let mut served = vec![
        s.get_group("sec", "g").text,
        s.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}"), None).text,
        s.cli_ok(&["container", "show", "-g", "sec", "-n", "g", "-o", "json"]),
        s.logs("sec", "g", "main"),
    ];
    let export = s.data_dir.join("exported.yaml");
    s.cli_ok(&["container", "export", "-g", "sec", "-n", "g", "-f", &export.to_string_lossy()]);
    served.push(std::fs::read_to_string(&export).unwrap());
    served.push(s.server_log());
    for text in &served {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
    }
    assert!(served[0].contains("visible"));
    // At rest: the store files hold no clear text, and the key file is private.
    let mut store_bytes = Vec::new();
    for f in ["skiff.db", "skiff.db-wal"] {
        store_bytes.extend(std::fs::read(s.data_dir.join(f)).unwrap_or_default());
    }
    assert!(store_bytes.len() > 1000);
    for secret in secrets {
        assert!(!store_bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in clear in the store");
    }
    assert!(store_bytes.windows(13).any(|w| w == b"skiff-sealed:"), "no sealed values in the store");
    let mode = std::fs::metadata(s.data_dir.join("secret.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Plans and bundles (which must hold the clear value for the runtime) are root-only: the
    // groups directory cannot be listed and the files are 0600.
    let mode = std::fs::metadata(s.data_dir.join("groups")).unwrap().permissions().mode();
    assert_eq!(mode & 0o066, 0, "groups/ is not listable: {mode:o}");
    let uid = s.group_uid("sec", "g");
    for f in ["plan.json", "bundles/main/config.json"] {
        let mode = std::fs::metadata(s.data_dir.join("groups").join(&uid).join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
    }

    // An update that changes only a plain value still re-seals and keeps the container's view.
    body["properties"]["containers"][0]["properties"]["environmentVariables"][1]["value"] = json!("visible-2");
    assert_eq!(s.put_group("sec", "g", &body).status, 200);
    s.wait_group("sec", "g", "the update", T, |g| g["properties"]["provisioningState"] == "Succeeded" && g.to_string().contains("visible-2"));
    s.wait_logs("sec", "g", "main", &format!("{}\n{}", md5_hex(env_secret), md5_hex(env_secret)).replace("\n", "  -\n"));
}

/// An exec probe that outlives its `timeoutSeconds` fails and is killed: a hung check must
/// not leave one more process in the container every period.
#[test]
fn a_hung_exec_probe_times_out_and_is_killed() {
    let s = TestServer::start();
    s.ensure_rg("probe");
    let mut body = simple_group(&image("busybox:latest"), &["sh", "-c", "sleep 3600"]);
    body["properties"]["containers"][0]["properties"]["readinessProbe"] =
        json!({"exec": {"command": ["sleep", "7391"]}, "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1});
    assert_eq!(s.put_group("probe", "hung", &body).status, 201);
    let g = s.wait_group("probe", "hung", "three timed-out probes", T, |g| {
        main_view(g)["events"].as_array().into_iter().flatten().any(|e| e["message"].as_str().is_some_and(|m| m.contains("timed out")) && e["count"].as_i64().unwrap_or(0) >= 3)
    });
    assert_eq!(main_view(&g)["currentState"]["detailStatus"], "NotReady", "{g}");
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x007391\x00"))
        .count();
    assert!(sleepers <= 1, "{sleepers} timed-out probe processes are still running (only the one in flight may be)");
}
