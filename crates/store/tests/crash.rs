//! Crash test: a child process (this test binary re-executed with an env var)
//! writes in a loop and is killed with SIGKILL; reopening must show a
//! consistent prefix of the writes that includes every acknowledged one.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_store::*;

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD_DB";

/// Child side; a no-op unless the env var is set.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let s = SqliteStore::open(std::path::Path::new(&path)).unwrap();
        let mut out = std::io::stdout().lock();
        let mut counter_rev = None;
        for i in 0u64.. {
            // Each step: one txn writing a sequence key, a payload key and a
            // CAS'd counter, all at one revision.
            let expect = counter_rev
                .map(Expect::ModRevision)
                .unwrap_or(Expect::Absent);
            let rev = s
                .txn(vec![
                    TxnOp::Put {
                        key: format!("/seq/{i:08}"),
                        value: i.to_string().into_bytes(),
                        expect: Expect::Absent,
                    },
                    TxnOp::Put {
                        key: "/counter".into(),
                        value: i.to_string().into_bytes(),
                        expect,
                    },
                    TxnOp::Put {
                        key: format!("/payload/{}", i % 7),
                        value: vec![b'p'; 4096],
                        expect: Expect::Any,
                    },
                ])
                .await
                .unwrap();
            counter_rev = Some(rev);
            // Every 5th step also a delete, to exercise delete durability.
            if i % 5 == 4 {
                s.delete(&format!("/seq/{:08}", i - 4), Expect::Any)
                    .await
                    .unwrap();
            }
            writeln!(out, "ack {i} {}", s.revision().await.unwrap()).unwrap();
            out.flush().unwrap();
        }
    });
}

fn run_once(kill_after_acks: u64, kill_delay_us: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_ack: Option<(u64, i64)> = None;
    while last_ack.map(|a| a.0 + 1).unwrap_or(0) < kill_after_acks {
        assert!(Instant::now() < deadline, "child too slow");
        let line = lines.next().expect("child exited early").unwrap();
        if let Some(rest) = line.strip_prefix("ack ") {
            let mut it = rest.split(' ');
            last_ack = Some((
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            ));
        }
    }
    // Let the child run on a little so the kill lands at an arbitrary point
    // of the write loop (mid-transaction, mid-fsync, between writes).
    std::thread::sleep(Duration::from_micros(kill_delay_us));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks the child printed before dying are still in the pipe.
    for line in lines {
        if let Some(rest) = line.unwrap().strip_prefix("ack ") {
            let mut it = rest.split(' ');
            last_ack = Some((
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            ));
        }
    }
    let (acked, acked_rev) = last_ack.unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = SqliteStore::open(&db).unwrap();
        let rev = s.revision().await.unwrap();
        let counter: u64 = String::from_utf8(s.get("/counter").await.unwrap().unwrap().value).unwrap().parse().unwrap();
        // Every acknowledged write survived; at most a few unacknowledged extra.
        eprintln!("crash test: killed after ack {acked} (rev {acked_rev}); reopened at counter {counter}, revision {rev}");
        assert!(counter >= acked, "counter {counter} < acked {acked}");
        assert!(rev >= acked_rev, "revision {rev} < acked revision {acked_rev}");
        assert!(counter <= acked + 1, "counter {counter} far beyond acked {acked}");

        // The state is exactly the state after some prefix of the steps.
        let (seq, list_rev) = s.list("/seq/", None, None).await.unwrap();
        assert_eq!(list_rev, rev);
        let got: Vec<u64> = seq.iter().map(|kv| kv.key[5..].parse().unwrap()).collect();
        // Revisions: step i uses 1 txn revision + 1 delete revision every 5th step.
        let deletes_done = (rev - (counter as i64 + 1)) as u64; // deletes committed
        let full_deletes = (counter + 1) / 5; // deletes of completed 5-blocks
        assert!(deletes_done == full_deletes || deletes_done + 1 == full_deletes, "rev {rev} counter {counter}");
        let expected: Vec<u64> = (0..=counter).filter(|i| !(i % 5 == 0 && i / 5 < deletes_done)).collect();
        assert_eq!(got, expected);

        // Changelog replays the same history, in order, with contiguous revisions.
        let mut w = s.watch("", 0);
        let expected_events = 3 * (counter + 1) + deletes_done;
        let mut last = 0;
        for _ in 0..expected_events {
            let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.unwrap().unwrap().unwrap();
            assert!(ev.revision() == last || ev.revision() == last + 1);
            last = ev.revision();
        }
        assert_eq!(last, rev);

        // Revisions continue after the crash, and the next event is the new write.
        assert_eq!(s.put("/after", vec![], Expect::Absent).await.unwrap(), rev + 1);
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((ev.key(), ev.revision()), ("/after", rev + 1));
    });
}

#[test]
fn sigkill_leaves_consistent_prefix() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for (n, delay_us) in [
        (1, 0),
        (37, 2_500),
        (60, 9_000),
        (150, 31_000),
        (200, 77_000),
    ] {
        run_once(n, delay_us);
    }
}
