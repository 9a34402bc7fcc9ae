//! The resource sampler: one task that, every `metrics_interval`, reads the cgroupfs and
//! procfs counters of every running group and hands the figures to [`Telemetry`] (Prometheus
//! gauges and the per-group sample ring behind the Azure Monitor-shaped view).
//!
//! Per container (`/<cgroup parent>/<group uid>/<container>`, the cgroup crun creates from
//! the bundle): CPU from `cpuacct.usage` deltas, memory working set from
//! `memory.usage_in_bytes` − `total_inactive_file`. Per group: network bytes of its network
//! namespace, read from `/proc/<pid>/net/dev` of any process of the group (so it works with
//! or without a veth, and needs neither a netlink socket nor entering the namespace). Only
//! file reads, on a blocking thread; the arithmetic is in `skiff_telemetry::rates`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use skiff_model::records::{Desired, GroupRecord, GROUPS_PREFIX};
use skiff_runtime::cgroup;
use skiff_telemetry::{rates, ContainerSample, GroupIdent, GroupSample};

use crate::Shared;

/// Raw counters of one container.
#[derive(Debug, Clone, Default)]
struct ContainerReading {
    name: String,
    cpu_ns: Option<u64>,
    memory_bytes: Option<u64>,
}

/// Raw counters of one group at one instant.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    t_ms: i64,
    containers: Vec<ContainerReading>,
    net: Option<(u64, u64)>,
}

struct Target {
    uid: String,
    ident: GroupIdent,
    containers: Vec<String>,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Where the cgroup controllers the sampler reads are mounted.
#[derive(Debug, Clone)]
struct Mounts {
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
}

fn read_group(m: &Mounts, parent: &str, t: &Target) -> Option<Reading> {
    let rel = |c: &str| format!("{}/{}/{}", parent.trim_matches('/'), t.uid, c);
    let mut pid = None;
    let mut containers = Vec::new();
    for c in &t.containers {
        let cpu_dir = m.cpuacct.as_ref().map(|d| d.join(rel(c)));
        let cpu_ns = cpu_dir.as_ref().and_then(|d| read_u64(&d.join("cpuacct.usage")));
        let memory_bytes = m.memory.as_ref().map(|d| d.join(rel(c))).and_then(|d| {
            let usage = read_u64(&d.join("memory.usage_in_bytes"))?;
            Some(rates::working_set(usage, &std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default()))
        });
        if pid.is_none() {
            pid = cpu_dir.and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok()).and_then(|p| rates::first_pid(&p));
        }
        if cpu_ns.is_some() || memory_bytes.is_some() {
            containers.push(ContainerReading { name: c.clone(), cpu_ns, memory_bytes });
        }
    }
    if containers.is_empty() {
        // No container cgroup: the group is not running.
        return None;
    }
    let net = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/net/dev")).ok()).map(|t| rates::net_dev_totals(&t));
    Some(Reading { at: Instant::now(), t_ms: jiff::Timestamp::now().as_millisecond(), containers, net })
}

/// A sample from two readings of the same group (`prev` is `None` for the first one).
fn to_sample(prev: Option<&Reading>, cur: &Reading) -> GroupSample {
    let wall_ns = prev.map(|p| cur.at.saturating_duration_since(p.at).as_nanos() as u64).unwrap_or(0);
    let containers = cur
        .containers
        .iter()
        .map(|c| {
            let before = prev.and_then(|p| p.containers.iter().find(|x| x.name == c.name)).and_then(|x| x.cpu_ns);
            let cpu_millicores = match (before, c.cpu_ns) {
                (Some(a), Some(b)) => rates::cpu_millicores(a, b, wall_ns),
                _ => None,
            };
            ContainerSample { name: c.name.clone(), cpu_millicores, memory_bytes: c.memory_bytes.unwrap_or(0) }
        })
        .collect();
    let (rx, tx) = cur.net.unwrap_or((0, 0));
    let rate = |f: fn(&(u64, u64)) -> u64| match (prev.and_then(|p| p.net), cur.net) {
        (Some(a), Some(b)) => rates::bytes_per_second(f(&a), f(&b), wall_ns),
        _ => None,
    };
    GroupSample { t_ms: cur.t_ms, containers, rx_bytes: rx, tx_bytes: tx, rx_bytes_per_second: rate(|n| n.0), tx_bytes_per_second: rate(|n| n.1) }
}

fn target(rec: &GroupRecord) -> Target {
    Target {
        uid: rec.uid.clone(),
        ident: GroupIdent { subscription: rec.subscription.clone(), resource_group: rec.resource_group.clone(), name: rec.name.clone() },
        containers: rec.container_names().map(str::to_string).collect(),
    }
}

pub(crate) async fn sample_loop(shared: Arc<Shared>) {
    let tel = Arc::clone(&shared.cfg.telemetry);
    let hs = cgroup::hierarchies().unwrap_or_default();
    let mounts = Mounts { cpuacct: cgroup::v1_mount(&hs, "cpuacct"), memory: cgroup::v1_mount(&hs, "memory") };
    if mounts.cpuacct.is_none() || mounts.memory.is_none() {
        tracing::warn!(?mounts, "cpuacct or memory v1 hierarchy missing: resource metrics are partial");
    }
    let parent = shared.cfg.cgroup_parent.clone();
    let mut prev: HashMap<String, Reading> = HashMap::new();
    let mut tick = tokio::time::interval(shared.cfg.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok((kvs, _)) = shared.store.list(GROUPS_PREFIX, None, None).await else { continue };
        let recs: Vec<GroupRecord> = kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
        let known: HashSet<String> = recs.iter().map(|r| r.uid.clone()).collect();
        let targets: Vec<Target> = recs.iter().filter(|r| r.desired == Desired::Running).map(target).collect();
        let (m, p) = (mounts.clone(), parent.clone());
        let Ok(readings) = tokio::task::spawn_blocking(move || targets.into_iter().map(|t| (read_group(&m, &p, &t), t)).collect::<Vec<_>>()).await else { continue };
        let mut running = HashSet::new();
        for (reading, t) in readings {
            let Some(reading) = reading else { continue };
            tel.record(&t.uid, &t.ident, to_sample(prev.get(&t.uid), &reading));
            running.insert(t.uid.clone());
            prev.insert(t.uid, reading);
        }
        prev.retain(|uid, _| running.contains(uid));
        for uid in tel.sampled_groups() {
            if !known.contains(&uid) {
                tel.forget(&uid);
            } else if !running.contains(&uid) {
                tel.idle(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(at: Instant, cpu: u64, net: Option<(u64, u64)>) -> Reading {
        Reading { at, t_ms: 0, containers: vec![ContainerReading { name: "c".into(), cpu_ns: Some(cpu), memory_bytes: Some(42) }], net }
    }

    #[test]
    fn samples_from_readings() {
        let t0 = Instant::now();
        let a = reading(t0, 1_000_000_000, Some((100, 10)));
        let b = reading(t0 + Duration::from_secs(2), 2_000_000_000, Some((2100, 1010)));
        let first = to_sample(None, &a);
        assert_eq!(first.containers[0].cpu_millicores, None);
        assert_eq!(first.rx_bytes_per_second, None);
        let s = to_sample(Some(&a), &b);
        assert_eq!(s.containers[0].cpu_millicores, Some(500.0));
        assert_eq!(s.containers[0].memory_bytes, 42);
        assert_eq!((s.rx_bytes, s.tx_bytes), (2100, 1010));
        assert_eq!(s.rx_bytes_per_second, Some(1000.0));
        assert_eq!(s.tx_bytes_per_second, Some(500.0));
        // A re-created container (counter reset) yields no CPU figure rather than a bogus one.
        let c = reading(t0 + Duration::from_secs(3), 5, None);
        assert_eq!(to_sample(Some(&b), &c).containers[0].cpu_millicores, None);
        assert_eq!(to_sample(Some(&b), &c).rx_bytes_per_second, None);
    }

    #[test]
    fn reads_a_fake_cgroup_tree() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("cpuacct");
        let mem = dir.path().join("memory");
        for (root, files) in [(&cpu, vec![("cpuacct.usage", "123456\n"), ("cgroup.procs", "")]), (&mem, vec![("memory.usage_in_bytes", "1000\n"), ("memory.stat", "total_inactive_file 300\n")])] {
            let d = root.join("skf/uid1/web");
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in files {
                std::fs::write(d.join(f), v).unwrap();
            }
        }
        let m = Mounts { cpuacct: Some(cpu), memory: Some(mem) };
        let t = Target { uid: "uid1".into(), ident: GroupIdent { subscription: "s".into(), resource_group: "r".into(), name: "g".into() }, containers: vec!["web".into(), "gone".into()] };
        let r = read_group(&m, "/skf/", &t).unwrap();
        assert_eq!(r.containers.len(), 1);
        assert_eq!((r.containers[0].cpu_ns, r.containers[0].memory_bytes), (Some(123456), Some(700)));
        assert_eq!(r.net, None);
        let t2 = Target { uid: "nope".into(), ..t };
        assert!(read_group(&m, "skf", &t2).is_none());
    }
}
