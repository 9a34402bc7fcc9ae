//! End-to-end: usage metering, quotas and the lifecycle event log, against a real daemon.

mod common;

use std::time::Duration;

use common::meter::*;
use common::*;
use serde_json::{json, Value};

fn current_state(g: &Value) -> &Value {
    &g["properties"]["containers"][0]["properties"]["instanceView"]["currentState"]
}

/// Usage follows the supervisor's start/finish times: one interval per run, a `kill -9` of
/// the daemon mid-run neither loses time nor opens a second interval, stopped time is unbilled.
#[test]
fn usage_tracks_running_time_across_kill9_and_stop_start() {
    let mut s = start_server();
    s.ensure_rg("bill");
    let r = s.put_group("bill", "meter", &simple_group(&image("busybox:latest"), &["sleep", "3600"]));
    assert_eq!(r.status, 201, "{}", r.text);
    let g = s.wait_group("bill", "meter", "running", Duration::from_secs(60), |g| current_state(g)["state"] == "Running");
    let run1_start = ms(&current_state(&g)["startTime"]);

    // Open interval while running; the daemon dies between flushes and comes back.
    std::thread::sleep(Duration::from_millis(800));
    let open = usage(&s, "groupBy=containerGroup");
    assert_eq!(open["value"].as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open["value"][0]["open"], true);
    s.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    s.spawn();
    std::thread::sleep(Duration::from_millis(700));

    post(&s, "bill", "meter", "stop");
    let g = s.wait_group("bill", "meter", "stopped", Duration::from_secs(60), |g| g["properties"]["instanceView"]["state"] == "Stopped" && current_state(g)["finishTime"].is_string());
    let run1_end = ms(&current_state(&g)["finishTime"]);
    assert_eq!(ms(&current_state(&g)["startTime"]), run1_start);

    let after_stop = usage(&s, "");
    let recs = after_stop["value"].as_array().unwrap().clone();
    assert_eq!(recs.len(), 1, "one interval for one run, kill -9 or not: {after_stop}");
    let rec = &recs[0];
    assert_eq!(rec["open"], false);
    assert_eq!(ms(&rec["start"]), run1_start, "billing starts at the container start");
    let end = ms(&rec["end"]);
    assert!((end - run1_end).abs() <= FLUSH_MS as i64 + 100, "billed end {end} vs finish {run1_end}: {after_stop}");
    // The allocation: 0.5 cpu → 1 whole core, 0.5 GB.
    assert_eq!(rec["vcpu"], 1);
    assert_eq!(rec["memoryInGB"], 0.5);
    let secs = rec["seconds"].as_f64().unwrap();
    assert!((rec["vcpuSeconds"].as_f64().unwrap() - secs).abs() < 0.002);
    assert!((rec["memoryGBSeconds"].as_f64().unwrap() - secs * 0.5).abs() < 0.002);

    // Stopped time is not billed: wait, then start again.
    std::thread::sleep(Duration::from_millis(1200));
    let stopped_usage = usage(&s, "");
    assert_eq!(stopped_usage["total"], after_stop["total"], "nothing accrues while stopped");
    post(&s, "bill", "meter", "start");
    let g = s.wait_group("bill", "meter", "running again", Duration::from_secs(60), |g| current_state(g)["state"] == "Running" && ms(&current_state(g)["startTime"]) > run1_end);
    let run2_start = ms(&current_state(&g)["startTime"]);
    std::thread::sleep(Duration::from_millis(600));
    s.delete_group("bill", "meter");

    let all = usage(&s, "groupBy=resourceGroup");
    let recs = all["value"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{all}");
    assert!(recs.iter().all(|r| r["open"] == false), "delete closes the interval: {all}");
    assert_eq!(ms(&recs[1]["start"]), run2_start);
    assert!(ms(&recs[1]["start"]) - ms(&recs[0]["end"]) >= 1200, "the stopped gap is unbilled: {all}");
    // Totals reconcile with the records and with the summary rows.
    let sum: f64 = recs.iter().map(|r| r["vcpuSeconds"].as_f64().unwrap()).sum();
    let total = all["total"]["vcpuSeconds"].as_f64().unwrap();
    assert!((sum - total).abs() < 0.01, "{all}");
    assert_eq!(all["summary"].as_array().unwrap().len(), 1);
    assert!((all["summary"][0]["vcpuSeconds"].as_f64().unwrap() - total).abs() < 0.01);

    // A window clips the records; the CLI's CSV has one row per record.
    let csv = s.cli_ok(&["usage", "-o", "csv", "-g", "bill"]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.lines().next().unwrap().starts_with("ResourceGroup,ContainerGroup"));
    let from = recs[1]["start"].as_str().unwrap();
    let clipped = usage(&s, &format!("from={from}"));
    assert_eq!(clipped["value"].as_array().unwrap().len(), 1, "{clipped}");
}

#[test]
fn quotas_refuse_cores_and_memory_with_container_group_quota_reached() {
    let s = start_server();
    s.ensure_rg("quota");
    let group = |cpu: f64, mem: f64| {
        let mut g = simple_group(&image("busybox:latest"), &["sleep", "3600"]);
        g["properties"]["containers"][0]["properties"]["resources"]["requests"] = json!({"cpu": cpu, "memoryInGB": mem});
        g
    };
    assert_eq!(s.put_group("quota", "a", &group(1.5, 0.5)).status, 201);
    // 2 cores used of 3: another 2-core group does not fit.
    let r = s.put_group("quota", "b", &group(2.0, 0.5));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "ContainerGroupQuotaReached");
    assert!(r.text.contains("StandardCores"), "{}", r.text);
    // 0.5 GB used of 2: 1.75 GB more does not fit.
    let r = s.put_group("quota", "c", &group(0.5, 1.75));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "ContainerGroupQuotaReached");
    assert!(r.text.contains("MemoryInGB"), "{}", r.text);
    assert_eq!(s.put_group("quota", "d", &group(0.5, 1.5)).status, 201);
    let u = s.request("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/locations/westus/usages?{API}"), None);
    let item = |n: &str| u.body["value"].as_array().unwrap().iter().find(|v| v["name"]["value"] == n).cloned().unwrap();
    assert_eq!(item("StandardCores")["currentValue"], 3);
    assert_eq!(item("StandardCores")["limit"], 3);
    assert_eq!(item("MemoryInGB")["currentValue"], 2.0);
    assert_eq!(item("MemoryInGB")["limit"], 2.0);
    assert_eq!(item("ContainerGroups")["limit"], 10);
    // An update is held to the quota too, counting only what it adds.
    let r = s.put_group("quota", "d", &group(0.5, 1.75));
    assert_eq!((r.status, r.code().as_str()), (409, "ContainerGroupQuotaReached"), "{}", r.text);
    assert!(s.get_group("quota", "d").text.contains("1.5"), "the refused update changed nothing");
    let mut same_size = group(0.5, 1.5);
    same_size["properties"]["containers"][0]["properties"]["command"] = json!(["sleep", "3601"]);
    assert_eq!(s.put_group("quota", "d", &same_size).status, 200, "a same-size update fits a full quota");
    s.delete_group("quota", "a");
    s.delete_group("quota", "d");
}

#[test]
fn follower_sees_create_exit_restart_oom_and_delete_in_order() {
    let s = start_server();
    s.ensure_rg("ev");
    let mut f = Follower::start(&s, "ev");
    let mut crash = simple_group(&image("busybox:latest"), &["sh", "-c", "sleep 0.3; exit 3"]);
    crash["properties"]["restartPolicy"] = json!("OnFailure");
    assert_eq!(s.put_group("ev", "crash", &crash).status, 201);
    let t = Duration::from_secs(60);
    f.wait_for("a Restarted event", t, |v| v["containerGroup"] == "crash" && v["kind"] == "Restarted");
    let term = f.wait_for("a Terminated event", t, |v| v["containerGroup"] == "crash" && v["kind"] == "Terminated");
    assert_eq!(term["exitCode"], 3);
    assert_eq!(term["reason"], "Error");
    s.delete_group("ev", "crash");
    f.wait_for("Deleted", t, |v| v["containerGroup"] == "crash" && v["kind"] == "Deleted");
    let order: Vec<usize> = ["Pending", "Pulling", "Pulled", "Created", "Started", "Terminated", "Restarted", "Deleted"]
        .iter()
        .map(|k| f.index("crash", None, k).unwrap_or_else(|| panic!("no {k} event in {:?}", f.seen)))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "events out of order {order:?}: {:#?}", f.seen);

    // An init container's run is in the log before the app container's; a stop is too.
    let mut init = simple_group(&image("busybox:latest"), &["sleep", "3600"]);
    init["properties"]["initContainers"] = json!([{"name": "prep", "properties": {"image": image("busybox:latest"), "command": ["true"]}}]);
    assert_eq!(s.put_group("ev", "init", &init).status, 201);
    f.wait_for("the app's Started", t, |v| v["containerGroup"] == "init" && v["container"] == "main" && v["kind"] == "Started");
    let prep_done = f.index("init", Some("prep"), "Terminated").unwrap_or_else(|| panic!("no Terminated of the init container in {:?}", f.seen));
    assert!(f.index("init", Some("prep"), "Started").unwrap() < prep_done);
    assert!(prep_done < f.index("init", Some("main"), "Started").unwrap(), "{:#?}", f.seen);
    assert_eq!(f.seen[prep_done]["exitCode"], 0);
    f.wait_for("Ready", t, |v| v["containerGroup"] == "init" && v["kind"] == "Ready");
    s.request("POST", &format!("{}/stop?{API}", TestServer::group_path("ev", "init")), None);
    f.wait_for("Stopped", t, |v| v["containerGroup"] == "init" && v["kind"] == "Stopped");
    s.delete_group("ev", "init");

    // A container that allocates past its memory is OOM-killed, and the log says so.
    let mut hog = simple_group(&image("busybox:latest"), &["dd", "if=/dev/zero", "of=/dev/null", "bs=700M", "count=1"]);
    hog["properties"]["restartPolicy"] = json!("Never");
    assert_eq!(s.put_group("ev", "hog", &hog).status, 201);
    let oom = f.wait_for("an OOM kill", t, |v| v["containerGroup"] == "hog" && v["kind"] == "Terminated");
    assert_eq!(oom["exitCode"], 137, "{oom}");
    assert_eq!(oom["reason"], "OOMKilled", "{oom}");
    let g = s.wait_state("ev", "hog", "Failed");
    assert_eq!(current_state(&g)["detailStatus"], "OOMKilled");
    s.delete_group("ev", "hog");
    f.wait_for("Deleted", t, |v| v["containerGroup"] == "hog" && v["kind"] == "Deleted");

    // The log is durable: a plain read returns what the follower saw.
    let log = s.cli_ok(&["events", "-g", "ev", "-o", "json"]);
    assert!(log.lines().count() >= f.seen.len(), "{log}");
}
