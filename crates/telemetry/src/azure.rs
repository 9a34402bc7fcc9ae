//! The Azure Monitor shape of a group's samples (`Microsoft.Insights/metrics`): ACI's
//! `CpuUsage` (millicores) and `MemoryUsage` (bytes) per container, and
//! `NetworkBytesReceivedPerSecond` / `NetworkBytesTransmittedPerSecond` of the group, each
//! averaged over `interval`-long buckets. Pure.

use serde_json::{json as j, Value};

use crate::GroupSample;

/// The metrics served, in Azure's spelling, with their unit and whether they are per container.
pub const METRICS: &[(&str, &str, bool)] = &[
    ("CpuUsage", "Count", true),
    ("MemoryUsage", "Bytes", true),
    ("NetworkBytesReceivedPerSecond", "BytesPerSecond", false),
    ("NetworkBytesTransmittedPerSecond", "BytesPerSecond", false),
];

/// Canonical names of a `metricnames` list (comma separated, any casing); `Err` names the
/// first unknown one. Empty or missing: all four.
pub fn metric_names(list: Option<&str>) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for n in list.unwrap_or("").split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((canon, _, _)) = METRICS.iter().find(|(m, _, _)| m.eq_ignore_ascii_case(n)) else { return Err(n.to_string()) };
        if !out.contains(canon) {
            out.push(*canon);
        }
    }
    if out.is_empty() {
        out = METRICS.iter().map(|(m, _, _)| *m).collect();
    }
    Ok(out)
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

/// One value of a sample for `metric` (and `container` for the per-container ones).
fn value_of(s: &GroupSample, metric: &str, container: Option<&str>) -> Option<f64> {
    match metric {
        "CpuUsage" => s.containers.iter().find(|c| Some(c.name.as_str()) == container).and_then(|c| c.cpu_millicores),
        "MemoryUsage" => s.containers.iter().find(|c| Some(c.name.as_str()) == container).map(|c| c.memory_bytes as f64),
        "NetworkBytesReceivedPerSecond" => s.rx_bytes_per_second,
        "NetworkBytesTransmittedPerSecond" => s.tx_bytes_per_second,
        _ => None,
    }
}

/// Averages of `metric` per `interval_ms` bucket (aligned to the epoch), oldest first:
/// (bucket start ms, average). Buckets without a value are left out.
pub fn buckets(samples: &[GroupSample], metric: &str, container: Option<&str>, interval_ms: i64) -> Vec<(i64, f64)> {
    let interval_ms = interval_ms.max(1);
    let mut out: Vec<(i64, f64, u32)> = Vec::new();
    for s in samples {
        let Some(v) = value_of(s, metric, container) else { continue };
        let start = s.t_ms.div_euclid(interval_ms) * interval_ms;
        match out.last_mut() {
            Some((b, sum, n)) if *b == start => {
                *sum += v;
                *n += 1;
            }
            _ => out.push((start, v, 1)),
        }
    }
    out.into_iter().map(|(b, sum, n)| (b, sum / f64::from(n))).collect()
}

/// The `Microsoft.Insights/metrics` answer for a group (`resource_id` its ARM id).
pub fn view(resource_id: &str, region: &str, samples: &[GroupSample], metrics: &[&str], interval_s: u64, interval: &str) -> Value {
    let interval_ms = (interval_s as i64).saturating_mul(1000);
    let mut containers: Vec<&str> = Vec::new();
    for s in samples {
        for c in &s.containers {
            if !containers.contains(&c.name.as_str()) {
                containers.push(&c.name);
            }
        }
    }
    let series = |metric: &str, container: Option<&str>| {
        let data: Vec<Value> = buckets(samples, metric, container, interval_ms).into_iter().map(|(t, avg)| j!({"timeStamp": rfc3339(t), "average": (avg * 1000.0).round() / 1000.0})).collect();
        let meta: Vec<Value> = container.map(|c| j!({"name": {"value": "containerName", "localizedValue": "containerName"}, "value": c})).into_iter().collect();
        j!({"metadatavalues": meta, "data": data})
    };
    let value: Vec<Value> = metrics
        .iter()
        .filter_map(|m| METRICS.iter().find(|(n, _, _)| n == m))
        .map(|(name, unit, per_container)| {
            let timeseries: Vec<Value> = if *per_container { containers.iter().map(|c| series(name, Some(c))).collect() } else { vec![series(name, None)] };
            j!({
                "id": format!("{resource_id}/providers/Microsoft.Insights/metrics/{name}"),
                "type": "Microsoft.Insights/metrics",
                "name": {"value": name, "localizedValue": name},
                "unit": unit,
                "timeseries": timeseries,
                "errorCode": "Success",
            })
        })
        .collect();
    let from = samples.first().map(|s| s.t_ms).unwrap_or(0);
    let to = samples.last().map(|s| s.t_ms).unwrap_or(0);
    j!({
        "cost": 0,
        "timespan": format!("{}/{}", rfc3339(from), rfc3339(to)),
        "interval": interval,
        "namespace": "Microsoft.ContainerInstance/containerGroups",
        "resourceregion": region,
        "value": value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContainerSample;

    fn sample(t_ms: i64, cpu: f64, mem: u64, rx: Option<f64>) -> GroupSample {
        GroupSample {
            t_ms,
            containers: vec![ContainerSample { name: "main".into(), cpu_millicores: Some(cpu), memory_bytes: mem }],
            rx_bytes: 0,
            tx_bytes: 0,
            rx_bytes_per_second: rx,
            tx_bytes_per_second: rx.map(|r| r / 2.0),
        }
    }

    #[test]
    fn names() {
        assert_eq!(metric_names(None).unwrap().len(), 4);
        assert_eq!(metric_names(Some("cpuusage, MemoryUsage,CpuUsage")).unwrap(), ["CpuUsage", "MemoryUsage"]);
        assert_eq!(metric_names(Some("CpuUsage,Bogus")).unwrap_err(), "Bogus");
    }

    #[test]
    fn averages_per_bucket() {
        let s = [sample(60_000, 100.0, 10, Some(4.0)), sample(70_000, 300.0, 30, None), sample(125_000, 50.0, 5, Some(8.0))];
        assert_eq!(buckets(&s, "CpuUsage", Some("main"), 60_000), [(60_000, 200.0), (120_000, 50.0)]);
        assert_eq!(buckets(&s, "MemoryUsage", Some("main"), 60_000), [(60_000, 20.0), (120_000, 5.0)]);
        // Samples without a rate (the first of a series) are left out of the average.
        assert_eq!(buckets(&s, "NetworkBytesReceivedPerSecond", None, 60_000), [(60_000, 4.0), (120_000, 8.0)]);
        assert_eq!(buckets(&s, "CpuUsage", Some("other"), 60_000), []);
    }

    #[test]
    fn azure_shape() {
        let s = [sample(60_000, 100.0, 10, Some(4.0))];
        let v = view("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g", "westus", &s, &metric_names(None).unwrap(), 60, "PT1M");
        let names: Vec<&str> = v["value"].as_array().unwrap().iter().map(|m| m["name"]["value"].as_str().unwrap()).collect();
        assert_eq!(names, ["CpuUsage", "MemoryUsage", "NetworkBytesReceivedPerSecond", "NetworkBytesTransmittedPerSecond"]);
        let cpu = &v["value"][0]["timeseries"][0];
        assert_eq!(cpu["metadatavalues"][0]["name"]["value"], "containerName");
        assert_eq!(cpu["metadatavalues"][0]["value"], "main");
        assert_eq!(cpu["data"][0], j!({"timeStamp": "1970-01-01T00:01:00Z", "average": 100.0}));
        assert_eq!(v["value"][3]["timeseries"][0]["metadatavalues"], j!([]));
        assert_eq!(v["value"][3]["timeseries"][0]["data"][0]["average"], 2.0);
        assert_eq!(v["value"][3]["unit"], "BytesPerSecond");
    }
}
