//! End-to-end tests of the client commands against a tiny in-process fake ARM server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Parser;
use serde_json::{json, Value};
use skiff_cli::{Cli, CliError};

#[derive(Default)]
struct Fake {
    base: String,
    /// (method, path?query, body)
    requests: Vec<(String, String, Value)>,
    rgs: HashMap<String, Value>,
    groups: HashMap<String, Value>,
    op_polls: HashMap<String, u32>,
}

type Shared = Arc<Mutex<Fake>>;

fn cloud_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn group_body(name: &str, rg: &str, spec: &Value, with_view: bool, failed: bool) -> Value {
    let mut g = spec.clone();
    g["id"] = json!(format!("/subscriptions/sub/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}"));
    g["name"] = json!(name);
    g["type"] = json!("Microsoft.ContainerInstance/containerGroups");
    g["properties"]["provisioningState"] = json!(if failed { "Failed" } else { "Succeeded" });
    if with_view {
        g["properties"]["instanceView"] = json!({
            "state": if failed { "Failed" } else { "Running" },
            "events": [{"count": 1, "lastTimestamp": "2024-01-01T00:00:00Z", "name": if failed { "Failed" } else { "Pulled" },
                        "message": if failed { "Failed to pull image \"nope:latest\": manifest unknown" } else { "pulled" },
                        "type": if failed { "Warning" } else { "Normal" }}]
        });
    }
    g
}

async fn handle(State(st): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let _ = headers;
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let mut f = st.lock().unwrap();
    f.requests.push((method.to_string(), format!("{path}?{query}"), body.clone()));
    if !query.contains("api-version=") {
        return cloud_error(StatusCode::BAD_REQUEST, "MissingApiVersionParameter", "api-version required");
    }
    // Normalise like ARM: case-insensitive, `//` collapsed.
    let norm = path.to_ascii_lowercase().replace("//", "/");
    let parts: Vec<&str> = norm.trim_start_matches('/').split('/').collect();
    let base = f.base.clone();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["subscriptions", _, "resourcegroups", rg]) => match f.rgs.get(*rg) {
            Some(v) => axum::Json(v.clone()).into_response(),
            None => cloud_error(StatusCode::NOT_FOUND, "ResourceGroupNotFound", &format!("Resource group '{rg}' could not be found.")),
        },
        ("PUT", ["subscriptions", _, "resourcegroups", rg]) => {
            let v = json!({"id": format!("/subscriptions/sub/resourceGroups/{rg}"), "name": rg, "location": body["location"],
                           "properties": {"provisioningState": "Succeeded"}});
            f.rgs.insert(rg.to_string(), v.clone());
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        ("PUT", ["subscriptions", _, "resourcegroups", rg, "providers", "microsoft.containerinstance", "containergroups", name]) => {
            let name = name.to_string();
            f.groups.insert(name.clone(), json!({"rg": rg, "spec": body}));
            f.op_polls.insert(name.clone(), 0);
            let op = format!("{base}/subscriptions/sub/providers/Microsoft.ContainerInstance/locations/westus/operations/{name}?api-version=2018-06-01");
            let mut resp = (StatusCode::CREATED, axum::Json(json!({"name": name, "properties": {"provisioningState": "Pending"}}))).into_response();
            resp.headers_mut().insert("Azure-AsyncOperation", op.parse().unwrap());
            resp.headers_mut().insert("Retry-After", "1".parse().unwrap());
            resp
        }
        ("GET", ["subscriptions", _, "providers", "microsoft.containerinstance", "locations", _, "operations", id]) => {
            let n = f.op_polls.entry(id.to_string()).or_default();
            *n += 1;
            let polls = *n;
            if polls < 3 {
                axum::Json(json!({"status": "InProgress", "properties": {"pullProgress": [
                    {"image": "busybox", "totalBytes": 1000, "doneBytes": 500 * polls, "layersTotal": 1, "layersDone": 0}]}}))
                .into_response()
            } else if id.starts_with("bad") {
                axum::Json(json!({"status": "Failed", "error": {"code": "InaccessibleImage", "message": "The image 'nope:latest' is not accessible."}}))
                    .into_response()
            } else {
                axum::Json(json!({"status": "Succeeded"})).into_response()
            }
        }
        ("GET", ["subscriptions", _, "resourcegroups", rg, "providers", "microsoft.containerinstance", "containergroups", name]) => {
            match f.groups.get(*name) {
                Some(g) => axum::Json(group_body(name, rg, &g["spec"], true, name.starts_with("bad"))).into_response(),
                None => cloud_error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' under resource group '{rg}' was not found.")),
            }
        }
        ("DELETE", ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.containerinstance", "containergroups", name]) => {
            if f.groups.remove(*name).is_none() {
                return StatusCode::NO_CONTENT.into_response();
            }
            f.op_polls.insert(name.to_string(), 0);
            let op = format!("{base}/subscriptions/sub/providers/Microsoft.ContainerInstance/locations/westus/operations/{name}?api-version=2018-06-01");
            let mut resp = StatusCode::ACCEPTED.into_response();
            resp.headers_mut().insert("Azure-AsyncOperation", op.parse().unwrap());
            resp
        }
        ("GET", ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.containerinstance", "containergroups", _, "containers", _, "logs"]) => {
            let all = "line1\nline2\nline3\n";
            let content = if query.contains("tail=1") { "line3\n" } else { all };
            axum::Json(json!({"content": content})).into_response()
        }
        // Subscription list: three pages of one group each, linked by absolute nextLinks
        // (the last without api-version, which the client must re-add).
        ("GET", ["subscriptions", _, "providers", "microsoft.containerinstance", "containergroups"]) => {
            let page = query.split('&').find_map(|kv| kv.strip_prefix("page=")).unwrap_or("1").to_string();
            let item = |n: &str| json!({"id": format!("/subscriptions/sub/resourceGroups/rg{n}/providers/Microsoft.ContainerInstance/containerGroups/g{n}"),
                                         "name": format!("g{n}"), "location": "westus",
                                         "properties": {"provisioningState": "Succeeded", "osType": "Linux",
                                         "containers": [{"name": "c", "properties": {"image": format!("img{n}"), "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}}}]}});
            let path = "/subscriptions/sub/providers/Microsoft.ContainerInstance/containerGroups";
            match page.as_str() {
                "1" => axum::Json(json!({"value": [item("1")], "nextLink": format!("{base}{path}?api-version=2023-05-01&page=2")})).into_response(),
                "2" => axum::Json(json!({"value": [item("2")], "nextLink": format!("{base}{path}?page=3")})).into_response(),
                _ => axum::Json(json!({"value": [item("3")], "nextLink": null})).into_response(),
            }
        }
        _ => cloud_error(StatusCode::NOT_FOUND, "NotFound", &format!("no route {method} {path}")),
    }
}

async fn start() -> (Shared, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let st: Shared = Arc::new(Mutex::new(Fake { base: base.clone(), ..Default::default() }));
    let app = Router::new().fallback(handle).with_state(st.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (st, base)
}

async fn run(base: &str, args: &[&str]) -> (Result<(), CliError>, String) {
    let mut argv = vec!["skiff", "--server", base, "--subscription", "sub"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let mut out: Vec<u8> = Vec::new();
    let res = skiff_cli::execute(cli, &mut out).await;
    (res, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn create_polls_the_operation_and_prints_the_group() {
    let (st, base) = start().await;
    let (res, out) = run(&base, &[
        "container", "create", "-g", "rg", "-n", "web", "--image", "busybox", "--command-line", "sh -c 'echo hi'",
        "-e", "A=1", "--secure-environment-variables", "S=hidden", "--ports", "8080", "--ip-address", "Public", "-l", "eastus",
    ])
    .await;
    res.unwrap();
    assert!(out.starts_with("Name"), "{out}");
    assert!(out.contains("web") && out.contains("Running") && out.contains("Succeeded"), "{out}");
    assert!(!out.contains("hidden"));

    let f = st.lock().unwrap();
    let reqs: Vec<String> = f.requests.iter().map(|(m, p, _)| format!("{m} {}", p.split('?').next().unwrap())).collect();
    // RG missing → created; PUT; op polled until Succeeded (3 polls); final GET.
    assert_eq!(reqs[0], "GET /subscriptions/sub/resourcegroups/rg");
    assert_eq!(reqs[1], "PUT /subscriptions/sub/resourcegroups/rg");
    assert_eq!(f.requests[1].2, json!({"location": "eastus"}));
    assert_eq!(reqs[2], "PUT /subscriptions/sub/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/web");
    assert!(f.requests[2].1.ends_with("?api-version=2023-05-01"));
    let ops = reqs.iter().filter(|r| r.contains("/operations/web")).count();
    assert_eq!(ops, 3, "{reqs:?}");
    assert_eq!(reqs.last().unwrap(), "GET /subscriptions/sub/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/web");

    let body = &f.requests[2].2;
    assert_eq!(body["location"], json!("eastus"));
    let c = &body["properties"]["containers"][0];
    assert_eq!(c["name"], json!("web"));
    assert_eq!(c["properties"]["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(c["properties"]["environmentVariables"], json!([{"name": "A", "value": "1"}, {"name": "S", "secureValue": "hidden"}]));
    assert_eq!(c["properties"]["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
    assert_eq!(body["properties"]["ipAddress"], json!({"type": "Public", "ports": [{"port": 8080, "protocol": "TCP"}]}));
}

#[tokio::test]
async fn create_json_output_and_existing_rg_location() {
    let (st, base) = start().await;
    run(&base, &["group", "create", "-n", "rg", "-l", "northeurope"]).await.0.unwrap();
    let (res, out) = run(&base, &["-o", "json", "container", "create", "-g", "rg", "-n", "api", "--image", "busybox"]).await;
    res.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], json!("api"));
    assert_eq!(v["properties"]["instanceView"]["state"], json!("Running"));
    let f = st.lock().unwrap();
    let put = f.requests.iter().find(|(m, p, _)| m == "PUT" && p.contains("containerGroups")).unwrap();
    assert_eq!(put.2["location"], json!("northeurope"), "the group takes the resource group's location");
}

#[tokio::test]
async fn create_from_yaml_file_uses_its_api_version_and_az_path() {
    let (st, base) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.yaml");
    std::fs::write(
        &file,
        "apiVersion: '2021-10-01'\nname: fromfile\ntype: Microsoft.ContainerInstance/containerGroups\nproperties:\n  osType: Linux\n  containers:\n  - name: c\n    properties:\n      image: busybox\n      resources: {requests: {cpu: 1, memoryInGB: 1.5}}\n",
    )
    .unwrap();
    let (res, _out) = run(&base, &["container", "create", "-g", "rg", "-f", file.to_str().unwrap(), "--no-wait"]).await;
    res.unwrap();
    {
        let f = st.lock().unwrap();
        let put = f.requests.iter().find(|(m, p, _)| m == "PUT" && p.contains("ontainer")).unwrap();
        assert_eq!(put.1, "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.ContainerInstance//containerGroups/fromfile?api-version=2021-10-01");
        assert_eq!(put.2["apiVersion"], json!("2021-10-01"));
        assert_eq!(put.2["location"], json!("westus"), "filled from the resource group created on the fly");
        assert_eq!(put.2["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"], json!(1));
        // --no-wait: no operation polling.
        assert!(!f.requests.iter().any(|(_, p, _)| p.contains("/operations/")));
    }
    // A -n that disagrees with the file is refused before anything is sent.
    let n = st.lock().unwrap().requests.len();
    let (res, _) = run(&base, &["container", "create", "-g", "rg", "-n", "other", "-f", file.to_str().unwrap()]).await;
    assert!(res.unwrap_err().to_string().contains("does not match"));
    assert_eq!(st.lock().unwrap().requests.len(), n);
}

#[tokio::test]
async fn failed_create_exits_nonzero() {
    let (_st, base) = start().await;
    let (res, out) = run(&base, &["container", "create", "-g", "rg", "-n", "bad", "--image", "nope"]).await;
    assert!(matches!(res, Err(CliError::Silent)), "{res:?}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn list_follows_next_links() {
    let (st, base) = start().await;
    let (res, out) = run(&base, &["container", "list"]).await;
    res.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[2].starts_with("g1") && lines[3].starts_with("g2") && lines[4].starts_with("g3"), "{out}");
    assert!(lines[4].contains("rg3") && lines[4].contains("img3"));
    {
        let f = st.lock().unwrap();
        assert_eq!(f.requests.len(), 3);
        assert!(f.requests[2].1.contains("page=3") && f.requests[2].1.contains("api-version=2023-05-01"));
    }
    let (res, out) = run(&base, &["-o", "json", "container", "list"]).await;
    res.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn errors_are_one_liners() {
    let (_st, base) = start().await;
    let (res, _) = run(&base, &["container", "show", "-g", "rg", "-n", "missing"]).await;
    let e = res.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ResourceNotFound: The Resource 'Microsoft.ContainerInstance/containerGroups/missing' under resource group 'rg' was not found."
    );
    // Nothing listens on port 1.
    let (res, _) = run("http://127.0.0.1:1", &["container", "list"]).await;
    assert_eq!(res.unwrap_err().to_string(), "cannot reach the Skiff server at http://127.0.0.1:1 (is `skiff server` running?)");
}

#[tokio::test]
async fn logs_show_delete_export() {
    let (st, base) = start().await;
    run(&base, &["container", "create", "-g", "rg", "-n", "web", "--image", "busybox"]).await.0.unwrap();

    let (res, out) = run(&base, &["container", "logs", "-g", "rg", "-n", "web"]).await;
    res.unwrap();
    assert_eq!(out, "line1\nline2\nline3\n");
    let (res, out) = run(&base, &["container", "logs", "-g", "rg", "-n", "web", "--tail", "1", "--timestamps"]).await;
    res.unwrap();
    assert_eq!(out, "line3\n");
    assert!(st.lock().unwrap().requests.iter().any(|(_, p, _)| p.contains("/containers/web/logs?") && p.contains("tail=1") && p.contains("timestamps=true")));

    let (res, out) = run(&base, &["container", "show", "-g", "rg", "-n", "web"]).await;
    res.unwrap();
    assert!(out.contains("Events:") && out.contains("pulled"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.yaml");
    run(&base, &["container", "export", "-g", "rg", "-n", "web", "-f", file.to_str().unwrap()]).await.0.unwrap();
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.starts_with("apiVersion:"), "{yaml}");
    assert!(!yaml.contains("instanceView") && !yaml.contains("provisioningState") && !yaml.contains("/subscriptions/"), "{yaml}");

    // Delete without --yes and without a terminal is refused (skipped when the tests run
    // with a terminal on stdin: the command would prompt).
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let (res, _) = run(&base, &["container", "delete", "-g", "rg", "-n", "web"]).await;
        assert!(res.unwrap_err().to_string().contains("--yes"));
    }
    run(&base, &["container", "delete", "-g", "rg", "-n", "web", "--yes"]).await.0.unwrap();
    let f = st.lock().unwrap();
    assert!(f.groups.is_empty());
    let last = &f.requests.last().unwrap().1;
    assert!(last.contains("/operations/web"), "delete polled its operation: {last}");
}
