//! `skiff bench create`: API create → `instanceView.state == Running` latency for a cached
//! image, N sequential creates (each deleted afterwards), compared with `podman run --rm IMAGE
//! true` in the same run. Timings are reported, never asserted.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::LroOutcome;
use crate::commands::{ensure_resource_group, write_str, Ctx};
use crate::error::CliError;
use crate::output::table;
use crate::BenchArgs;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn stats(samples: &[Duration]) -> Option<Stats> {
    if samples.is_empty() {
        return None;
    }
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mut sorted = ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Some(Stats {
        count: ms.len(),
        median_ms: percentile(&sorted, 0.5),
        p90_ms: percentile(&sorted, 0.9),
        p99_ms: percentile(&sorted, 0.99),
        max_ms: *sorted.last().unwrap_or(&f64::NAN),
        samples_ms: ms,
    })
}

/// A table row of `a`'s statistics divided by `b`'s (`-` where `b` is zero).
pub(crate) fn ratio_row(label: String, a: &Stats, b: &Stats) -> Vec<String> {
    let r = |x: f64, y: f64| if y > 0.0 { format!("{:.2}x", x / y) } else { "-".into() };
    vec![label, String::new(), r(a.median_ms, b.median_ms), r(a.p90_ms, b.p90_ms), r(a.p99_ms, b.p99_ms), r(a.max_ms, b.max_ms)]
}

/// The report table: one row per tool plus the ratio row (skiff / peer).
pub fn report_table(skiff: &Stats, peer_name: &str, peer: Option<&Stats>) -> String {
    let f = |v: f64| format!("{v:.1}");
    let mut rows = vec![vec!["skiff (API create→Running)".to_string(), skiff.count.to_string(), f(skiff.median_ms), f(skiff.p90_ms), f(skiff.p99_ms), f(skiff.max_ms)]];
    if let Some(p) = peer {
        rows.push(vec![format!("{peer_name} run --rm"), p.count.to_string(), f(p.median_ms), f(p.p90_ms), f(p.p99_ms), f(p.max_ms)]);
        rows.push(ratio_row(format!("ratio skiff/{peer_name}"), skiff, p));
    }
    table(&["", "n", "median ms", "p90 ms", "p99 ms", "max ms"], &rows)
}

fn bench_group(image: &str, location: &str) -> Value {
    json!({
        "location": location,
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Always",
            "containers": [{
                "name": "bench",
                "properties": {
                    "image": image,
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}
                }
            }]
        }
    })
}

/// PUT the group and wait until its instance view says Running; returns PUT→Running time.
pub(crate) async fn create_until_running(ctx: &Ctx, rg: &str, name: &str, body: &Value, timeout: Duration) -> Result<Duration, CliError> {
    crate::bench_suite::create_running(ctx, rg, name, body, timeout).await.map(|(elapsed, _)| elapsed)
}

pub(crate) async fn delete_and_wait(ctx: &Ctx, rg: &str, name: &str) -> Result<(), CliError> {
    let c = &ctx.client;
    let r = c.send(Method::DELETE, &c.group_url(rg, name), None).await?;
    match c.wait(&Method::DELETE, &r, None, &mut |_| {}).await? {
        LroOutcome::Succeeded => Ok(()),
        failed => Err(failed.into_error("delete")),
    }
}

/// podman's defaults do not work on a host without systemd whose root lacks
/// CAP_SYS_RESOURCE (its default rlimits exceed the hard limits); unless the operator gave a
/// `CONTAINERS_CONF`, the peer runs with cgroupfs and rlimits within the hard limits.
pub(crate) fn podman_conf() -> Option<std::path::PathBuf> {
    if std::env::var_os("CONTAINERS_CONF").is_some() {
        return None;
    }
    let path = std::env::temp_dir().join("skiff-bench-containers.conf");
    let conf = "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n";
    std::fs::write(&path, conf).ok().map(|_| path)
}

pub(crate) async fn podman(args: &[&str]) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("podman");
    if let Some(conf) = podman_conf() {
        cmd.env("CONTAINERS_CONF", conf);
    }
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run podman: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("`podman {}` failed ({}): {}", args.join(" "), out.status, err.trim()))
    }
}

async fn run_peer(args: &BenchArgs) -> Result<Vec<Duration>, String> {
    if args.peer != "podman" {
        return Err(format!("unknown peer '{}' (supported: podman, none)", args.peer));
    }
    podman(&["--version"]).await?;
    podman(&["pull", "--quiet", "--tls-verify=false", &args.image]).await?;
    // One warm-up run, not measured.
    podman(&["run", "--rm", &args.image, "true"]).await?;
    let mut samples = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let t0 = Instant::now();
        podman(&["run", "--rm", &args.image, "true"]).await?;
        samples.push(t0.elapsed());
    }
    Ok(samples)
}

pub async fn run(ctx: &Ctx, args: &BenchArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    if args.count == 0 {
        return Err(CliError::usage("--count must be at least 1"));
    }
    let rg = &args.resource_group;
    let timeout = Duration::from_secs(args.timeout);
    let location = ensure_resource_group(ctx, rg, None).await?;
    let mut body = bench_group(&args.image, &location);
    if args.public_ip {
        // A public address forwarding one port: the full per-group network setup (veth,
        // private and public address, DNAT chain).
        body["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 80}]);
        body["properties"]["ipAddress"] = json!({"type": "Public", "ports": [{"port": 80}]});
    }

    eprintln!("skiff: pre-pulling {} (create + delete of one group)...", args.image);
    let warm = "skiff-bench-warmup";
    let _ = delete_and_wait(ctx, rg, warm).await;
    let r = create_until_running(ctx, rg, warm, &body, timeout.max(Duration::from_secs(600))).await;
    let _ = delete_and_wait(ctx, rg, warm).await;
    r?;

    let mut samples = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let name = format!("skiff-bench-{i}");
        let _ = delete_and_wait(ctx, rg, &name).await;
        let r = create_until_running(ctx, rg, &name, &body, timeout).await;
        let d = delete_and_wait(ctx, rg, &name).await;
        let elapsed = r?;
        d?;
        eprintln!("skiff: {}/{} {:.1} ms", i + 1, args.count, elapsed.as_secs_f64() * 1000.0);
        samples.push(elapsed);
    }
    let skiff = stats(&samples).ok_or_else(|| CliError::usage("no samples"))?;

    let (peer, peer_error) = if args.peer == "none" {
        (None, None)
    } else {
        eprintln!("{}: pulling {} and running {} times...", args.peer, args.image, args.count);
        match run_peer(args).await {
            Ok(s) => (stats(&s), None),
            Err(e) => {
                eprintln!("{}: not measured: {e}", args.peer);
                (None, Some(e))
            }
        }
    };

    write_str(out, &report_table(&skiff, &args.peer, peer.as_ref()))?;
    if let Some(path) = &args.json_out {
        let doc = json!({
            "image": args.image,
            "count": args.count,
            "public_ip": args.public_ip,
            "skiff": skiff,
            "peer": {"name": args.peer, "stats": peer, "error": peer_error},
            "ratio_median": peer.as_ref().map(|p| skiff.median_ms / p.median_ms),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        std::fs::write(path, text).map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), 50.0);
        assert_eq!(percentile(&s, 0.9), 90.0);
        assert_eq!(percentile(&s, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        let st = stats(&[Duration::from_millis(30), Duration::from_millis(10), Duration::from_millis(20)]).unwrap();
        assert_eq!((st.median_ms, st.max_ms, st.count), (20.0, 30.0, 3));
        assert!(stats(&[]).is_none());
    }

    #[test]
    fn report_has_ratio_row() {
        let a = stats(&[Duration::from_millis(100)]).unwrap();
        let b = stats(&[Duration::from_millis(50)]).unwrap();
        let t = report_table(&a, "podman", Some(&b));
        assert!(t.contains("ratio skiff/podman") && t.contains("2.00x"), "{t}");
        assert_eq!(report_table(&a, "podman", None).lines().count(), 3);
    }
}
