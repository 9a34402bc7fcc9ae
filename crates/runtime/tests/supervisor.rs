//! Integration tests: real supervisors running real crun containers (root only).

mod common;

use std::time::{Duration, Instant};

use common::*;
use skiff_runtime::*;

#[tokio::test]
async fn group_shares_localhost_logs_cgroups_and_stops_clean() {
    let mut fx = Fixture::new(RestartPolicy::Always);
    let mut a = container(
        "server",
        &fx.rootfs,
        "echo ns=$(readlink /proc/self/ns/net); i=0; while [ $i -lt 5 ]; do echo line$i; i=$((i+1)); done; \
         echo to-stderr >&2; echo hello-over-localhost | nc -l -p 8080; exec sleep 1000",
    );
    a.cpu_shares = 1024;
    a.cpu_quota_us = Some(50_000);
    let b = container(
        "client",
        &fx.rootfs,
        "echo ns=$(readlink /proc/self/ns/net); until nc 127.0.0.1 8080; do sleep 0.05; done; exec sleep 1000",
    );
    fx.plan.containers = vec![a, b];
    let t0 = Instant::now();
    let pid = fx.spawn();
    let ready = t0.elapsed();
    let (st, _) = wait_for(&fx.dir, Duration::from_secs(10), |s| s.all_running()).await;
    eprintln!(
        "spawn→ready {ready:?}, spawn→all running {:?}",
        t0.elapsed()
    );
    assert_eq!(st.supervisor_pid, pid);
    assert_eq!(st.state, GroupState::Running);

    // The client reached the server through 127.0.0.1: they share the netns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs::read(&fx.dir, "client", None, false)
        .unwrap()
        .contains("hello-over-localhost")
    {
        assert!(
            Instant::now() < deadline,
            "client log: {}",
            logs::read(&fx.dir, "client", None, false).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ns = |name: &str| {
        logs::read(&fx.dir, name, None, false)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("ns="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(ns("server"), ns("client"));
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(ns("server"), format!("ns={}", host_ns.display()));

    // Logs: CRI files, tail and timestamps.
    let raw = std::fs::read_to_string(fx.dir.join("logs/server.log")).unwrap();
    assert!(raw.lines().any(|l| l.ends_with(" stdout F line0")), "{raw}");
    assert!(
        raw.lines().any(|l| l.ends_with(" stderr F to-stderr")),
        "{raw}"
    );
    let server = logs::read(&fx.dir, "server", None, false).unwrap();
    assert!(
        server.contains("line0\nline1\nline2\nline3\nline4\n"),
        "{server}"
    );
    assert_eq!(
        logs::read(&fx.dir, "server", Some(2), false).unwrap(),
        "line4\nto-stderr\n"
    );
    let ts = logs::read(&fx.dir, "server", Some(1), true).unwrap();
    assert!(
        ts.ends_with("Z to-stderr\n") && ts.starts_with("20"),
        "{ts}"
    );

    // Cgroups: group hard limits and per-container resources.
    let g = fx.plan.group_cgroup();
    assert_eq!(read_cg("cpu", &g, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cg("cpu", &g, "cpu.cfs_quota_us"), "200000");
    assert_eq!(
        read_cg("memory", &g, "memory.limit_in_bytes"),
        (256u64 << 20).to_string()
    );
    assert_eq!(read_cg("pids", &g, "pids.max"), "200");
    let sc = fx.plan.container_cgroup("server");
    let cc = fx.plan.container_cgroup("client");
    assert_eq!(read_cg("cpu", &sc, "cpu.shares"), "1024");
    assert_eq!(read_cg("cpu", &cc, "cpu.shares"), "512");
    assert_eq!(read_cg("cpu", &sc, "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        read_cg("memory", &cc, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    let server_pid = st.container("server").unwrap().pid.unwrap();
    let procs = read_cg("cpu", &sc, "cgroup.procs");
    assert!(
        procs.lines().any(|p| p == server_pid.to_string()),
        "{procs}"
    );

    // The daemon's client disappears; a new one still gets status.
    {
        let mut c1 = SupervisorClient::connect(&fx.dir).await.unwrap();
        c1.status().await.unwrap();
    }
    assert!(is_alive(&fx.dir).await);
    let mut c2 = SupervisorClient::connect(&fx.dir).await.unwrap();
    let st2 = c2.status().await.unwrap();
    assert!(st2.all_running());
    assert_eq!(read_status_file(&fx.dir).unwrap().version, st2.version);

    // Stop: sh as pid 1 ignores SIGTERM, so this also exercises the SIGKILL path.
    let t = Instant::now();
    c2.stop(Duration::from_millis(300)).await.unwrap();
    eprintln!("stop took {:?}", t.elapsed());
    let fin = read_status_file(&fx.dir).unwrap();
    assert_eq!(fin.state, GroupState::Stopped);
    for c in &fin.containers {
        assert_eq!(c.current_state.state, State::Terminated, "{c:?}");
        assert_eq!(c.current_state.exit_code, Some(137));
        assert!(c.events.iter().any(|e| e.name == "Killing"));
    }
    assert!(
        fx.leftover_cgroups().is_empty(),
        "{:?}",
        fx.leftover_cgroups()
    );
    let ids = fx.runtime().list().unwrap();
    assert!(
        !ids.iter().any(|i| i.contains(&fx.plan.group_id)),
        "{ids:?}"
    );
    assert!(!fx.plan.netns_path.exists());
    assert!(!is_alive(&fx.dir).await);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) {
        assert!(Instant::now() < deadline, "supervisor still alive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn never_policy_records_exit_code_and_start_failure() {
    let mut fx = Fixture::new(RestartPolicy::Never);
    let mut broken = container("broken", &fx.rootfs, "");
    broken.args = vec!["/does/not/exist".into()];
    fx.plan.containers = vec![container("three", &fx.rootfs, "echo bye; exit 3"), broken];
    fx.spawn();
    let (st, _) = wait_for(&fx.dir, Duration::from_secs(10), |s| {
        s.state == GroupState::Failed
    })
    .await;
    let three = st.container("three").unwrap();
    assert_eq!(three.current_state.state, State::Terminated);
    assert_eq!(three.current_state.exit_code, Some(3));
    assert_eq!(three.current_state.detail_status, "Error");
    assert!(three.current_state.finish_time.is_some());
    assert_eq!(three.restart_count, 0);
    let broken = st.container("broken").unwrap();
    assert_eq!(broken.current_state.state, State::Terminated);
    assert_ne!(broken.current_state.exit_code, Some(0));
    assert_eq!(logs::read(&fx.dir, "three", None, false).unwrap(), "bye\n");
    // The supervisor stays up for status queries after everything ended.
    let mut c = SupervisorClient::connect(&fx.dir).await.unwrap();
    assert_eq!(c.status().await.unwrap().state, GroupState::Failed);
    c.stop(Duration::from_millis(100)).await.unwrap();
    assert!(fx.leftover_cgroups().is_empty());
}

/// A plan that holds its start starts nothing (no container, no init container, no log line)
/// until the release; then everything starts as usual. A stop of a held group is clean.
#[tokio::test]
async fn a_held_start_waits_for_the_release() {
    let mut fx = Fixture::new(RestartPolicy::Never);
    fx.plan.init_containers = vec![container("init", &fx.rootfs, "echo init-ran")];
    fx.plan.containers = vec![container("app", &fx.rootfs, "echo app-ran; sleep 30")];
    fx.plan.hold = true;
    fx.spawn();
    let mut c = SupervisorClient::connect(&fx.dir).await.unwrap();
    // Long enough for an unheld group to have run its init container and started the app.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = c.status().await.unwrap();
    assert!(st.held, "{st:#?}");
    assert!(st.init_containers.iter().chain(&st.containers).all(|x| x.current_state.state == State::Waiting && x.pid.is_none()), "{st:#?}");
    assert_eq!(logs::read(&fx.dir, "init", None, false).unwrap_or_default(), "");
    assert!(!fx.runtime().list().unwrap().contains(&fx.plan.container_id("app")), "no runtime container exists while held");
    c.release().await.unwrap();
    let (st, _) = wait_for(&fx.dir, Duration::from_secs(10), |s| s.container("app").is_some_and(|a| a.current_state.state == State::Running)).await;
    assert!(!st.held);
    assert_eq!(logs::read(&fx.dir, "init", None, false).unwrap(), "init-ran\n");
    // A second release changes nothing.
    c.release().await.unwrap();
    c.stop(Duration::from_millis(100)).await.unwrap();
    assert!(fx.leftover_cgroups().is_empty());

    // Held, then stopped without a release: nothing ever ran, nothing is left.
    let mut fx = Fixture::new(RestartPolicy::Never);
    fx.plan.containers = vec![container("app", &fx.rootfs, "echo app-ran; sleep 30")];
    fx.plan.hold = true;
    fx.spawn();
    let mut c = SupervisorClient::connect(&fx.dir).await.unwrap();
    assert!(c.status().await.unwrap().held);
    c.stop(Duration::from_millis(100)).await.unwrap();
    assert_eq!(logs::read(&fx.dir, "app", None, false).unwrap_or_default(), "");
    assert!(fx.leftover_cgroups().is_empty());
}

#[tokio::test]
async fn on_failure_restarts_only_failing_containers() {
    let mut fx = Fixture::new(RestartPolicy::OnFailure);
    fx.plan.containers = vec![
        container("fails", &fx.rootfs, "echo attempt; exit 1"),
        container("ok", &fx.rootfs, "exit 0"),
    ];
    fx.spawn();
    let (st, _) = wait_for(&fx.dir, Duration::from_secs(15), |s| {
        s.container("fails").unwrap().restart_count >= 3
            && s.container("ok").unwrap().current_state.state == State::Terminated
    })
    .await;
    let ok = st.container("ok").unwrap();
    assert_eq!(ok.restart_count, 0);
    assert_eq!(ok.current_state.exit_code, Some(0));
    assert_eq!(ok.current_state.detail_status, "Completed");
    let fails = st.container("fails").unwrap();
    let backoff = fails
        .events
        .iter()
        .find(|e| e.name == "BackOff")
        .expect("BackOff event");
    assert!(backoff.count >= 3, "{backoff:?}");
    assert_eq!(
        fails.events.iter().filter(|e| e.name == "BackOff").count(),
        1,
        "coalesced"
    );
    let prev = fails.previous_state.as_ref().expect("previous state");
    assert_eq!(prev.exit_code, Some(1));
    assert!(
        logs::read(&fx.dir, "fails", None, false)
            .unwrap()
            .matches("attempt")
            .count()
            >= 3
    );
    let mut c = SupervisorClient::connect(&fx.dir).await.unwrap();
    c.stop(Duration::from_millis(100)).await.unwrap();
    let fin = read_status_file(&fx.dir).unwrap();
    assert_eq!(
        fin.container("fails").unwrap().current_state.state,
        State::Terminated
    );
    assert!(fx.leftover_cgroups().is_empty());
}

#[tokio::test]
async fn one_container_start_latency_and_footprint() {
    let mut fx = Fixture::new(RestartPolicy::Always);
    fx.plan.containers = vec![container("only", &fx.rootfs, "exec sleep 1000")];
    let t0 = Instant::now();
    let pid = fx.spawn();
    let ready = t0.elapsed();
    let (_, _) = wait_for(&fx.dir, Duration::from_secs(10), |s| s.all_running()).await;
    let running = t0.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("Rss"))
        .collect();
    eprintln!("1 container: spawn→ready {ready:?}, spawn→running {running:?}; supervisor {rss:?}");
    assert!(running < Duration::from_secs(2));
    let mut c = SupervisorClient::connect(&fx.dir).await.unwrap();
    c.stop(Duration::from_millis(50)).await.unwrap();
    assert!(fx.leftover_cgroups().is_empty());
}

#[test]
fn ensure_netns_is_idempotent() {
    let path =
        std::path::PathBuf::from(format!("/run/skiff-test/netns/idem-{}", std::process::id()));
    let _ = remove_netns(&path);
    assert!(ensure_netns(&path).unwrap());
    let ino = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert!(!ensure_netns(&path).unwrap());
    let ino2 = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(ino, ino2);
    let host = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_ne!(ino, host);
    remove_netns(&path).unwrap();
    assert!(!path.exists());
    remove_netns(&path).unwrap();
    let _ = std::fs::remove_dir(path.parent().unwrap());
    let _ = std::fs::remove_dir("/run/skiff-test");
}

#[test]
fn spawn_reports_setup_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = spawn_supervisor(std::path::Path::new(EXE), tmp.path()).unwrap_err();
    assert!(matches!(err, SpawnError::Failed(ref m) if m.contains("plan")), "{err}");
}
