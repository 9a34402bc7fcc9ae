//! Helpers of the metering end-to-end tests: a daemon with a short usage flush interval and
//! small quotas, usage queries, and a `skiff events --follow` process read line by line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TestServer, API, SUB};

/// Usage flush interval of the test daemons.
pub const FLUSH_MS: u64 = 300;

static ENV: Once = Once::new();

/// A daemon flushing usage every [`FLUSH_MS`], with quotas of 3 cores and 2 GB per subscription.
pub fn start_server() -> TestServer {
    ENV.call_once(|| {
        // The flags read these; every test of this binary wants the same values.
        std::env::set_var("SKIFF_USAGE_FLUSH_MS", FLUSH_MS.to_string());
        std::env::set_var("SKIFF_QUOTA_CORES", "3");
        std::env::set_var("SKIFF_QUOTA_MEMORY_GB", "2");
        std::env::set_var("SKIFF_QUOTA_CONTAINER_GROUPS", "10");
    });
    TestServer::start()
}

pub fn usage(s: &TestServer, query: &str) -> Value {
    let r = s.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/usageRecords?{API}&{query}"), None);
    assert_eq!(r.status, 200, "usageRecords: {}", r.text);
    r.body
}

/// Milliseconds of an RFC 3339 time.
pub fn ms(t: &Value) -> i64 {
    t.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()).unwrap_or_else(|| panic!("not a time: {t}")).as_millisecond()
}

pub fn post(s: &TestServer, rg: &str, name: &str, action: &str) {
    let r = s.request("POST", &format!("{}/{action}?{API}", TestServer::group_path(rg, name)), None);
    assert!(matches!(r.status, 200 | 202 | 204), "{action}: {} {}", r.status, r.text);
}

/// `skiff events --follow -o json`, its lines delivered through a channel.
pub struct Follower {
    child: Child,
    rx: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Follower {
    pub fn start(s: &TestServer, rg: &str) -> Follower {
        let mut child = s
            .cli_command(&["events", "--follow", "-g", rg, "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("skiff events --follow");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Follower { child, rx, seen: Vec::new() }
    }

    /// Read events until one matches `pred`; returns it.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("the follower never saw {what}; saw:\n{}", self.seen.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"));
    }

    /// Position of the first event of `group` (and container) of `kind`.
    pub fn index(&self, group: &str, container: Option<&str>, kind: &str) -> Option<usize> {
        self.seen.iter().position(|v| v["containerGroup"] == group && v["kind"] == kind && container.is_none_or(|c| v["container"] == c))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
