//! Shared end-to-end harness: a real `skiff server` per test (own port, data dir, cgroup
//! parent and run dir, so tests run in parallel), driven over HTTP and through the CLI, and
//! torn down completely even when the test fails.
#![allow(dead_code)]

pub mod net;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const SUB: &str = "00000000-0000-0000-0000-000000000000";
pub const API: &str = "api-version=2023-05-01";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn skiff_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// The anonymous test registry started by `scripts/test-fixture.sh`.
pub fn registry() -> String {
    std::env::var("SKIFF_TEST_REGISTRY").expect("SKIFF_TEST_REGISTRY is not set: run the suite with scripts/test.sh, which starts the local registries")
}

/// The htpasswd-protected test registry.
pub fn auth_registry() -> (String, String, String) {
    let host = std::env::var("SKIFF_TEST_REGISTRY_AUTH").expect("SKIFF_TEST_REGISTRY_AUTH is not set: run the suite with scripts/test.sh");
    let user = std::env::var("SKIFF_TEST_REGISTRY_USER").unwrap_or_else(|_| "skiff".into());
    let pass = std::env::var("SKIFF_TEST_REGISTRY_PASSWORD").unwrap_or_else(|_| "skiff-pass".into());
    (host, user, pass)
}

pub fn image(name: &str) -> String {
    format!("{}/{name}", registry())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    pub fn code(&self) -> String {
        self.body["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

pub struct TestServer {
    pub port: u16,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
    /// Extra `skiff server` flags of this test.
    pub extra_args: Vec<String>,
    child: Option<Child>,
    http: reqwest::blocking::Client,
    /// Run the daemon with `nsenter --net=/run/netns/<name>` and these extra arguments
    /// (networking tests); `None`: host namespace, networking off.
    pub netns: Option<(String, Vec<String>)>,
    /// Serve TLS with the server's own local CA (default: plain HTTP on loopback, which the
    /// server accepts only there).
    pub tls: bool,
    /// The admin token the server wrote on first start; `request`/`raw` send it.
    pub token: String,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_full(&[], None, false)
    }

    /// A server with extra `skiff server` flags.
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        Self::start_full(extra_args, None, false)
    }

    /// A server inside the network namespace `netns.0` with networking flags `netns.1`.
    pub fn start_in_netns(netns: Option<(String, Vec<String>)>) -> TestServer {
        Self::start_full(&[], netns, false)
    }

    /// A server serving HTTPS with its local CA (`<data-dir>/tls/ca.pem`).
    pub fn start_tls() -> TestServer {
        Self::start_full(&[], None, true)
    }

    fn start_full(extra_args: &[&str], netns: Option<(String, Vec<String>)>, tls: bool) -> TestServer {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        // Short paths: unix socket paths of supervisors live beneath the data dir.
        let data_dir = PathBuf::from(format!("/tmp/skf-e2e-{tag}"));
        let run_dir = PathBuf::from(format!("/run/skf-e2e-{tag}"));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut s = TestServer {
            port: free_port(),
            data_dir,
            run_dir,
            cgroup_parent: format!("skiff-e2e-{tag}"),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client"),
            netns,
            tls,
            token: String::new(),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "https" } else { "http" }, self.port)
    }

    /// An HTTP client that trusts the server's CA (TLS mode); `token` is sent as bearer if given.
    pub fn client_with(&self, token: Option<&str>) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        if self.tls {
            let pem = std::fs::read(self.data_dir.join("tls/ca.pem")).expect("the server's CA");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"));
        }
        if let Some(t) = token {
            let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).expect("token header");
            b = b.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, v)]));
        }
        b.build().expect("http client")
    }

    /// Start (or restart) the daemon on the same data dir.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(format!("{}.server.log", self.data_dir.display())).expect("server log");
        let mut cmd = match &self.netns {
            Some((ns, extra)) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(skiff_bin()).arg("server").args(extra);
                c
            }
            None => {
                let mut c = Command::new(skiff_bin());
                c.args(["server", "--network", "false"]);
                c
            }
        };
        let child = cmd
            .args(["--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--cgroup-parent", &self.cgroup_parent])
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(["--stop-grace-ms", "300", "--restart-backoff-ms", "200", "--page-size", "3"])
            .args(&self.extra_args)
            .args(if self.tls { &[][..] } else { &["--insecure-http"][..] })
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The admin token (and in TLS mode the CA) exist once the server has started.
        let ready_files = |s: &Self| s.data_dir.join("admin.token").exists() && (!s.tls || s.data_dir.join("tls/ca.pem").exists());
        while Instant::now() < deadline && !ready_files(self) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("skiff server exited with {status}; log:\n{}", self.server_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.token = std::fs::read_to_string(self.data_dir.join("admin.token")).map(|t| t.trim().to_string()).unwrap_or_default();
        self.http = self.client_with(Some(&self.token.clone()));
        while Instant::now() < deadline {
            if self.http.get(format!("{}/providers/Microsoft.ContainerInstance/operations?{API}", self.url())).send().is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("skiff server exited with {status}; log:\n{}", self.server_log());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("skiff server did not answer within 30 s; log:\n{}", self.server_log());
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(format!("{}.server.log", self.data_dir.display())).unwrap_or_default()
    }

    pub fn server_pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("server running")
    }

    /// `kill -9` the daemon (containers must survive it).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.url(), path) };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response { status, headers, body, text }
    }

    pub fn raw(&self, method: &str, path: &str, body: &str) -> Response {
        let url = format!("{}{}", self.url(), path);
        let resp = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).expect("method"), &url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response { status, headers, body, text }
    }

    pub fn group_path(rg: &str, name: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}")
    }

    pub fn ensure_rg(&self, rg: &str) {
        let r = self.request("PUT", &format!("/subscriptions/{SUB}/resourcegroups/{rg}?api-version=2021-04-01"), Some(&json!({"location": "westus"})));
        assert!(r.status == 200 || r.status == 201, "creating resource group: {} {}", r.status, r.text);
    }

    pub fn put_group(&self, rg: &str, name: &str, body: &Value) -> Response {
        self.request("PUT", &format!("{}?{API}", Self::group_path(rg, name)), Some(body))
    }

    pub fn get_group(&self, rg: &str, name: &str) -> Response {
        self.request("GET", &format!("{}?{API}", Self::group_path(rg, name)), None)
    }

    /// Poll until `pred` holds for the group document, returning it.
    pub fn wait_group(&self, rg: &str, name: &str, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let r = self.get_group(rg, name);
            if r.status == 200 {
                if pred(&r.body) {
                    return r.body;
                }
                last = r.body;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what} of {rg}/{name}; last document:\n{}\nserver log tail:\n{}", serde_json::to_string_pretty(&last).unwrap_or_default(), tail(&self.server_log(), 40));
    }

    pub fn wait_state(&self, rg: &str, name: &str, state: &str) -> Value {
        self.wait_group(rg, name, &format!("state {state}"), Duration::from_secs(60), |g| g["properties"]["instanceView"]["state"] == state)
    }

    pub fn logs(&self, rg: &str, name: &str, container: &str) -> String {
        let r = self.request("GET", &format!("{}/containers/{container}/logs?{API}", Self::group_path(rg, name)), None);
        assert_eq!(r.status, 200, "logs: {}", r.text);
        r.body["content"].as_str().unwrap_or_default().to_string()
    }

    pub fn wait_logs(&self, rg: &str, name: &str, container: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs(rg, name, container);
            if logs.contains(needle) {
                return logs;
            }
            if Instant::now() > deadline {
                panic!("logs of {name}/{container} never contained {needle:?}; got {logs:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn delete_group(&self, rg: &str, name: &str) {
        let r = self.request("DELETE", &format!("{}?{API}", Self::group_path(rg, name)), None);
        assert!(matches!(r.status, 200 | 202 | 204), "delete: {} {}", r.status, r.text);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.get_group(rg, name).status != 404 {
            assert!(Instant::now() < deadline, "group {name} was not deleted in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn group_uid(&self, rg: &str, name: &str) -> String {
        // The uid names the host objects; the group dir holding its plan is the only place it shows.
        let want = name.to_string();
        for entry in std::fs::read_dir(self.data_dir.join("groups")).expect("groups dir").flatten() {
            let plan = entry.path().join("plan.json");
            if let Ok(text) = std::fs::read_to_string(&plan) {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["containers"].as_array().is_some_and(|cs| cs.iter().any(|c| c["hostname"] == want.as_str())) {
                    return entry.file_name().to_string_lossy().to_string();
                }
            }
        }
        panic!("no group directory for {rg}/{name}")
    }

    /// A `skiff` client command aimed at this server, authenticated as its admin.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(skiff_bin());
        cmd.args(args)
            .env("SKIFF_SERVER", self.url())
            .env("SKIFF_CONFIG", self.data_dir.join("no-config.json"))
            // The CLI finds the admin token (and CA) in the server's data dir, as root does.
            .env("SKIFF_DATA_DIR", &self.data_dir)
            .env_remove("SKIFF_TOKEN")
            .env_remove("SKIFF_CA_CERT")
            .stdin(Stdio::null());
        cmd
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run skiff cli")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "skiff {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
        stdout
    }

    /// Delete everything through the API, stop the daemon, and remove what is left.
    fn teardown(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
        let list = self.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}&$top=1000"), None);
        for g in list.body["value"].as_array().cloned().unwrap_or_default() {
            let id = g["id"].as_str().unwrap_or_default();
            let _ = self.request("DELETE", &format!("{id}?{API}"), None);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/containerGroups?{API}&$top=1000"), None);
            if list.body["value"].as_array().is_none_or(|v| v.is_empty()) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let mut child = child;
            let _ = child.wait();
        }
        // Whatever the API could not delete (a failed test may leave the server unusable):
        // the supervisors this server started, and their containers.
        kill_supervisors_beneath(&self.data_dir);
        let crun_root = self.run_dir.join("crun");
        if let Ok(out) = Command::new("crun").arg("--root").arg(&crun_root).args(["list", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("crun").arg("--root").arg(&crun_root).args(["delete", "-f", id]).status();
            }
        }
        unmount_beneath(&self.data_dir);
        unmount_beneath(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        for ctrl in cgroup_controllers() {
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ctrl).join(&self.cgroup_parent));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub fn cgroup_controllers() -> Vec<String> {
    std::fs::read_dir("/sys/fs/cgroup").map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()).unwrap_or_default()
}

/// SIGKILL every supervisor whose group directory is beneath `dir` (found by command line).
fn kill_supervisors_beneath(dir: &Path) {
    let needle = format!("supervisor\0--group-dir\0{}/", dir.display());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Mount points at or beneath `dir`, deepest first.
pub fn mounts_beneath(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

fn unmount_beneath(dir: &Path) {
    for m in mounts_beneath(dir) {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A single-container group document.
pub fn simple_group(image: &str, command: &[&str]) -> Value {
    json!({
        "location": "westus",
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Always",
            "containers": [{
                "name": "main",
                "properties": {
                    "image": image,
                    "command": command,
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}
                }
            }]
        }
    })
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
pub mod pod;
pub mod meter;
