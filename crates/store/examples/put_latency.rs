//! Put latency of the SQLite store with `synchronous=FULL` vs `NORMAL` (a measurement, not a
//! test). Run: `cargo run -p skiff-store --release --example put_latency [DIR]`.

use std::time::Instant;

use skiff_store::{Expect, SqliteOptions, SqliteStore, Store, Synchronous};

#[tokio::main]
async fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let store = SqliteStore::open_with(&dir.path().join("bench.db"), SqliteOptions { synchronous: sync, ..Default::default() }).expect("open");
        let n = 500;
        let value = vec![b'x'; 1024];
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            store.put(&format!("/bench/{i}"), value.clone(), Expect::Any).await.expect("put");
            lat.push(t.elapsed());
        }
        lat.sort();
        let t = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let s = store.clone();
                let v = value.clone();
                tokio::spawn(async move { s.put(&format!("/conc/{i}"), v, Expect::Any).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("put");
        }
        let conc = t.elapsed();
        println!(
            "{sync:?}: sequential 1 KiB put p50={:?} p99={:?} max={:?}; {n} concurrent puts in {conc:?} ({:.0}/s)",
            lat[n / 2],
            lat[n * 99 / 100],
            lat[n - 1],
            n as f64 / conc.as_secs_f64()
        );
    }
}
