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

// ---------------------------------------------------------------------------------------------
// Resource metrics (e2e_metrics.rs)

/// Sampling interval of the metrics test daemons.
pub const METRICS_INTERVAL_MS: u64 = 300;

/// A daemon sampling resource metrics every [`METRICS_INTERVAL_MS`].
pub fn start_metrics_server() -> TestServer {
    TestServer::start_with(&["--metrics-interval-ms", &METRICS_INTERVAL_MS.to_string()])
}

/// `GET /metrics`, checked line by line against the OpenMetrics text format: `# HELP/TYPE/UNIT`
/// comments, samples `name{label="v",…} value`, and the closing `# EOF`. Returns the samples
/// as (name with labels, value).
pub fn scrape(s: &TestServer) -> Vec<(String, f64)> {
    let r = s.request("GET", "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/openmetrics-text"), "content type {ct}");
    assert!(r.text.ends_with("# EOF\n"), "no # EOF:\n{}", r.text);
    let mut out = Vec::new();
    for line in r.text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            assert!(["HELP ", "TYPE ", "UNIT ", "EOF"].iter().any(|p| c.starts_with(p)), "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad metric name in: {line}");
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in: {line}");
            for pair in labels[1..labels.len() - 1].split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair} in: {line}"));
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label name {k} in: {line}");
                assert!(v.starts_with('"'), "unquoted label value in: {line}");
            }
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        out.push((series.to_string(), v));
    }
    out
}

/// The value of the sample whose series starts with `name{` and has every label of `labels`.
pub fn sample(samples: &[(String, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(series, _)| (series == name || series.starts_with(&format!("{name}{{"))) && labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, v)| *v)
}

/// The Azure Monitor-shaped metrics view of a group.
pub fn azure_metrics(s: &TestServer, rg: &str, name: &str, query: &str) -> Value {
    let r = s.request("GET", &format!("{}/providers/Microsoft.Insights/metrics?api-version=2018-01-01&{query}", TestServer::group_path(rg, name)), None);
    assert_eq!(r.status, 200, "metrics view: {}", r.text);
    r.body
}

/// The data points (averages) of `metric` for `container` (`None`: the group-level series).
pub fn points(view: &Value, metric: &str, container: Option<&str>) -> Vec<f64> {
    let m = view["value"].as_array().into_iter().flatten().find(|m| m["name"]["value"] == metric).unwrap_or_else(|| panic!("no {metric} in {view}"));
    let ts = m["timeseries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ts| match container {
            Some(c) => ts["metadatavalues"].as_array().into_iter().flatten().any(|mv| mv["name"]["value"] == "containerName" && mv["value"] == c),
            None => ts["metadatavalues"].as_array().is_some_and(|a| a.is_empty()),
        })
    ;
    // No series before the first sample of the group.
    let Some(ts) = ts else { return Vec::new() };
    ts["data"].as_array().into_iter().flatten().filter_map(|d| d["average"].as_f64()).collect()
}

/// Poll the metrics view until `pred` holds for the points of `metric`; returns them.
pub fn wait_points(s: &TestServer, rg: &str, name: &str, metric: &str, container: Option<&str>, what: &str, pred: impl Fn(&[f64]) -> bool) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let v = azure_metrics(s, rg, name, &format!("metricnames={metric}&interval=PT1S"));
        last = points(&v, metric, container);
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; last {metric} points: {last:?}");
}
