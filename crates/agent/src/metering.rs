//! Usage metering and the lifecycle event log, fed by the owner tasks.
//!
//! Usage: a group's billable interval opens at the first container start the supervisor
//! reports (its start time, not when the agent saw it) and closes when the group stops,
//! finishes or is deleted (at the containers' finish time when the supervisor reports one).
//! While open, a flusher moves the stored `end_ms` forward every flush interval, so a
//! `kill -9` of the daemon loses at most one interval. The record carries the supervisor run
//! that produced it: after a restart, a record of the same run (supervisor still alive) is
//! continued, any other open record is closed at its last flushed end, so nothing is billed
//! twice and time the group was not running is never billed.
//!
//! Events: every state change the owner sees is appended to `events/<sub>/…`; followers read
//! it with a store watch. Retention of both is enforced by the flusher.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_model::records::GroupRecord;
use skiff_model::resources::allocate;
use skiff_model::usage::{container_transitions, event_key, usage_prefix_group, ContainerSnapshot, EventRecord, UsageRecord, EVENTS_PREFIX, USAGE_PREFIX};
use skiff_runtime::status as rt;
use skiff_store::{Expect, Store, TxnOp};

#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// How often open usage intervals are extended in the store.
    pub flush: Duration,
    /// Closed usage records older than this are deleted.
    pub usage_retention: Duration,
    /// Events older than this are deleted.
    pub event_retention: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig { flush: Duration::from_secs(60), usage_retention: Duration::from_secs(90 * 86_400), event_retention: Duration::from_secs(7 * 86_400) }
    }
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms(t: &jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

/// The supervisor run a status belongs to: a new supervisor (new generation, or the same one
/// started again after a reboot) is a new run.
fn run_of(status: &rt::GroupStatus) -> String {
    format!("{}:{}", status.generation, status.supervisor_pid)
}

pub fn snapshot(c: &rt::ContainerStatus) -> ContainerSnapshot {
    let term = |s: &rt::ContainerState| (s.state == rt::State::Terminated).then(|| (s.start_time.as_ref().map(ms), s.finish_time.as_ref().map(ms).unwrap_or(0), s.exit_code.map(i64::from), s.detail_status.clone()));
    let mut terminations: Vec<_> = [Some(&c.current_state), c.previous_state.as_ref()].into_iter().flatten().filter_map(term).collect();
    terminations.sort_by_key(|t| t.1);
    ContainerSnapshot {
        name: c.name.clone(),
        running: c.current_state.state == rt::State::Running,
        restart_count: c.restart_count,
        current_start_ms: (c.current_state.state == rt::State::Running).then(|| c.current_state.start_time.as_ref().map(ms)).flatten(),
        terminations,
    }
}

/// Earliest container start and latest finish a status shows.
fn first_start(status: &rt::GroupStatus) -> Option<i64> {
    status.containers.iter().flat_map(|c| [Some(&c.current_state), c.previous_state.as_ref()]).flatten().filter_map(|s| s.start_time.as_ref().map(ms)).min()
}

fn last_finish(status: &rt::GroupStatus) -> Option<i64> {
    status.containers.iter().flat_map(|c| [Some(&c.current_state), c.previous_state.as_ref()]).flatten().filter_map(|s| s.finish_time.as_ref().map(ms)).max()
}

#[derive(Default)]
struct Seen {
    /// This daemon started the next run itself (its history is not logged yet).
    starting: bool,
    run: String,
    containers: HashMap<String, ContainerSnapshot>,
    ready: bool,
}

struct Open {
    rec: UsageRecord,
    run: String,
}

pub struct Meter {
    store: Arc<dyn Store>,
    pub cfg: MeterConfig,
    open: tokio::sync::Mutex<HashMap<String, Open>>,
    seen: Mutex<HashMap<String, Seen>>,
    seq: AtomicU64,
}

/// The supervisor run of an open record is kept next to it in the store (not part of the
/// public record type).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    rec: UsageRecord,
    #[serde(default)]
    run: String,
}

impl Meter {
    pub fn new(store: Arc<dyn Store>, cfg: MeterConfig) -> Meter {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64;
        Meter { store, cfg, open: Default::default(), seen: Default::default(), seq: AtomicU64::new(seed) }
    }

    async fn put(&self, rec: &UsageRecord, run: &str) {
        let value = serde_json::to_vec(&Stored { rec: rec.clone(), run: run.to_string() }).unwrap_or_default();
        if let Err(e) = self.store.put(&rec.key(), value, Expect::Any).await {
            tracing::warn!(group = %rec.container_group, error = %e, "writing a usage record failed");
        }
    }

    /// The open interval of a group left in the store (by an earlier daemon), if any.
    async fn stored_open(&self, g: &GroupRecord) -> Vec<Stored> {
        let prefix = usage_prefix_group(&g.subscription, &g.resource_group, &g.uid);
        match self.store.list(&prefix, None, None).await {
            Ok((kvs, _)) => kvs.iter().filter_map(|kv| serde_json::from_slice::<Stored>(&kv.value).ok()).filter(|s| s.rec.open).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Hook: the owner applied a supervisor status of the group's current generation.
    pub async fn on_status(&self, g: &GroupRecord, status: &rt::GroupStatus) {
        self.events_from_status(g, status).await;
        let run = run_of(status);
        let alloc = allocate(&g.spec.properties);
        let billable = matches!(status.state, rt::GroupState::Running | rt::GroupState::Stopping) && first_start(status).is_some();
        let mut open = self.open.lock().await;
        if !open.contains_key(&g.uid) {
            // After a daemon restart: continue this run's interval, close any other.
            for s in self.stored_open(g).await {
                if s.run == run && !status.state.is_finished() {
                    open.insert(g.uid.clone(), Open { rec: s.rec, run: s.run });
                } else if s.run == run {
                    let mut rec = s.rec;
                    rec.end_ms = last_finish(status).unwrap_or(rec.end_ms).max(rec.start_ms);
                    rec.open = false;
                    self.put(&rec, &s.run).await;
                } else {
                    let mut rec = s.rec;
                    rec.open = false;
                    self.put(&rec, &s.run).await;
                }
            }
        }
        if let Some(o) = open.get(&g.uid) {
            let changed = o.run != run || o.rec.vcpu != alloc.cpu_cores || o.rec.memory_gb != UsageRecord::memory_gb_of(alloc.memory_bytes);
            if status.state.is_finished() || changed {
                let mut o = open.remove(&g.uid).expect("present");
                let end = if o.run == run { last_finish(status).unwrap_or_else(now_ms) } else { o.rec.end_ms };
                o.rec.end_ms = end.max(o.rec.start_ms);
                o.rec.open = false;
                self.put(&o.rec, &o.run).await;
            }
        }
        if billable && !open.contains_key(&g.uid) {
            let start = first_start(status).unwrap_or_else(now_ms);
            let rec = UsageRecord {
                subscription: g.subscription.clone(),
                resource_group: g.resource_group.clone(),
                container_group: g.name.clone(),
                group_uid: g.uid.clone(),
                vcpu: alloc.cpu_cores,
                memory_gb: UsageRecord::memory_gb_of(alloc.memory_bytes),
                gpu: 0,
                start_ms: start,
                end_ms: now_ms().max(start),
                open: true,
            };
            self.put(&rec, &run).await;
            open.insert(g.uid.clone(), Open { rec, run });
        }
    }

    /// Hook: the group's supervisor was stopped (stop, delete, re-provisioning) or is known to
    /// be gone. `status` is its final status if readable: the interval ends at the containers'
    /// last finish; without one, at `fallback_end` or else the last flushed end.
    pub async fn close(&self, g: &GroupRecord, status: Option<&rt::GroupStatus>, fallback_end: Option<i64>) {
        let mut open = self.open.lock().await;
        let mut records: Vec<(UsageRecord, String)> = open.remove(&g.uid).map(|o| vec![(o.rec, o.run)]).unwrap_or_default();
        if records.is_empty() {
            records = self.stored_open(g).await.into_iter().map(|s| (s.rec, s.run)).collect();
        }
        for (mut rec, run) in records {
            let same_run = status.is_some_and(|s| run_of(s) == run);
            let end = match (same_run, status.and_then(last_finish)) {
                (true, Some(f)) => f,
                _ => fallback_end.unwrap_or(rec.end_ms),
            };
            rec.end_ms = end.max(rec.start_ms);
            rec.open = false;
            self.put(&rec, &run).await;
        }
    }

    /// Extend every open interval to now, in one transaction.
    pub async fn flush(&self) {
        let mut open = self.open.lock().await;
        let now = now_ms();
        let mut ops = Vec::new();
        for o in open.values_mut() {
            o.rec.end_ms = now.max(o.rec.start_ms);
            let value = serde_json::to_vec(&Stored { rec: o.rec.clone(), run: o.run.clone() }).unwrap_or_default();
            ops.push(TxnOp::Put { key: o.rec.key(), value, expect: Expect::Any });
        }
        if !ops.is_empty() {
            if let Err(e) = self.store.txn(ops).await {
                tracing::warn!(error = %e, "flushing usage records failed");
            }
        }
    }

    /// Close open records of groups that no longer exist (a crash between closing and removing
    /// can leave one) at their last flushed end.
    pub async fn close_orphans(&self, known: &HashSet<String>) {
        let Ok((kvs, _)) = self.store.list(USAGE_PREFIX, None, None).await else { return };
        for kv in kvs {
            let Ok(mut s) = serde_json::from_slice::<Stored>(&kv.value) else { continue };
            if s.rec.open && !known.contains(&s.rec.group_uid) {
                s.rec.open = false;
                self.put(&s.rec, &s.run).await;
            }
        }
    }

    /// Delete closed usage records and events past their retention.
    pub async fn enforce_retention(&self) {
        let now = now_ms();
        let usage_cut = now - self.cfg.usage_retention.as_millis() as i64;
        let event_cut = now - self.cfg.event_retention.as_millis() as i64;
        let mut ops = Vec::new();
        if let Ok((kvs, _)) = self.store.list(USAGE_PREFIX, None, None).await {
            for kv in kvs {
                if let Ok(s) = serde_json::from_slice::<Stored>(&kv.value) {
                    if !s.rec.open && s.rec.end_ms < usage_cut {
                        ops.push(TxnOp::Delete { key: kv.key, expect: Expect::Any });
                    }
                }
            }
        }
        if let Ok((kvs, _)) = self.store.list(EVENTS_PREFIX, None, None).await {
            for kv in kvs {
                if serde_json::from_slice::<EventRecord>(&kv.value).is_ok_and(|e| e.time_ms < event_cut) {
                    ops.push(TxnOp::Delete { key: kv.key, expect: Expect::Any });
                }
            }
        }
        for chunk in ops.chunks(500) {
            if let Err(e) = self.store.txn(chunk.to_vec()).await {
                tracing::warn!(error = %e, "deleting expired usage records and events failed");
            }
        }
    }

    /// Append one event to the log.
    pub async fn event(&self, g: &GroupRecord, container: Option<&str>, kind: &str, message: &str, exit: Option<(Option<i64>, String)>, restart_count: Option<u32>, at_ms: Option<i64>) {
        let t = at_ms.unwrap_or_else(now_ms);
        let time = jiff::Timestamp::from_millisecond(t).map(|ts| crate::view::timestamp(&ts)).unwrap_or_default();
        let (exit_code, reason) = exit.map(|(c, r)| (c, Some(r))).unwrap_or((None, None));
        let ev = EventRecord {
            time_ms: t,
            time,
            subscription: g.subscription.clone(),
            resource_group: g.resource_group.clone(),
            container_group: g.name.clone(),
            group_uid: g.uid.clone(),
            container: container.map(str::to_string),
            kind: kind.to_string(),
            exit_code,
            reason,
            message: message.to_string(),
            restart_count,
        };
        // Keyed by append time so the log reads in the order events were recorded.
        let key = event_key(&g.subscription, now_ms(), self.seq.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = self.store.put(&key, serde_json::to_vec(&ev).unwrap_or_default(), Expect::Absent).await {
            tracing::warn!(group = %g.name, error = %e, "appending an event failed");
        }
    }

    async fn events_from_status(&self, g: &GroupRecord, status: &rt::GroupStatus) {
        let run = run_of(status);
        let mut out: Vec<(Option<String>, String, Option<(Option<i64>, String)>, Option<u32>, i64)> = Vec::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let s = seen.entry(g.uid.clone()).or_default();
            let fresh = s.run != run;
            if fresh {
                // A new supervisor run; after a daemon restart the status of an adopted run
                // is the baseline (its history was logged by the previous daemon).
                let adopted = s.run.is_empty() && !s.starting && status.containers.iter().any(|c| c.current_state.state != rt::State::Waiting || c.restart_count > 0);
                *s = Seen { starting: false, run: run.clone(), containers: HashMap::new(), ready: adopted && status.all_running() };
                if adopted {
                    s.containers = status.init_containers.iter().chain(&status.containers).map(|c| (c.name.clone(), snapshot(c))).collect();
                    return;
                }
            }
            let now = now_ms();
            let mut by_container: BTreeMap<String, ContainerSnapshot> = BTreeMap::new();
            // Init containers too: their runs are part of the group's history.
            for c in status.init_containers.iter().chain(&status.containers) {
                let next = snapshot(c);
                for (kind, code, reason, at) in container_transitions(s.containers.get(&c.name), &next, now) {
                    let exit = (kind == "Terminated").then(|| (code, reason.unwrap_or_default()));
                    let rc = (kind == "Restarted").then_some(next.restart_count);
                    out.push((Some(c.name.clone()), kind, exit, rc, at));
                }
                by_container.insert(c.name.clone(), next);
            }
            s.containers = by_container.into_iter().collect();
            if !s.ready && status.state == rt::GroupState::Running && status.all_running() {
                s.ready = true;
                out.push((None, "Ready".to_string(), None, None, now));
            } else if !status.all_running() {
                s.ready = false;
            }
        }
        for (container, kind, exit, rc, at) in out {
            let message = match (&kind[..], &exit) {
                ("Terminated", Some((code, reason))) => format!("exited with code {} ({reason})", code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())),
                _ => String::new(),
            };
            self.event(g, container.as_deref(), &kind, &message, exit, rc, Some(at)).await;
        }
    }

    /// Hook: the owner is about to start a new supervisor run for the group.
    pub fn run_starting(&self, uid: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).entry(uid.to_string()).or_default().starting = true;
    }

    /// Forget the per-run state of a deleted group.
    pub fn forget(&self, uid: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// Flush open intervals every flush interval; enforce retention every ~10 minutes (and once
/// at start).
pub async fn flush_loop(meter: Arc<Meter>) {
    meter.enforce_retention().await;
    let mut since_retention = Duration::ZERO;
    loop {
        tokio::time::sleep(meter.cfg.flush).await;
        meter.flush().await;
        since_retention += meter.cfg.flush;
        if since_retention >= Duration::from_secs(600) {
            since_retention = Duration::ZERO;
            meter.enforce_retention().await;
        }
    }
}
