//! TLS, bearer tokens, tenant isolation and rate limits against a real daemon.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

const OTHER_SUB: &str = "11111111-1111-1111-1111-111111111111";

fn send(c: &reqwest::blocking::Client, method: &str, url: &str, body: Option<&Value>) -> Response {
    let mut req = c.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Response { status, headers, body, text }
}

fn create_token(s: &TestServer, spec: Value) -> (String, String) {
    let r = s.request("POST", "/skiff/tokens", Some(&spec));
    assert_eq!(r.status, 201, "{}", r.text);
    (r.body["token"].as_str().unwrap().to_string(), r.body["id"].as_str().unwrap().to_string())
}

#[test]
fn tls_by_default_and_every_call_needs_a_token() {
    let s = TestServer::start_tls();
    assert!(s.url().starts_with("https://"));
    // The admin token file is private; the store holds only its hash.
    let mode = std::fs::metadata(s.data_dir.join("admin.token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(s.server_log().contains(&s.token), "the admin token is shown once on first start");
    let db: Vec<u8> = ["skiff.db", "skiff.db-wal"].iter().flat_map(|f| std::fs::read(s.data_dir.join(f)).unwrap_or_default()).collect();
    assert!(!db.windows(s.token.len()).any(|w| w == s.token.as_bytes()), "the token secret is not stored in clear");

    let list = format!("{}/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}", s.url());
    let anon = s.client_with(None);
    let r = send(&anon, "GET", &list, None);
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.code(), "AuthenticationFailed");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = send(&s.client_with(Some("skf_not-a-token")), "GET", &list, None);
    assert_eq!((r.status, r.code().as_str()), (401, "InvalidAuthenticationToken"));
    assert_eq!(send(&s.client_with(Some(&s.token)), "GET", &list, None).status, 200);
    // The contract is public.
    let r = send(&anon, "GET", &format!("{}/openapi.json", s.url()), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["swagger"], "2.0");

    // A client that does not trust the local CA cannot talk to it; plain HTTP gets nowhere.
    let untrusting = reqwest::blocking::Client::builder().build().unwrap();
    assert!(untrusting.get(&list).send().is_err());
    assert!(!reqwest::blocking::get(format!("http://127.0.0.1:{}/openapi.json", s.port)).map(|r| r.status().is_success()).unwrap_or(false));

    // Root on the same machine: the CLI finds the token and CA in the data dir, no flags.
    s.ensure_rg("cli");
    let out = s.cli_ok(&["container", "list", "-g", "cli", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let out = s.cli(&["container", "list", "-g", "cli", "--token", "skf_wrong"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidAuthenticationToken"));
}

#[test]
fn insecure_http_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(skiff_bin())
        .args(["server", "--insecure-http", "--listen", "0.0.0.0:1", "--data-dir"])
        .arg(dir.path())
        .args(["--run-dir"])
        .arg(dir.path().join("run"))
        .args(["--cgroup-parent", "skiff-e2e-insecure"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only accepted for a loopback"), "{}", String::from_utf8_lossy(&out.stderr));
    for ctrl in cgroup_controllers() {
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(ctrl).join("skiff-e2e-insecure"));
    }
}

#[test]
fn scoped_tokens_cannot_see_or_touch_other_tenants() {
    let s = TestServer::start();
    s.ensure_rg("team-a");
    s.ensure_rg("team-b");
    let doc = simple_group(&image("busybox:latest"), &["sh", "-c", "echo secret-a; sleep 3600"]);
    assert_eq!(s.put_group("team-a", "web", &doc).status, 201);
    s.wait_logs("team-a", "web", "main", "secret-a");

    let (team_b, _) = create_token(&s, json!({"subscription": SUB, "resourceGroup": "team-b"}));
    let (other_sub, _) = create_token(&s, json!({"subscription": OTHER_SUB}));
    let (reader, reader_id) = create_token(&s, json!({"subscription": SUB, "resourceGroup": "team-a", "readOnly": true}));
    let b = s.client_with(Some(&team_b));
    let o = s.client_with(Some(&other_sub));
    let ro = s.client_with(Some(&reader));
    let u = |p: &str| format!("{}{p}", s.url());
    let web = TestServer::group_path("team-a", "web");
    let missing = TestServer::group_path("team-a", "nothing-here");

    // What the admin gets for a resource group that really does not exist.
    let absent_rg = s.request("GET", &format!("{}?{API}", TestServer::group_path("no-such-rg", "web")), None);
    assert_eq!((absent_rg.status, absent_rg.code().as_str()), (404, "ResourceGroupNotFound"), "{}", absent_rg.text);
    for c in [&b, &o] {
        // Exactly the answer a group that does not exist gets: nothing leaks.
        let hidden = send(c, "GET", &u(&format!("{web}?{API}")), None);
        let absent = send(c, "GET", &u(&format!("{missing}?{API}")), None);
        assert_eq!(hidden.status, 404, "{}", hidden.text);
        assert_eq!((hidden.status, hidden.code()), (absent.status, absent.code()));
        assert_eq!(send(c, "GET", &u(&format!("{web}/containers/main/logs?{API}")), None).status, 404);
        let exec = json!({"command": "/bin/sh", "terminalSize": {"rows": 24, "cols": 80}});
        for action in ["exec", "attach"] {
            let r = send(c, "POST", &u(&format!("{web}/containers/main/{action}?{API}")), Some(&exec));
            assert_eq!(r.status, 404, "{action} out of scope: {}", r.text);
            assert!(r.body["webSocketUri"].is_null() && r.body["password"].is_null(), "no session is handed out: {}", r.text);
        }
        assert_eq!(send(c, "DELETE", &u(&format!("{web}?{API}")), None).status, 404);
        assert_eq!(send(c, "POST", &u(&format!("{web}/stop?{API}")), None).status, 404);
        assert_eq!(send(c, "PUT", &u(&format!("{web}?{API}")), Some(&doc)).status, 404);
        assert_eq!(send(c, "PATCH", &u(&format!("{web}?{API}")), Some(&json!({"tags": {"x": "y"}}))).status, 404);
        assert_eq!(send(c, "GET", &u(&format!("/subscriptions/{SUB}/resourceGroups/team-a/providers/Microsoft.ContainerInstance/containerGroups?{API}")), None).status, 404);
    }
    // The same code and message a missing resource group gets (for the other subscription's
    // token, the subscription itself does not exist).
    let r = send(&b, "GET", &u(&format!("{web}?{API}")), None);
    assert_eq!(r.code(), "ResourceGroupNotFound");
    assert_eq!(r.body["error"]["message"], absent_rg.body["error"]["message"].as_str().unwrap().replace("no-such-rg", "team-a"));
    assert_eq!(send(&o, "GET", &u(&format!("{web}?{API}")), None).code(), "SubscriptionNotFound");
    // Host-wide metrics name every tenant's groups: admin only, and no token gets past with a
    // websocket upgrade header either.
    assert!(send(&s.client_with(Some(&s.token)), "GET", &u("/metrics"), None).text.contains("skiff_"));
    let r = send(&b, "GET", &u("/metrics"), None);
    assert_eq!((r.status, r.code().as_str()), (403, "AuthorizationFailed"), "{}", r.text);
    assert!(!r.text.contains("team-a"));
    let sneaky = s.client_with(None).get(u("/metrics")).header("upgrade", "websocket").header("connection", "upgrade").send().unwrap();
    assert_eq!(sneaky.status().as_u16(), 401);
    assert!(!sneaky.text().unwrap_or_default().contains("team-a"));
    // Subscription-wide lists show only what is in scope.
    let sub_list = u(&format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}"));
    let r = send(&b, "GET", &sub_list, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["value"], json!([]));
    let rgs = send(&b, "GET", &u(&format!("/subscriptions/{SUB}/resourcegroups?api-version=2021-04-01")), None);
    let names: Vec<&str> = rgs.body["value"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, vec!["team-b"]);
    assert_eq!(send(&o, "GET", &sub_list, None).status, 404);
    // Tokens are not managed by scoped tokens.
    assert_eq!(send(&b, "GET", &u("/skiff/tokens"), None).status, 403);

    // Read-only inside its scope: reads work, writes are refused.
    let r = send(&ro, "GET", &sub_list, None);
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(1), "{}", r.text);
    assert!(send(&ro, "GET", &u(&format!("{web}/containers/main/logs?{API}")), None).text.contains("secret-a"));
    let r = send(&ro, "POST", &u(&format!("{web}/stop?{API}")), None);
    assert_eq!((r.status, r.code().as_str()), (403, "AuthorizationFailed"));

    // The group survived every attempt.
    assert_eq!(s.get_group("team-a", "web").body["properties"]["instanceView"]["state"], "Running");

    // Revocation takes effect at once (CLI: token list/revoke).
    let listed = s.cli_ok(&["token", "list"]);
    assert!(listed.contains(&reader_id), "{listed}");
    s.cli_ok(&["token", "revoke", &reader_id]);
    let r = send(&ro, "GET", &sub_list, None);
    assert_eq!((r.status, r.code().as_str()), (401, "InvalidAuthenticationToken"));
    assert!(!s.cli_ok(&["token", "list"]).contains(&reader_id));
}

#[test]
fn tokens_are_rate_limited_with_retry_after() {
    let s = TestServer::start();
    let (slow, _) = create_token(&s, json!({"subscription": SUB, "rateLimit": 1}));
    let c = s.client_with(Some(&slow));
    let url = format!("{}/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}", s.url());
    // The bucket holds two requests; the next ones within the same second are refused.
    let statuses: Vec<Response> = (0..5).map(|_| send(&c, "GET", &url, None)).collect();
    let limited = statuses.iter().find(|r| r.status == 429).unwrap_or_else(|| panic!("no 429 in {:?}", statuses.iter().map(|r| r.status).collect::<Vec<_>>()));
    assert_eq!(limited.code(), "TooManyRequests");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Other tokens are not affected.
    assert_eq!(s.request("GET", &url.replacen(&s.url(), "", 1), None).status, 200);
}
