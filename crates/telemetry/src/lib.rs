//! Skiff's metrics: the resource samples of container groups (kept in a short in-memory ring
//! per group for the Azure Monitor-shaped view) and the Prometheus registry with the
//! daemon's own metrics. One [`Telemetry`] is shared by the agent (which samples groups and
//! counts pulls, start phases and reconcile errors) and the API (which counts requests and
//! serves `/metrics` and the metrics view). Documented in docs/METERING.md.

pub mod azure;
pub mod rates;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// One container's figures of a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    /// CPU used since the previous sample; `None` on the first sample of a container.
    pub cpu_millicores: Option<f64>,
    /// Working set (usage minus inactive file cache).
    pub memory_bytes: u64,
}

/// One sample of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSample {
    /// Wall-clock time of the sample (ms since the epoch).
    pub t_ms: i64,
    pub containers: Vec<ContainerSample>,
    /// Bytes received / transmitted by the group's network namespace (non-loopback), totals.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Rates since the previous sample; `None` on the first one.
    pub rx_bytes_per_second: Option<f64>,
    pub tx_bytes_per_second: Option<f64>,
}

impl GroupSample {
    pub fn cpu_millicores(&self) -> Option<f64> {
        let v: Vec<f64> = self.containers.iter().filter_map(|c| c.cpu_millicores).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }

    pub fn memory_bytes(&self) -> u64 {
        self.containers.iter().map(|c| c.memory_bytes).sum()
    }
}

/// Who a group is, for metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupIdent {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;
type F64Gauge = Gauge<f64, AtomicU64>;
/// A group's identity, the containers it had gauges for, and its samples.
type RingEntry = (GroupIdent, Vec<String>, VecDeque<GroupSample>);

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn phase_histogram() -> Histogram {
    // 5 ms … ~80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The start phases recorded for each start of a group, in order.
pub const PHASES: &[&str] = &["image_ready", "sandbox_ready", "started", "ready"];

struct Gauges {
    container_cpu: Family<Labels, F64Gauge>,
    container_memory: Family<Labels, Gauge>,
    group_cpu: Family<Labels, F64Gauge>,
    group_memory: Family<Labels, Gauge>,
    group_rx: Family<Labels, Gauge>,
    group_tx: Family<Labels, Gauge>,
}

pub struct Telemetry {
    registry: Registry,
    api_requests: Family<Labels, Counter>,
    api_latency: HistogramFamily,
    pulls: Counter,
    pull_bytes: Counter,
    pull_failures: Counter,
    start_phases: HistogramFamily,
    reconcile_errors: Family<Labels, Counter>,
    gauges: Gauges,
    /// Samples per group uid, oldest first, at most `ring_len` each.
    ring: Mutex<HashMap<String, RingEntry>>,
    ring_len: usize,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("ring_len", &self.ring_len).finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(Duration::from_secs(10), Duration::from_secs(3600))
    }
}

fn group_labels(g: &GroupIdent) -> Labels {
    vec![("subscription".into(), g.subscription.clone()), ("resource_group".into(), g.resource_group.clone()), ("group".into(), g.name.clone())]
}

fn container_labels(g: &GroupIdent, container: &str) -> Labels {
    let mut l = group_labels(g);
    l.push(("container".into(), container.to_string()));
    l
}

impl Telemetry {
    /// Metrics sampled every `interval`, with `keep` worth of samples per group in the ring.
    pub fn new(interval: Duration, keep: Duration) -> Telemetry {
        let ring_len = (keep.as_millis() / interval.as_millis().max(1)).clamp(2, 100_000) as usize;
        let mut registry = Registry::with_prefix("skiff");
        let api_requests = Family::<Labels, Counter>::default();
        registry.register("api_requests", "API requests served, by route kind and HTTP status", api_requests.clone());
        let api_latency = HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit("api_request_duration", "API request latency, by route kind and HTTP status", Unit::Seconds, api_latency.clone());
        let pulls = Counter::default();
        registry.register("image_pulls", "Image pulls completed", pulls.clone());
        let pull_bytes = Counter::default();
        registry.register_with_unit("image_pull", "Bytes of image layers pulled", Unit::Bytes, pull_bytes.clone());
        let pull_failures = Counter::default();
        registry.register("image_pull_failures", "Image pulls that failed", pull_failures.clone());
        let start_phases = HistogramFamily::new_with_constructor(phase_histogram as fn() -> Histogram);
        registry.register_with_unit("start_phase", "Time from scheduling a group start to each start phase", Unit::Seconds, start_phases.clone());
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register("reconcile_errors", "Errors while driving a group to its desired state, by kind", reconcile_errors.clone());
        let gauges = Gauges {
            container_cpu: Default::default(),
            container_memory: Default::default(),
            group_cpu: Default::default(),
            group_memory: Default::default(),
            group_rx: Default::default(),
            group_tx: Default::default(),
        };
        registry.register("container_cpu_millicores", "CPU used by a container over the last sampling interval (millicores)", gauges.container_cpu.clone());
        registry.register_with_unit("container_memory_working_set", "Memory working set of a container", Unit::Bytes, gauges.container_memory.clone());
        registry.register("group_cpu_millicores", "CPU used by a container group over the last sampling interval (millicores)", gauges.group_cpu.clone());
        registry.register_with_unit("group_memory_working_set", "Memory working set of a container group", Unit::Bytes, gauges.group_memory.clone());
        registry.register_with_unit("group_network_receive", "Bytes received by a container group (all non-loopback interfaces of its namespace)", Unit::Bytes, gauges.group_rx.clone());
        registry.register_with_unit("group_network_transmit", "Bytes transmitted by a container group (all non-loopback interfaces of its namespace)", Unit::Bytes, gauges.group_tx.clone());
        Telemetry {
            registry,
            api_requests,
            api_latency,
            pulls,
            pull_bytes,
            pull_failures,
            start_phases,
            reconcile_errors,
            gauges,
            ring: Mutex::new(HashMap::new()),
            ring_len,
        }
    }

    /// The registry in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# encoding failed: {e}\n# EOF\n");
        }
        out
    }

    /// One API request: its route kind (e.g. `GetGroup`), HTTP status and duration.
    pub fn api_request(&self, kind: &str, status: u16, elapsed: Duration) {
        let labels: Labels = vec![("route".into(), kind.to_string()), ("status".into(), status.to_string())];
        self.api_requests.get_or_create(&labels).inc();
        self.api_latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    pub fn pull_succeeded(&self, bytes: u64) {
        self.pulls.inc();
        self.pull_bytes.inc_by(bytes);
    }

    pub fn pull_failed(&self) {
        self.pull_failures.inc();
    }

    /// A start phase was reached `since_scheduled` after the start was scheduled.
    pub fn start_phase(&self, phase: &str, since_scheduled: Duration) {
        self.start_phases.get_or_create(&vec![("phase".into(), phase.to_string())]).observe(since_scheduled.as_secs_f64());
    }

    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors.get_or_create(&vec![("kind".into(), kind.to_string())]).inc();
    }

    /// Record a sample of a running group: set its gauges and append it to its ring.
    pub fn record(&self, uid: &str, ident: &GroupIdent, sample: GroupSample) {
        let g = &self.gauges;
        let gl = group_labels(ident);
        if let Some(cpu) = sample.cpu_millicores() {
            g.group_cpu.get_or_create(&gl).set(cpu);
        }
        g.group_memory.get_or_create(&gl).set(sample.memory_bytes() as i64);
        g.group_rx.get_or_create(&gl).set(sample.rx_bytes as i64);
        g.group_tx.get_or_create(&gl).set(sample.tx_bytes as i64);
        for c in &sample.containers {
            let cl = container_labels(ident, &c.name);
            if let Some(cpu) = c.cpu_millicores {
                g.container_cpu.get_or_create(&cl).set(cpu);
            }
            g.container_memory.get_or_create(&cl).set(c.memory_bytes as i64);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let entry = ring.entry(uid.to_string()).or_insert_with(|| (ident.clone(), Vec::new(), VecDeque::new()));
        for c in &sample.containers {
            if !entry.1.contains(&c.name) {
                entry.1.push(c.name.clone());
            }
        }
        entry.2.push_back(sample);
        while entry.2.len() > self.ring_len {
            entry.2.pop_front();
        }
    }

    /// The group stopped running: drop its gauges (the ring keeps its history).
    pub fn idle(&self, uid: &str) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let Some((ident, containers, _)) = ring.get(uid) else { return };
        let g = &self.gauges;
        let gl = group_labels(ident);
        for f in [&g.group_memory, &g.group_rx, &g.group_tx] {
            f.remove(&gl);
        }
        g.group_cpu.remove(&gl);
        for c in containers {
            let cl = container_labels(ident, c);
            g.container_cpu.remove(&cl);
            g.container_memory.remove(&cl);
        }
    }

    /// The group is gone: drop its gauges and samples.
    pub fn forget(&self, uid: &str) {
        self.idle(uid);
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    /// Uids of the groups that have samples.
    pub fn sampled_groups(&self) -> Vec<String> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// The samples of a group, oldest first.
    pub fn samples(&self, uid: &str) -> Vec<GroupSample> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).get(uid).map(|e| e.2.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> GroupIdent {
        GroupIdent { subscription: "s".into(), resource_group: "rg".into(), name: "g".into() }
    }

    fn sample(t: i64) -> GroupSample {
        GroupSample { t_ms: t, containers: vec![ContainerSample { name: "c".into(), cpu_millicores: Some(250.0), memory_bytes: 1 << 20 }], rx_bytes: 5, tx_bytes: 7, rx_bytes_per_second: None, tx_bytes_per_second: None }
    }

    #[test]
    fn ring_is_bounded_and_gauges_follow_samples() {
        let t = Telemetry::new(Duration::from_secs(1), Duration::from_secs(3));
        for i in 0..5 {
            t.record("u1", &ident(), sample(i));
        }
        assert_eq!(t.samples("u1").iter().map(|s| s.t_ms).collect::<Vec<_>>(), [2, 3, 4]);
        let text = t.encode();
        assert!(text.contains(r#"skiff_container_cpu_millicores{subscription="s",resource_group="rg",group="g",container="c"} 250.0"#), "{text}");
        assert!(text.contains(r#"skiff_group_network_transmit_bytes{subscription="s",resource_group="rg",group="g"} 7"#), "{text}");
        t.idle("u1");
        assert!(!t.encode().contains("container=\"c\""));
        assert_eq!(t.samples("u1").len(), 3);
        t.forget("u1");
        assert!(t.samples("u1").is_empty());
    }

    #[test]
    fn daemon_metrics_are_encoded() {
        let t = Telemetry::default();
        t.api_request("GetGroup", 200, Duration::from_millis(3));
        t.api_request("GetGroup", 200, Duration::from_millis(5));
        t.pull_succeeded(1000);
        t.pull_failed();
        t.start_phase("ready", Duration::from_millis(120));
        t.reconcile_error("provision");
        let text = t.encode();
        for needle in [
            r#"skiff_api_requests_total{route="GetGroup",status="200"} 2"#,
            r#"skiff_api_request_duration_seconds_count{route="GetGroup",status="200"} 2"#,
            "skiff_image_pulls_total 1",
            "skiff_image_pull_bytes_total 1000",
            "skiff_image_pull_failures_total 1",
            r#"skiff_start_phase_seconds_count{phase="ready"} 1"#,
            r#"skiff_reconcile_errors_total{kind="provision"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
