//! End-to-end: resource metrics (CPU, memory working set) of running groups, the Prometheus
//! endpoint with the daemon's own metrics, the Azure Monitor-shaped view and its CLI, and the
//! per-phase start timestamps of the instance view.

mod common;

use std::time::Duration;

use common::meter::*;
use common::*;
use serde_json::{json, Value};

fn group(image: &str, script: &str, cpu: f64, memory_gb: f64) -> Value {
    json!({
        "location": "westus",
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [{"name": "main", "properties": {
                "image": image, "command": ["sh", "-c", script],
                "resources": {"requests": {"cpu": cpu, "memoryInGB": memory_gb}, "limits": {"cpu": cpu}}
            }}]
        }
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// A busy loop limited to half a core (`limits.cpu`; the request alone would leave it the
/// group's whole rounded-up core) is measured near 500 millicores; `tail` holding a 100 MB
/// line (it waits for the line's end) has a working set near 100 MB. Both through the Azure
/// Monitor view, the Prometheus gauges and `skiff container metrics`.
#[test]
fn cpu_burner_near_its_limit_and_memory_hog_near_its_memory() {
    let s = start_metrics_server();
    s.ensure_rg("mx");
    let img = image("busybox:latest");
    assert_eq!(s.put_group("mx", "burn", &group(&img, "while :; do :; done", 0.5, 0.5)).status, 201);
    assert_eq!(s.put_group("mx", "hog", &group(&img, "(head -c 100m /dev/zero; sleep 3600) | tail", 0.5, 0.5)).status, 201);
    s.wait_state("mx", "burn", "Running");
    s.wait_state("mx", "hog", "Running");

    // CPU: the mean of three consecutive complete one-second buckets is near the limit. It
    // can never exceed the limit (CFS quota); it may fall short while other processes
    // saturate the host's cores, so a busy host gets some time to leave it a half core.
    let cpu = wait_points(&s, "mx", "burn", "CpuUsage", Some("main"), "mean CPU of three buckets in 250..=650 millicores", |p| {
        let Some(recent) = p.len().checked_sub(4).map(|i| &p[i..p.len() - 1]) else { return false };
        assert!(p[1..].iter().all(|mc| *mc <= 650.0), "a busy loop with cpu 0.5 measured above its limit: {p:?}");
        (250.0..=650.0).contains(&mean(recent))
    });
    assert!(cpu.len() >= 4);
    eprintln!("CpuUsage of the burner (1 s buckets): {cpu:?}");

    // Memory: the working set reaches what the shell holds, and not much more.
    let mem = wait_points(&s, "mx", "hog", "MemoryUsage", Some("main"), "a working set of ≥ 95 MB", |p| p.last().is_some_and(|m| *m >= 95e6));
    let ws = *mem.last().unwrap();
    assert!(ws <= 400e6, "working set {ws} for a 100 MB line");
    eprintln!("MemoryUsage of the hog (1 s buckets): {mem:?}");
    // The idle shell of the hog burns (almost) no CPU.
    let idle = wait_points(&s, "mx", "hog", "CpuUsage", Some("main"), "CPU points of the hog", |p| p.len() >= 3);
    assert!(*idle.last().unwrap() < 150.0, "sleeping container uses {idle:?} millicores");

    // The same figures as Prometheus gauges.
    let m = scrape(&s);
    let burn = [("resource_group", "mx"), ("group", "burn"), ("container", "main")];
    // (The gauge is the last sampling interval alone: only bounded, as the host is shared.)
    let c = sample(&m, "skiff_container_cpu_millicores", &burn).expect("container cpu gauge");
    assert!(c > 50.0 && c <= 650.0, "gauge {c}");
    let g = sample(&m, "skiff_group_cpu_millicores", &[("group", "burn")]).expect("group cpu gauge");
    assert_eq!(g, c, "a one-container group uses what its container uses");
    let g = sample(&m, "skiff_container_memory_working_set_bytes", &[("group", "hog"), ("container", "main")]).expect("memory gauge");
    assert!((95e6..=400e6).contains(&g), "memory gauge {g}");
    // No veth here (loopback only): the network series exist and count no bytes.
    assert_eq!(sample(&m, "skiff_group_network_receive_bytes", &[("group", "burn")]), Some(0.0));
    assert!(sample(&m, "skiff_group_network_transmit_bytes", &[("group", "burn")]).is_some());

    // The CLI view.
    let out = s.cli_ok(&["container", "metrics", "-g", "mx", "-n", "burn", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    let names: Vec<&str> = v["value"].as_array().unwrap().iter().map(|m| m["name"]["value"].as_str().unwrap()).collect();
    assert_eq!(names, ["CpuUsage", "MemoryUsage", "NetworkBytesReceivedPerSecond", "NetworkBytesTransmittedPerSecond"]);
    let table = s.cli_ok(&["container", "metrics", "-g", "mx", "-n", "burn", "--metrics", "CpuUsage", "-o", "table"]);
    assert!(table.contains("CpuUsage") && table.contains("main"), "{table}");

    // A deleted group's gauges go away.
    s.delete_group("mx", "burn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sample(&scrape(&s), "skiff_container_cpu_millicores", &burn).is_some() {
        assert!(std::time::Instant::now() < deadline, "gauges of a deleted group stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics` parses as Prometheus text; the request counter grows with requests; pulls and
/// start phases are counted; the instance view carries ordered start phases; the Azure
/// Monitor view has the four metrics and rejects unknown ones.
#[test]
fn prometheus_endpoint_start_phases_and_azure_view() {
    let s = start_metrics_server();
    s.ensure_rg("px");
    let missing = [("route", "GetGroup"), ("status", "404")];
    let before = sample(&scrape(&s), "skiff_api_requests_total", &missing).unwrap_or(0.0);
    assert_eq!(s.get_group("px", "nope").status, 404);
    assert_eq!(s.get_group("px", "nope").status, 404);
    let m = scrape(&s);
    assert_eq!(sample(&m, "skiff_api_requests_total", &missing), Some(before + 2.0));
    assert!(sample(&m, "skiff_api_request_duration_seconds_count", &missing).is_some_and(|n| n >= 2.0));
    assert!(sample(&m, "skiff_api_request_duration_seconds_bucket", &[("route", "GetGroup"), ("le", "+Inf")]).is_some());

    let r = s.put_group("px", "web", &simple_group(&image("busybox:latest"), &["sleep", "3600"]));
    assert_eq!(r.status, 201, "{}", r.text);
    let g = s.wait_group("px", "web", "start phases", Duration::from_secs(60), |g| !g["properties"]["instanceView"]["skiffStartPhases"]["ready"].is_null());
    let p = &g["properties"]["instanceView"]["skiffStartPhases"];
    let times: Vec<i64> = ["scheduled", "imageReady", "sandboxReady", "started", "ready"].iter().map(|k| ms(&p[*k])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "phases out of order: {p}");
    assert_eq!(g["properties"]["provisioningState"], "Succeeded");

    let m = scrape(&s);
    assert!(sample(&m, "skiff_image_pulls_total", &[]).is_some_and(|n| n >= 1.0), "pull not counted");
    assert!(sample(&m, "skiff_image_pull_bytes_total", &[]).is_some_and(|n| n > 0.0), "pull bytes not counted");
    for phase in ["image_ready", "sandbox_ready", "started", "ready"] {
        assert_eq!(sample(&m, "skiff_start_phase_seconds_count", &[("phase", phase)]), Some(1.0), "phase {phase}");
    }
    assert!(sample(&m, "skiff_api_requests_total", &[("route", "PutGroup"), ("status", "201")]).is_some());

    // A failed pull counts as a pull failure and a reconcile error.
    let r = s.put_group("px", "bad", &simple_group(&image("does-not-exist:latest"), &["true"]));
    assert_eq!(r.status, 201, "{}", r.text);
    s.wait_group("px", "bad", "failed provisioning", Duration::from_secs(60), |g| g["properties"]["provisioningState"] == "Failed");
    let m = scrape(&s);
    assert!(sample(&m, "skiff_image_pull_failures_total", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&m, "skiff_reconcile_errors_total", &[("kind", "provision")]).is_some_and(|n| n >= 1.0));

    let v = wait_points(&s, "px", "web", "MemoryUsage", Some("main"), "a memory point", |p| !p.is_empty());
    assert!(v[0] > 0.0);
    let view = azure_metrics(&s, "px", "web", "metricnames=CpuUsage,MemoryUsage,NetworkBytesReceivedPerSecond,NetworkBytesTransmittedPerSecond&interval=PT1M");
    assert_eq!(view["value"].as_array().map(Vec::len), Some(4), "{view}");
    assert_eq!(view["interval"], "PT1M");
    assert_eq!(view["value"][1]["unit"], "Bytes");
    let bad = s.request("GET", &format!("{}/providers/Microsoft.Insights/metrics?api-version=2018-01-01&metricnames=Bogus", TestServer::group_path("px", "web")), None);
    assert_eq!(bad.status, 400, "{}", bad.text);
    let none = s.request("GET", &format!("{}/providers/Microsoft.Insights/metrics?api-version=2018-01-01", TestServer::group_path("px", "nope")), None);
    assert_eq!(none.status, 404, "{}", none.text);
}
