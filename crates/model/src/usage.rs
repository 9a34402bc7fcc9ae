//! Metering records kept in the store and the pure arithmetic over them: billable intervals
//! of a group (per-second usage), their clipping to a query window and aggregation, and the
//! lifecycle event log. Times are Unix milliseconds (UTC); no clocks here.
//!
//! One [`UsageRecord`] is one interval during which a group was billable: from the first
//! container start of a run until the group stopped, finished or was deleted. The agent keeps
//! the interval of a running group *open* and moves its `end_ms` forward every flush interval,
//! so the stored `end_ms` is always a time the group was known to be running: a crash loses at
//! most one flush interval and never counts a second twice (one key per interval).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::BYTES_PER_GB;

pub const USAGE_PREFIX: &str = "usage/";
pub const EVENTS_PREFIX: &str = "events/";

pub fn usage_prefix_sub(subscription: &str) -> String {
    format!("{USAGE_PREFIX}{}/", subscription.to_ascii_lowercase())
}

/// Prefix of every interval of one group (by uid, so a re-created group of the same name is
/// billed separately).
pub fn usage_prefix_group(subscription: &str, resource_group: &str, uid: &str) -> String {
    format!("{}{}/{uid}/", usage_prefix_sub(subscription), resource_group.to_ascii_lowercase())
}

/// `usage/<sub>/<rg>/<uid>/<start ms, 15 digits>`: keys of one group sort by start time.
pub fn usage_key(subscription: &str, resource_group: &str, uid: &str, start_ms: i64) -> String {
    format!("{}{:015}", usage_prefix_group(subscription, resource_group, uid), start_ms.max(0))
}

pub fn events_prefix_sub(subscription: &str) -> String {
    format!("{EVENTS_PREFIX}{}/", subscription.to_ascii_lowercase())
}

/// `events/<sub>/<ms, 15 digits>-<seq, 20 digits>`: the event log of a subscription in time order.
pub fn event_key(subscription: &str, at_ms: i64, seq: u64) -> String {
    format!("{}{:015}-{seq:020}", events_prefix_sub(subscription), at_ms.max(0))
}

/// One billable interval of a container group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub subscription: String,
    pub resource_group: String,
    pub container_group: String,
    pub group_uid: String,
    /// Whole cores allocated to the group (the seed's rounding of the summed requests).
    pub vcpu: u32,
    /// Memory allocated to the group, GB (1 GB = 2^30 bytes).
    pub memory_gb: f64,
    #[serde(default)]
    pub gpu: u32,
    pub start_ms: i64,
    /// While `open`, the last time the agent saw the group running (moved forward every flush).
    pub end_ms: i64,
    /// The group is still running; `end_ms` will move.
    pub open: bool,
}

impl UsageRecord {
    pub fn key(&self) -> String {
        usage_key(&self.subscription, &self.resource_group, &self.group_uid, self.start_ms)
    }

    pub fn memory_gb_of(bytes: u64) -> f64 {
        bytes as f64 / BYTES_PER_GB
    }

    /// The part of this interval inside `[from, to)`, if any.
    pub fn clip(&self, from_ms: i64, to_ms: i64) -> Option<UsageRecord> {
        let start = self.start_ms.max(from_ms);
        let end = self.end_ms.min(to_ms);
        (end > start).then(|| UsageRecord { start_ms: start, end_ms: end, ..self.clone() })
    }

    pub fn seconds(&self) -> f64 {
        (self.end_ms - self.start_ms).max(0) as f64 / 1000.0
    }

    pub fn quantities(&self) -> Quantities {
        let s = self.seconds();
        Quantities { seconds: s, vcpu_seconds: s * f64::from(self.vcpu), gb_seconds: s * self.memory_gb, gpu_seconds: s * f64::from(self.gpu) }
    }
}

/// Billable quantities of an interval or a sum of intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quantities {
    pub seconds: f64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
    pub gpu_seconds: f64,
}

impl Quantities {
    pub fn add(&mut self, o: &Quantities) {
        self.seconds += o.seconds;
        self.vcpu_seconds += o.vcpu_seconds;
        self.gb_seconds += o.gb_seconds;
        self.gpu_seconds += o.gpu_seconds;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    ResourceGroup,
    ContainerGroup,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s.to_ascii_lowercase().as_str() {
            "resourcegroup" => Some(GroupBy::ResourceGroup),
            "containergroup" => Some(GroupBy::ContainerGroup),
            _ => None,
        }
    }
}

/// The answer to a usage query: the clipped intervals, their sums by the grouping key, and the
/// grand total (which equals the sum of the rows and of the records by construction).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub records: Vec<UsageRecord>,
    /// (resource group, container group or None) → sums. Keys are lower-cased resource group
    /// names as stored; the rows keep the casing of the first record seen.
    pub rows: Vec<(String, Option<String>, Quantities)>,
    pub total: Quantities,
}

/// Clip `records` to `[from, to)` (optionally one resource group) and sum them.
pub fn report(records: &[UsageRecord], from_ms: i64, to_ms: i64, resource_group: Option<&str>, group_by: GroupBy) -> UsageReport {
    let mut clipped: Vec<UsageRecord> = records
        .iter()
        .filter(|r| resource_group.is_none_or(|rg| r.resource_group.eq_ignore_ascii_case(rg)))
        .filter_map(|r| r.clip(from_ms, to_ms))
        .collect();
    clipped.sort_by(|a, b| (a.start_ms, &a.group_uid).cmp(&(b.start_ms, &b.group_uid)));
    let mut rows: BTreeMap<(String, Option<String>), (String, Option<String>, Quantities)> = BTreeMap::new();
    let mut total = Quantities::default();
    for r in &clipped {
        let q = r.quantities();
        total.add(&q);
        let name = (group_by == GroupBy::ContainerGroup).then(|| r.container_group.clone());
        let key = (r.resource_group.to_ascii_lowercase(), name.as_ref().map(|n| n.to_ascii_lowercase()));
        rows.entry(key).or_insert_with(|| (r.resource_group.clone(), name.clone(), Quantities::default())).2.add(&q);
    }
    UsageReport { records: clipped, rows: rows.into_values().collect(), total }
}

/// One entry of the lifecycle event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub time_ms: i64,
    /// RFC 3339 rendering of `time_ms`.
    pub time: String,
    pub subscription: String,
    pub resource_group: String,
    pub container_group: String,
    pub group_uid: String,
    /// None for group-level events (Pending, Ready, Stopped, Deleted, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Pending, Pulling, Pulled, Created, Started, Ready, Terminated, Restarted, Stopped, Deleted, Failed.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// e.g. `Completed`, `Error`, `OOMKilled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

/// What the metering needs to know about one container in a supervisor status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSnapshot {
    pub name: String,
    pub running: bool,
    pub restart_count: u32,
    /// Start of the current run, if running.
    pub current_start_ms: Option<i64>,
    /// Terminations visible in the status: (start, finish, exit code, reason).
    pub terminations: Vec<(Option<i64>, i64, Option<i64>, String)>,
}

/// Lifecycle events of one container implied by going from `prev` to `next` (pure diff; `prev`
/// None means the container was just created). Returned as (kind, exit code, reason, at ms).
pub fn container_transitions(prev: Option<&ContainerSnapshot>, next: &ContainerSnapshot, now_ms: i64) -> Vec<(String, Option<i64>, Option<String>, i64)> {
    let mut out = Vec::new();
    let last_finish = prev.and_then(|p| p.terminations.iter().map(|t| t.1).max());
    let mut ends: Vec<&(Option<i64>, i64, Option<i64>, String)> = next.terminations.iter().filter(|t| last_finish.is_none_or(|lf| t.1 > lf)).collect();
    ends.sort_by_key(|t| t.1);
    ends.dedup_by_key(|t| t.1);
    if prev.is_none() {
        out.push(("Created".to_string(), None, None, now_ms));
    }
    let prev_start = prev.and_then(|p| p.current_start_ms);
    for t in &ends {
        // A run that started and ended between two statuses shows only as a termination.
        if let Some(st) = t.0.filter(|st| prev_start != Some(*st)) {
            out.push(("Started".to_string(), None, None, st));
        }
        out.push(("Terminated".to_string(), t.2, Some(t.3.clone()), t.1));
    }
    if let Some(p) = prev {
        if next.restart_count > p.restart_count {
            out.push(("Restarted".to_string(), None, None, next.current_start_ms.unwrap_or(now_ms)));
        }
    }
    if let Some(s) = next.current_start_ms {
        if next.running && prev_start != Some(s) {
            out.push(("Started".to_string(), None, None, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rg: &str, name: &str, start: i64, end: i64, vcpu: u32, gb: f64) -> UsageRecord {
        UsageRecord { subscription: "s".into(), resource_group: rg.into(), container_group: name.into(), group_uid: format!("{rg}-{name}"), vcpu, memory_gb: gb, gpu: 0, start_ms: start, end_ms: end, open: false }
    }

    #[test]
    fn clip_and_quantities() {
        let r = rec("rg", "a", 1_000, 11_000, 2, 1.5);
        assert_eq!(r.quantities(), Quantities { seconds: 10.0, vcpu_seconds: 20.0, gb_seconds: 15.0, gpu_seconds: 0.0 });
        let c = r.clip(5_000, 20_000).unwrap();
        assert_eq!((c.start_ms, c.end_ms), (5_000, 11_000));
        assert!(r.clip(11_000, 12_000).is_none());
        assert!(r.clip(0, 1_000).is_none());
    }

    #[test]
    fn report_totals_reconcile_with_rows_and_records() {
        let rs = vec![rec("RG1", "a", 0, 10_000, 1, 1.0), rec("rg1", "b", 5_000, 15_000, 2, 0.5), rec("rg2", "c", 0, 4_000, 1, 2.0), rec("rg1", "a", 20_000, 30_000, 1, 1.0)];
        let r = report(&rs, 2_000, 25_000, None, GroupBy::ResourceGroup);
        assert_eq!(r.rows.len(), 2);
        let sum_rows: f64 = r.rows.iter().map(|x| x.2.vcpu_seconds).sum();
        let sum_recs: f64 = r.records.iter().map(|x| x.quantities().vcpu_seconds).sum();
        assert_eq!(r.total.vcpu_seconds, sum_rows);
        assert_eq!(r.total.vcpu_seconds, sum_recs);
        // 8 s of a, 10 s × 2 of b, 2 s of c, 5 s of a again.
        assert_eq!(r.total.vcpu_seconds, 8.0 + 20.0 + 2.0 + 5.0);
        let by_group = report(&rs, 0, 100_000, Some("rg1"), GroupBy::ContainerGroup);
        assert_eq!(by_group.rows.len(), 2);
        assert_eq!(by_group.rows[0].2.seconds, 20.0);
        assert_eq!(GroupBy::parse("resourceGroup"), Some(GroupBy::ResourceGroup));
        assert_eq!(GroupBy::parse("x"), None);
    }

    #[test]
    fn keys_sort_by_time() {
        assert!(usage_key("S", "rg", "u", 999) < usage_key("s", "RG", "u", 1_000));
        assert!(event_key("s", 5, 10) < event_key("s", 6, 0));
        assert!(event_key("s", 5, 9) < event_key("s", 5, 10));
    }

    fn snap(running: bool, restarts: u32, start: Option<i64>, terms: &[(i64, i64, i64, &str)]) -> ContainerSnapshot {
        ContainerSnapshot { name: "c".into(), running, restart_count: restarts, current_start_ms: start, terminations: terms.iter().map(|t| (Some(t.0), t.1, Some(t.2), t.3.to_string())).collect() }
    }

    fn kinds(v: &[(String, Option<i64>, Option<String>, i64)]) -> Vec<&str> {
        v.iter().map(|x| x.0.as_str()).collect()
    }

    #[test]
    fn transitions_of_a_crash_loop() {
        let a = snap(false, 0, None, &[]);
        assert_eq!(kinds(&container_transitions(None, &a, 1)), ["Created"]);
        let b = snap(true, 0, Some(10), &[]);
        assert_eq!(kinds(&container_transitions(Some(&a), &b, 11)), ["Started"]);
        let c = snap(false, 0, None, &[(10, 20, 137, "OOMKilled")]);
        let t = container_transitions(Some(&b), &c, 21);
        assert_eq!(kinds(&t), ["Terminated"]);
        assert_eq!((t[0].1, t[0].2.as_deref()), (Some(137), Some("OOMKilled")));
        let d = snap(true, 1, Some(30), &[(10, 20, 137, "OOMKilled")]);
        assert_eq!(kinds(&container_transitions(Some(&c), &d, 31)), ["Restarted", "Started"]);
        // First seen already exited: the start is still reported.
        assert_eq!(kinds(&container_transitions(None, &c, 21)), ["Created", "Started", "Terminated"]);
        // Nothing new: nothing emitted.
        assert!(container_transitions(Some(&d), &d, 32).is_empty());
        // Exit and restart seen in one status.
        let e = snap(true, 2, Some(50), &[(30, 40, 1, "Error")]);
        assert_eq!(kinds(&container_transitions(Some(&d), &e, 51)), ["Terminated", "Restarted", "Started"]);
    }
}
