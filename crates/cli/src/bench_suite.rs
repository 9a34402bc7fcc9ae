//! Scenarios of the benchmark suite (`bench/run.sh`, docs/BENCHMARKS.md), each run against the
//! daemon and, in the same run, against podman on the same image from the same registry:
//!
//! - `skiff bench cold-start`: N sequential creates of a group with a public IP and one port;
//!   PUT → Running and PUT → first byte served on the public IP; peer `podman run -d -p`.
//! - `skiff bench burst`: N groups created concurrently, time until all are Running; peer N
//!   concurrent `podman run -d`.
//! - `skiff bench density`: N idle groups; daemon RSS and the per-group memory of the
//!   supervisors (PSS from /proc/PID/smaps_rollup); peer: conmon per podman container.
//!
//! Timings are reported, never asserted. The pure parts (phase arithmetic, tables, smaps
//! parsing) are unit-tested below.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::{delete_and_wait, podman_conf, stats, Stats};
use crate::commands::{ensure_resource_group, write_str, Ctx};
use crate::error::CliError;
use crate::output::table;
use crate::ScenarioArgs;

const TIGHT_POLL: Duration = Duration::from_millis(2);
/// Pause between two looks of the one observer that watches many groups (burst, restart).
/// One poller per group would measure the pollers: 100 of them at 20 ms are 5000 GET/s, on
/// the same two cores as the starts they time.
const OBSERVER_PAUSE: Duration = Duration::from_millis(10);
/// Host port the podman peer publishes (inside the benchmark's network namespace).
const PEER_PORT: u16 = 18080;

fn group_body(image: &str, location: &str, public_port: Option<u16>) -> Value {
    let mut props = json!({
        "osType": "Linux",
        "restartPolicy": "Always",
        "containers": [{
            "name": "web",
            "properties": {
                "image": image,
                "ports": [{"port": 80}],
                "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}
            }
        }]
    });
    if let Some(p) = public_port {
        props["ipAddress"] = json!({"type": "Public", "ports": [{"port": p}]});
    }
    json!({"location": location, "properties": props})
}

/// PUT → the first GET whose instance view says Running (polling every [`TIGHT_POLL`]);
/// returns that time and the group.
pub(crate) async fn create_running(ctx: &Ctx, rg: &str, name: &str, body: &Value, timeout: Duration) -> Result<(Duration, Value), CliError> {
    let poll = TIGHT_POLL;
    let c = &ctx.client;
    let url = c.group_url(rg, name);
    let t0 = Instant::now();
    c.send(Method::PUT, &url, Some(body)).await?;
    loop {
        let g = match c.get_json(&url).await {
            Ok(g) => g,
            Err(e) if e.is_not_found() && t0.elapsed() < timeout => {
                tokio::time::sleep(poll).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let state = g.pointer("/properties/instanceView/state").and_then(Value::as_str).unwrap_or("");
        let prov = g.pointer("/properties/provisioningState").and_then(Value::as_str).unwrap_or("");
        if state == "Running" {
            return Ok((t0.elapsed(), g));
        }
        if matches!(state, "Failed" | "Succeeded" | "Stopped") || prov == "Failed" {
            let events = crate::output::event_lines(&g).join("\n  ");
            return Err(CliError::usage(format!("bench group '{name}' ended {state}/{prov} instead of Running:\n  {events}")));
        }
        if t0.elapsed() > timeout {
            return Err(CliError::usage(format!("bench group '{name}' not Running after {}s", timeout.as_secs())));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Connect to `addr`, send a GET and wait for the first byte of the answer; retried until
/// `deadline` (the server may not listen yet).
async fn first_byte(addr: &str, deadline: Instant) -> Result<(), String> {
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n").await?;
            let mut b = [0u8; 1];
            match s.read(&mut b).await? {
                0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the first byte")),
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(format!("no first byte from {addr}: {e}")),
            Err(_) if Instant::now() >= deadline => return Err(format!("no first byte from {addr}: timed out")),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Seconds since midnight of an RFC 3339 UTC time (`...THH:MM:SS[.frac]Z`); the phases of one
/// start lie within seconds of each other, so the date is not needed for their differences.
pub fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1;
    let time = time.strip_suffix('Z').or_else(|| time.strip_suffix("+00:00"))?;
    let mut it = time.splitn(3, ':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

pub const PHASES: [&str; 4] = ["imageReady", "sandboxReady", "started", "ready"];

/// Milliseconds from `scheduled` to each later phase of `skiffStartPhases` (None if absent).
pub fn phase_offsets_ms(phases: &Value) -> Option<Vec<f64>> {
    let t0 = seconds_of_day(phases.get("scheduled")?.as_str()?)?;
    PHASES
        .iter()
        .map(|p| phases.get(*p).and_then(Value::as_str).and_then(seconds_of_day).map(|t| ((t - t0) * 1000.0).max(0.0)))
        .collect()
}

/// Table of named rows plus ratio rows `(label, numerator row, denominator row)`.
pub fn rows_table(rows: &[(String, Stats)], ratios: &[(usize, usize)]) -> String {
    let f = |v: f64| format!("{v:.1}");
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|(n, s)| vec![n.clone(), s.count.to_string(), f(s.median_ms), f(s.p90_ms), f(s.p99_ms), f(s.max_ms)])
        .collect();
    for &(a, b) in ratios {
        let (Some((na, sa)), Some((nb, sb))) = (rows.get(a), rows.get(b)) else { continue };
        out.push(crate::bench::ratio_row(format!("ratio {na} / {}", short(nb)), sa, sb));
    }
    table(&["", "n", "median ms", "p90 ms", "p99 ms", "max ms"], &out)
}

/// The first word of a row name (the tool), for ratio rows.
fn short(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

fn ms_stats(ms: &[f64]) -> Option<Stats> {
    stats(&ms.iter().map(|m| Duration::from_secs_f64(m / 1000.0)).collect::<Vec<_>>())
}

async fn podman_out(args: &[String]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("podman");
    if let Some(conf) = podman_conf() {
        cmd.env("CONTAINERS_CONF", conf);
    }
    let out = cmd.args(args).stdin(std::process::Stdio::null()).output().await.map_err(|e| format!("cannot run podman: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`podman {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn sv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn podman_rm(names: &[String]) {
    for chunk in names.chunks(50) {
        let mut args = sv(&["rm", "-f", "-t", "0"]);
        args.extend(chunk.iter().cloned());
        let _ = podman_out(&args).await;
    }
}

async fn podman_prepare(image: &str) -> Result<(), String> {
    podman_out(&sv(&["--version"])).await?;
    podman_out(&sv(&["pull", "--quiet", "--tls-verify=false", image])).await.map(|_| ())
}

fn write_json(args: &ScenarioArgs, doc: &Value) -> Result<(), CliError> {
    if let Some(path) = &args.json_out {
        let text = serde_json::to_string_pretty(doc).unwrap_or_default() + "\n";
        std::fs::write(path, text).map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

async fn warm_up(ctx: &Ctx, rg: &str, body: &Value, timeout: Duration) -> Result<(), CliError> {
    let warm = "skiff-bench-warmup";
    let _ = delete_and_wait(ctx, rg, warm).await;
    let r = create_running(ctx, rg, warm, body, timeout.max(Duration::from_secs(300))).await;
    let _ = delete_and_wait(ctx, rg, warm).await;
    r.map(|_| ())
}

// ------------------------------------------------------------------ cold-start

pub async fn cold_start(ctx: &Ctx, args: &ScenarioArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let rg = &args.resource_group;
    let timeout = Duration::from_secs(args.timeout);
    let location = ensure_resource_group(ctx, rg, None).await?;
    let body = group_body(&args.image, &location, Some(80));
    eprintln!("cold-start: caching {} (one create + delete, not measured)", args.image);
    warm_up(ctx, rg, &body, timeout).await?;

    let (mut running, mut byte) = (Vec::new(), Vec::new());
    let mut phases: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
    for i in 0..args.count {
        let name = format!("skiff-bench-cold-{i}");
        let _ = delete_and_wait(ctx, rg, &name).await;
        let t0 = Instant::now();
        let r = async {
            let (to_running, g) = create_running(ctx, rg, &name, &body, timeout).await?;
            let ip = g.pointer("/properties/ipAddress/ip").and_then(Value::as_str).unwrap_or_default().to_string();
            if ip.is_empty() {
                return Err(CliError::usage(format!("group '{name}' is Running without a public IP")));
            }
            first_byte(&format!("{ip}:80"), t0 + timeout).await.map_err(CliError::usage)?;
            let to_byte = t0.elapsed();
            // The phases are written with the Running state; read them after the timing.
            let g = ctx.client.get_json(&ctx.client.group_url(rg, &name)).await?;
            Ok::<_, CliError>((to_running, to_byte, g))
        }
        .await;
        let d = delete_and_wait(ctx, rg, &name).await;
        let (to_running, to_byte, g) = r?;
        d?;
        if let Some(offs) = g.pointer("/properties/instanceView/skiffStartPhases").and_then(phase_offsets_ms) {
            for (k, v) in offs.into_iter().enumerate() {
                phases[k].push(v);
            }
        }
        eprintln!("cold-start skiff {}/{}: running {:.1} ms, first byte {:.1} ms", i + 1, args.count, ms(to_running), ms(to_byte));
        running.push(to_running);
        byte.push(to_byte);
    }
    let mut rows = vec![
        ("skiff create→Running".to_string(), stats(&running).ok_or_else(|| CliError::usage("no samples"))?),
        ("skiff create→first byte".to_string(), stats(&byte).ok_or_else(|| CliError::usage("no samples"))?),
    ];
    let mut peer_error = None;
    let mut ratios = vec![];
    if args.peer == "podman" {
        match podman_cold(args).await {
            Ok((ret, pbyte)) => {
                rows.push(("podman run -d -p →returned".to_string(), stats(&ret).unwrap_or_else(|| rows[0].1.clone())));
                rows.push(("podman run -d -p →first byte".to_string(), stats(&pbyte).unwrap_or_else(|| rows[1].1.clone())));
                ratios = vec![(0, 2), (1, 3)];
            }
            Err(e) => {
                eprintln!("podman: not measured: {e}");
                peer_error = Some(e);
            }
        }
    }
    let mut text = rows_table(&rows, &ratios);
    let phase_stats: Vec<(String, Stats)> =
        PHASES.iter().zip(&phases).filter_map(|(p, v)| ms_stats(v).map(|s| (format!("skiff phase scheduled→{p}"), s))).collect();
    if !phase_stats.is_empty() {
        text.push_str("\nWhere the time goes (skiffStartPhases, ms since the agent scheduled the start):\n");
        text.push_str(&rows_table(&phase_stats, &[]));
    }
    write_str(out, &text)?;
    write_json(
        args,
        &json!({
            "scenario": "cold-start", "image": args.image, "count": args.count,
            "rows": rows.iter().map(|(n, s)| json!({"name": n, "stats": s})).collect::<Vec<_>>(),
            "phases": phase_stats.iter().map(|(n, s)| json!({"name": n, "stats": s})).collect::<Vec<_>>(),
            "peer_error": peer_error,
        }),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn podman_cold(args: &ScenarioArgs) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    podman_prepare(&args.image).await?;
    let timeout = Duration::from_secs(args.timeout);
    let (mut ret, mut byte) = (Vec::new(), Vec::new());
    let port = format!("{PEER_PORT}:80");
    // One warm-up run (creates podman's network on first use), not measured.
    for i in 0..=args.count {
        let name = format!("{}-cold-{i}", args.peer_prefix);
        podman_rm(std::slice::from_ref(&name)).await;
        let t0 = Instant::now();
        let r = podman_out(&sv(&["run", "-d", "--name", &name, "-p", &port, &args.image])).await;
        let returned = t0.elapsed();
        let b = match r {
            Ok(_) => first_byte(&format!("127.0.0.1:{PEER_PORT}"), t0 + timeout).await.map(|_| t0.elapsed()),
            Err(e) => Err(e),
        };
        podman_rm(std::slice::from_ref(&name)).await;
        let b = b?;
        if i > 0 {
            eprintln!("cold-start podman {i}/{}: returned {:.1} ms, first byte {:.1} ms", args.count, ms(returned), ms(b));
            ret.push(returned);
            byte.push(b);
        }
    }
    Ok((ret, byte))
}

// ------------------------------------------------------------------ burst

pub async fn burst(ctx: &Ctx, args: &ScenarioArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let rg = &args.resource_group;
    let timeout = Duration::from_secs(args.timeout);
    let location = ensure_resource_group(ctx, rg, None).await?;
    let body = group_body(&args.image, &location, None);
    warm_up(ctx, rg, &body, timeout).await?;
    let names: Vec<String> = (0..args.count).map(|i| format!("skiff-bench-burst-{i}")).collect();
    eprintln!("burst: creating {} groups at once", names.len());
    let t0 = Instant::now();
    let seen = match put_all(ctx, rg, &names, &body).await {
        Ok(()) => watch_provisioned(ctx, rg, &names, t0, timeout).await,
        Err(e) => Err(e),
    };
    join_all(names.iter().map(|n| delete_and_wait(ctx, rg, n))).await;
    let each = seen?;
    let all = each.iter().copied().max().unwrap_or_default();
    let mut rows = vec![("skiff burst: each create→Running".to_string(), stats(&each).ok_or_else(|| CliError::usage("no samples"))?)];
    let skiff_all = all;
    let mut peer_all = None;
    let mut peer_error = None;
    if args.peer == "podman" {
        match podman_burst(args).await {
            Ok((each, all)) => {
                if let Some(s) = stats(&each) {
                    rows.push(("podman burst: each run -d".to_string(), s));
                }
                peer_all = Some(all);
            }
            Err(e) => {
                eprintln!("podman: not measured: {e}");
                peer_error = Some(e);
            }
        }
    }
    let mut text = rows_table(&rows, if rows.len() == 2 { &[(0, 1)] } else { &[] });
    text.push_str(&format!("\nall {} Running: skiff {:.1} ms", args.count, ms(skiff_all)));
    if let Some(p) = peer_all {
        text.push_str(&format!(", podman {:.1} ms, ratio {:.2}x", ms(p), ms(skiff_all) / ms(p).max(f64::MIN_POSITIVE)));
    }
    text.push('\n');
    write_str(out, &text)?;
    write_json(
        args,
        &json!({
            "scenario": "burst", "image": args.image, "count": args.count,
            "skiff_all_ms": ms(skiff_all), "podman_all_ms": peer_all.map(ms),
            "rows": rows.iter().map(|(n, s)| json!({"name": n, "stats": s})).collect::<Vec<_>>(),
            "peer_error": peer_error,
        }),
    )
}

/// PUT every group of `names` at once (each returns as soon as its create is accepted).
async fn put_all(ctx: &Ctx, rg: &str, names: &[String], body: &Value) -> Result<(), CliError> {
    let urls: Vec<String> = names.iter().map(|n| ctx.client.group_url(rg, n)).collect();
    for r in join_all(urls.iter().map(|u| ctx.client.send(Method::PUT, u, Some(body)))).await {
        r?;
    }
    Ok(())
}

/// Create `names` twenty at a time, each batch provisioned before the next: the groups a
/// scenario needs to exist, not a measurement.
async fn create_all(ctx: &Ctx, rg: &str, names: &[String], body: &Value, timeout: Duration) -> Result<(), CliError> {
    for chunk in names.chunks(20) {
        put_all(ctx, rg, chunk, body).await?;
        watch_provisioned(ctx, rg, chunk, Instant::now(), timeout).await?;
        eprintln!("{} groups created", chunk.len());
    }
    Ok(())
}

/// One observer for many new groups: the resource group's list, every [`OBSERVER_PAUSE`],
/// until each of `names` shows `provisioningState: Succeeded` (every container started: the
/// moment a new group turns Running). Returns, per group, the time since `t0` of the first
/// look that showed it (so the resolution is one list request plus the pause).
async fn watch_provisioned(ctx: &Ctx, rg: &str, names: &[String], t0: Instant, timeout: Duration) -> Result<Vec<Duration>, CliError> {
    let mut seen: std::collections::HashMap<&str, Duration> = std::collections::HashMap::new();
    let url = ctx.client.list_url(Some(rg));
    while seen.len() < names.len() {
        let items = ctx.client.list_all(&url, crate::client::ACI_API_VERSION).await?;
        let now = t0.elapsed();
        for g in &items {
            let Some(name) = g["name"].as_str().and_then(|n| names.iter().find(|x| *x == n)) else { continue };
            match g.pointer("/properties/provisioningState").and_then(Value::as_str) {
                Some("Succeeded") => {
                    seen.entry(name.as_str()).or_insert(now);
                }
                Some("Failed") => return Err(CliError::usage(format!("bench group '{name}' failed to provision"))),
                _ => {}
            }
        }
        if now > timeout {
            return Err(CliError::usage(format!("{} of {} groups provisioned after {}s", seen.len(), names.len(), timeout.as_secs())));
        }
        tokio::time::sleep(OBSERVER_PAUSE).await;
    }
    Ok(names.iter().map(|n| seen[n.as_str()]).collect())
}

async fn podman_burst(args: &ScenarioArgs) -> Result<(Vec<Duration>, Duration), String> {
    podman_prepare(&args.image).await?;
    let names: Vec<String> = (0..args.count).map(|i| format!("{}-burst-{i}", args.peer_prefix)).collect();
    podman_rm(&names).await;
    let t0 = Instant::now();
    let runs = join_all(names.iter().map(|n| async move {
        podman_out(&sv(&["run", "-d", "--name", n, &args.image])).await.map(|_| t0.elapsed())
    }))
    .await;
    let all = t0.elapsed();
    podman_rm(&names).await;
    let each = runs.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((each, all))
}

// ------------------------------------------------------------------ density

/// `Rss:` and `Pss:` (KiB) of a smaps_rollup text.
pub fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    parse_smaps_rollup(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// PIDs whose command line satisfies `pred` (argv split on NUL).
fn pids_where(pred: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| b.split(|c| *c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
                .unwrap_or_default();
            !argv.is_empty() && pred(&argv)
        })
        .collect()
}

fn sum_mem(pids: &[u32]) -> (u64, u64) {
    pids.iter().filter_map(|p| proc_mem(*p)).fold((0, 0), |(r, p), (r2, p2)| (r + r2, p + p2))
}

pub async fn density(ctx: &Ctx, args: &ScenarioArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let daemon = args.daemon_pid.ok_or_else(|| CliError::usage("density needs --daemon-pid (the skiff server's pid)"))?;
    let rg = &args.resource_group;
    let timeout = Duration::from_secs(args.timeout.max(300));
    let location = ensure_resource_group(ctx, rg, None).await?;
    let body = group_body(&args.image, &location, None);
    warm_up(ctx, rg, &body, timeout).await?;
    let before = proc_mem(daemon).ok_or_else(|| CliError::usage(format!("cannot read /proc/{daemon}/smaps_rollup")))?;
    let names: Vec<String> = (0..args.count).map(|i| format!("skiff-bench-dens-{i}")).collect();
    let result = create_all(ctx, rg, &names, &body, timeout).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_mem(daemon).unwrap_or_default();
    let group_root = std::path::Path::new(&args.data_dir).join("groups");
    let root = group_root.to_string_lossy().into_owned();
    let sups = pids_where(|a| a.iter().any(|x| x == "supervisor") && a.iter().any(|x| x.starts_with(&root)));
    let (srss, spss) = sum_mem(&sups);
    if !args.keep {
        for chunk in names.chunks(20) {
            join_all(chunk.iter().map(|n| delete_and_wait(ctx, rg, n))).await;
        }
    }
    result?;

    let mut peer = None;
    let mut peer_error = None;
    if args.peer == "podman" {
        match podman_density(args).await {
            Ok(v) => peer = Some(v),
            Err(e) => {
                eprintln!("podman: not measured: {e}");
                peer_error = Some(e);
            }
        }
    }
    let n = args.count.max(1) as f64;
    let mib = |k: u64| k as f64 / 1024.0;
    let mut rows = vec![
        vec!["skiff daemon RSS MiB (idle → with groups)".into(), format!("{:.1} → {:.1}", mib(before.0), mib(after.0))],
        vec!["skiff daemon PSS growth per group KiB".into(), format!("{:.0}", after.1.saturating_sub(before.1) as f64 / n)],
        vec![format!("skiff supervisors found (of {})", args.count), sups.len().to_string()],
        vec!["skiff supervisor PSS per group KiB".into(), format!("{:.0}", spss as f64 / n)],
        vec!["skiff supervisor RSS per group KiB".into(), format!("{:.0}", srss as f64 / n)],
    ];
    if let Some((cnt, rss, pss)) = peer {
        rows.push(vec![format!("podman conmon found (of {})", args.count), cnt.to_string()]);
        rows.push(vec!["podman conmon PSS per container KiB".into(), format!("{:.0}", pss as f64 / n)]);
        rows.push(vec!["podman conmon RSS per container KiB".into(), format!("{:.0}", rss as f64 / n)]);
    }
    write_str(out, &table(&["", "value"], &rows))?;
    write_json(
        args,
        &json!({
            "scenario": "density", "image": args.image, "count": args.count,
            "daemon_kib": {"rss_before": before.0, "pss_before": before.1, "rss_after": after.0, "pss_after": after.1},
            "supervisors": {"count": sups.len(), "rss_kib": srss, "pss_kib": spss},
            "podman_conmon": peer.map(|(c, r, p)| json!({"count": c, "rss_kib": r, "pss_kib": p})),
            "peer_error": peer_error,
        }),
    )
}

async fn podman_density(args: &ScenarioArgs) -> Result<(usize, u64, u64), String> {
    podman_prepare(&args.image).await?;
    let names: Vec<String> = (0..args.count).map(|i| format!("{}-dens-{i}", args.peer_prefix)).collect();
    podman_rm(&names).await;
    let mut result = Ok(());
    for chunk in names.chunks(20) {
        for r in join_all(chunk.iter().map(|n| async move { podman_out(&sv(&["run", "-d", "--name", n, &args.image])).await })).await {
            if let Err(e) = r {
                result = Err(e);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let prefix = args.peer_prefix.clone();
    // conmon's argv names the container (`-n NAME`); count only ours.
    let pids = pids_where(|a| a[0].ends_with("conmon") && a.iter().any(|x| x.starts_with(&format!("{prefix}-dens-"))));
    let (rss, pss) = sum_mem(&pids);
    podman_rm(&names).await;
    result.map(|_| (pids.len(), rss, pss))
}

// ------------------------------------------------------------------ api

/// `workers` concurrent loops GETting `url` for `dur`; latencies and requests per second.
async fn hammer(ctx: &Ctx, url: &str, workers: usize, dur: Duration) -> Result<(Vec<Duration>, f64), CliError> {
    let t0 = Instant::now();
    let loops = join_all((0..workers.max(1)).map(|_| async {
        let mut lat = Vec::new();
        while t0.elapsed() < dur {
            let t = Instant::now();
            ctx.client.get_json(url).await?;
            lat.push(t.elapsed());
        }
        Ok::<_, CliError>(lat)
    }))
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for l in loops {
        all.extend(l?);
    }
    let rps = all.len() as f64 / secs;
    Ok((all, rps))
}

/// `skiff bench api`: GET and list latency/throughput of the API while `count` groups exist.
pub async fn api(ctx: &Ctx, args: &ScenarioArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let rg = &args.resource_group;
    let timeout = Duration::from_secs(args.timeout.max(300));
    let location = ensure_resource_group(ctx, rg, None).await?;
    let body = group_body(&args.image, &location, None);
    let names: Vec<String> = (0..args.count.max(1)).map(|i| format!("skiff-bench-api-{i}")).collect();
    let result = create_all(ctx, rg, &names, &body, timeout).await;
    let dur = Duration::from_secs(args.duration.max(1));
    let measured = async {
        result?;
        let get = hammer(ctx, &ctx.client.group_url(rg, &names[0]), args.concurrency, dur).await?;
        let list = hammer(ctx, &ctx.client.list_url(Some(rg)), args.concurrency, dur).await?;
        Ok::<_, CliError>((get, list))
    }
    .await;
    for chunk in names.chunks(20) {
        join_all(chunk.iter().map(|n| delete_and_wait(ctx, rg, n))).await;
    }
    let ((get, get_rps), (list, list_rps)) = measured?;
    let rows = vec![
        (format!("GET one group ({:.0} req/s)", get_rps), stats(&get).ok_or_else(|| CliError::usage("no samples"))?),
        (format!("list first page ({:.0} req/s)", list_rps), stats(&list).ok_or_else(|| CliError::usage("no samples"))?),
    ];
    let mut text = format!("{} groups, {} concurrent clients, {} s each\n", names.len(), args.concurrency, dur.as_secs());
    text.push_str(&rows_table(&rows, &[]));
    write_str(out, &text)?;
    write_json(
        args,
        &json!({
            "scenario": "api", "groups": names.len(), "concurrency": args.concurrency, "duration_s": dur.as_secs(),
            "get_rps": get_rps, "list_rps": list_rps,
            "rows": rows.iter().map(|(n, s)| json!({"name": n, "stats": s})).collect::<Vec<_>>(),
        }),
    )
}

// ------------------------------------------------------------------ pull

/// `skiff bench pull`: one cold pull+unpack of `--image` (and then of `--second-image`), timed
/// by the server's start phases (scheduled → imageReady: the pull, digest checks and unpack,
/// nothing else), with the bytes the pull reported. One JSON line per image on `out`.
pub async fn pull(ctx: &Ctx, args: &crate::PullArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let a = &args.scenario;
    let rg = &a.resource_group;
    let timeout = Duration::from_secs(a.timeout.max(600));
    let location = ensure_resource_group(ctx, rg, None).await?;
    let images: Vec<&String> = std::iter::once(&a.image).chain(args.second_image.as_ref()).collect();
    for (i, image) in images.into_iter().enumerate() {
        let name = format!("skiff-bench-pull-{i}");
        let body = group_body(image, &location, None);
        let result = create_running(ctx, rg, &name, &body, timeout).await;
        let deleted = delete_and_wait(ctx, rg, &name).await;
        let (wall, g) = result?;
        deleted?;
        let phases = g.pointer("/properties/instanceView/skiffStartPhases").and_then(phase_offsets_ms).ok_or_else(|| CliError::usage("the group has no start phases"))?;
        let pulled = g
            .pointer("/properties/containers/0/properties/instanceView/events")
            .and_then(Value::as_array)
            .and_then(|evs| evs.iter().find(|e| e["name"] == "Pulled"))
            .and_then(|e| e["message"].as_str())
            .map(str::to_string);
        let line = json!({"image": image, "pull_ms": phases[0], "create_to_running_ms": ms(wall), "pulled_event": pulled});
        write_str(out, &format!("{line}\n"))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ restart

/// `skiff bench wait-all`: after a daemon restart at `--since-unix-ns`, time until the API
/// answers and until the `count` groups kept by `density --keep` all show Running.
pub async fn wait_all(ctx: &Ctx, args: &ScenarioArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let since = args.since_unix_ns.ok_or_else(|| CliError::usage("wait-all needs --since-unix-ns"))?;
    let rg = &args.resource_group;
    let timeout = Duration::from_secs(args.timeout.max(60));
    let t_start = Instant::now();
    let elapsed = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        now.saturating_sub(since) as f64 / 1e6
    };
    let names: Vec<String> = (0..args.count).map(|i| format!("skiff-bench-dens-{i}")).collect();
    let api_ms = loop {
        if ctx.client.get_json(&ctx.client.rg_url(rg)).await.is_ok() {
            break elapsed();
        }
        if t_start.elapsed() > timeout {
            return Err(CliError::usage("the API did not answer after the restart"));
        }
        tokio::time::sleep(TIGHT_POLL).await;
    };
    // One observer: each pass GETs the groups not yet seen Running, one request at a time
    // (the list carries no instance view), then pauses.
    let mut pending: Vec<&String> = names.iter().collect();
    let mut all_ms = 0f64;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for n in pending {
            let running = ctx.client.get_json(&ctx.client.group_url(rg, n)).await.ok().is_some_and(|g| g.pointer("/properties/instanceView/state").and_then(Value::as_str) == Some("Running"));
            if running {
                all_ms = all_ms.max(elapsed());
            } else {
                still.push(n);
            }
        }
        pending = still;
        if let Some(n) = pending.first() {
            if t_start.elapsed() > timeout {
                return Err(CliError::usage(format!("group '{n}' and {} more not Running after the restart", pending.len() - 1)));
            }
            tokio::time::sleep(OBSERVER_PAUSE).await;
        }
    }
    let rows = vec![
        vec!["restart → API answers ms".to_string(), format!("{api_ms:.1}")],
        vec![format!("restart → all {} groups Running ms", names.len()), format!("{all_ms:.1}")],
    ];
    write_str(out, &table(&["", "value"], &rows))?;
    write_json(args, &json!({"scenario": "restart", "groups": names.len(), "api_ms": api_ms, "all_running_ms": all_ms}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_offsets_from_rfc3339() {
        assert_eq!(seconds_of_day("2026-11-23T01:02:03.5Z"), Some(3723.5));
        assert_eq!(seconds_of_day("2026-11-23T00:00:00+00:00"), Some(0.0));
        assert_eq!(seconds_of_day("garbage"), None);
        let p = json!({
            "scheduled": "2026-11-23T10:00:00.000Z", "imageReady": "2026-11-23T10:00:00.002Z",
            "sandboxReady": "2026-11-23T10:00:00.010Z", "started": "2026-11-23T10:00:00.030Z",
            "ready": "2026-11-23T10:00:00.031500Z"
        });
        let o = phase_offsets_ms(&p).unwrap();
        let want = [2.0, 10.0, 30.0, 31.5];
        assert!(o.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{o:?}");
        assert!(phase_offsets_ms(&json!({"scheduled": "2026-11-23T10:00:00Z"})).is_none());
    }

    #[test]
    fn table_with_ratio_rows() {
        let a = stats(&[Duration::from_millis(30)]).unwrap();
        let b = stats(&[Duration::from_millis(120)]).unwrap();
        let t = rows_table(&[("skiff".into(), a), ("podman".into(), b)], &[(0, 1), (0, 7)]);
        assert!(t.contains("ratio skiff / podman") && t.contains("0.25x"), "{t}");
        assert_eq!(t.lines().count(), 5, "header, rule, two rows, one valid ratio row:\n{t}");
    }

    #[test]
    fn smaps_rollup_fields() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                1234 kB\nPss:                 567 kB\nPss_Anon:            100 kB\n";
        assert_eq!(parse_smaps_rollup(text), Some((1234, 567)));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }
}
