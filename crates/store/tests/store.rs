use std::time::Duration;

use futures::StreamExt;
use skiff_store::*;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("store.db")).unwrap()
}

fn open_opts(dir: &tempfile::TempDir, opts: SqliteOptions) -> SqliteStore {
    SqliteStore::open_with(&dir.path().join("store.db"), opts).unwrap()
}

async fn next(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch timed out")
        .expect("stream ended")
        .unwrap()
}

fn put(key: &str, value: &str, expect: Expect) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
        expect,
    }
}

#[tokio::test]
async fn cas_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    assert_eq!(s.revision().await.unwrap(), 0);

    // Absent
    let r1 = s.put("a", b"1".to_vec(), Expect::Absent).await.unwrap();
    assert_eq!(r1, 1);
    let err = s.put("a", b"2".to_vec(), Expect::Absent).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { key } if key == "a"),
        "{err}"
    );

    // ModRevision
    let err = s
        .put("a", b"2".to_vec(), Expect::ModRevision(r1 + 5))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    let r2 = s
        .put("a", b"2".to_vec(), Expect::ModRevision(r1))
        .await
        .unwrap();
    assert_eq!(r2, 2);
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], 1, 2)
    );
    assert!(s
        .put("missing", b"x".to_vec(), Expect::ModRevision(1))
        .await
        .unwrap_err()
        .is_conflict());

    // Any
    let r3 = s.put("a", b"3".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(r3, 3);
    let r4 = s.put("b", b"1".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(r4, 4);

    // Failed writes do not bump the revision.
    assert_eq!(s.revision().await.unwrap(), 4);

    // Delete CAS
    assert!(s
        .delete("a", Expect::ModRevision(1))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(s
        .delete("a", Expect::Absent)
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        s.delete("a", Expect::ModRevision(3)).await.unwrap(),
        Some(5)
    );
    assert_eq!(s.get("a").await.unwrap(), None);
    // Deleting an absent key is a no-op without revision bump.
    assert_eq!(s.delete("a", Expect::Any).await.unwrap(), None);
    assert_eq!(s.delete("a", Expect::Absent).await.unwrap(), None);
    assert!(s
        .delete("a", Expect::ModRevision(3))
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(s.revision().await.unwrap(), 5);

    // Re-create gets a fresh create_revision.
    let r6 = s.put("a", b"new".to_vec(), Expect::Absent).await.unwrap();
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r6, r6));

    assert!(matches!(
        s.put("", vec![], Expect::Any).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn txn_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let r1 = s.put("x", b"1".to_vec(), Expect::Any).await.unwrap();

    // One failing compare (the last one) -> nothing applied.
    let err = s
        .txn(vec![
            put("y", "1", Expect::Absent),
            TxnOp::Delete {
                key: "x".into(),
                expect: Expect::ModRevision(r1),
            },
            put("z", "1", Expect::ModRevision(99)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { key } if key == "z"),
        "{err}"
    );
    assert_eq!(s.get("y").await.unwrap(), None);
    assert!(s.get("x").await.unwrap().is_some());
    assert_eq!(s.revision().await.unwrap(), r1);

    // All compares hold -> all applied at one revision.
    let rev = s
        .txn(vec![
            put("y", "1", Expect::Absent),
            TxnOp::Delete {
                key: "x".into(),
                expect: Expect::ModRevision(r1),
            },
            put("z", "1", Expect::Any),
        ])
        .await
        .unwrap();
    assert_eq!(rev, r1 + 1);
    assert_eq!(s.get("x").await.unwrap(), None);
    assert_eq!(s.get("y").await.unwrap().unwrap().mod_revision, rev);
    assert_eq!(s.get("z").await.unwrap().unwrap().mod_revision, rev);

    // Compares see the state before the txn, and duplicate keys are rejected.
    let err = s
        .txn(vec![
            put("k", "1", Expect::Absent),
            put("k", "2", Expect::Any),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)));

    // Empty / no-op txns do not bump the revision.
    assert_eq!(s.txn(vec![]).await.unwrap(), rev);
    assert_eq!(
        s.txn(vec![TxnOp::Delete {
            key: "nope".into(),
            expect: Expect::Any
        }])
        .await
        .unwrap(),
        rev
    );
    assert_eq!(s.revision().await.unwrap(), rev);

    // Watchers see a txn as events sharing one revision.
    let mut w = s.watch("", rev - 1);
    let evs = [next(&mut w).await, next(&mut w).await, next(&mut w).await];
    assert!(evs.iter().all(|e| e.revision() == rev));
    assert_eq!(
        evs.iter().map(|e| e.key()).collect::<Vec<_>>(),
        ["y", "x", "z"]
    );
}

#[tokio::test]
async fn concurrent_cas_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let r = s.put("c", b"0".to_vec(), Expect::Any).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put("c", format!("{i}").into_bytes(), Expect::ModRevision(r))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(s.revision().await.unwrap(), r + 1);
}

#[tokio::test]
async fn list_ordering_and_paging() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let keys = [
        "/cg/b",
        "/cg/a",
        "/cg/c/x",
        "/cg/c",
        "/cgx",
        "/c",
        "/cg/\u{e9}",
        "/cg/Z",
        "/d",
    ];
    for k in keys {
        s.put(k, k.as_bytes().to_vec(), Expect::Any).await.unwrap();
    }
    let (all, rev) = s.list("/cg/", None, None).await.unwrap();
    assert_eq!(rev, keys.len() as i64);
    let got: Vec<_> = all.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        got,
        ["/cg/Z", "/cg/a", "/cg/b", "/cg/c", "/cg/c/x", "/cg/\u{e9}"]
    );

    // Paging reassembles the same list.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, _) = s.list("/cg/", after.as_deref(), Some(2)).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = Some(page.last().unwrap().key.clone());
        paged.extend(page.into_iter().map(|kv| kv.key));
    }
    assert_eq!(paged, got);

    // Empty prefix lists everything, sorted.
    let (everything, _) = s.list("", None, None).await.unwrap();
    let mut sorted: Vec<_> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(
        everything.into_iter().map(|kv| kv.key).collect::<Vec<_>>(),
        sorted
    );
    assert!(s.list("/zzz", None, None).await.unwrap().0.is_empty());
    assert!(s.list("", None, Some(0)).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn watch_replays_history_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.put("/a/1", b"1".to_vec(), Expect::Any).await.unwrap(); // 1
    s.put("/b/1", b"x".to_vec(), Expect::Any).await.unwrap(); // 2
    s.put("/a/2", b"2".to_vec(), Expect::Any).await.unwrap(); // 3
    s.delete("/a/1", Expect::Any).await.unwrap(); // 4

    // From 1: strictly after revision 1.
    let mut w = s.watch("/a/", 1);
    match next(&mut w).await {
        WatchEvent::Put(kv) => assert_eq!(
            (kv.key.as_str(), kv.mod_revision, kv.create_revision),
            ("/a/2", 3, 3)
        ),
        e => panic!("{e:?}"),
    }
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Delete {
            key: "/a/1".into(),
            mod_revision: 4
        }
    );

    // Live.
    s.put("/b/2", b"y".to_vec(), Expect::Any).await.unwrap(); // 5, filtered out
    s.put("/a/2", b"22".to_vec(), Expect::Any).await.unwrap(); // 6
    match next(&mut w).await {
        WatchEvent::Put(kv) => assert_eq!(
            (
                kv.key.as_str(),
                kv.value.as_slice(),
                kv.mod_revision,
                kv.create_revision
            ),
            ("/a/2", &b"22"[..], 6, 3)
        ),
        e => panic!("{e:?}"),
    }

    // list + watch from the list revision sees exactly the later changes.
    let (items, rev) = s.list("/a/", None, None).await.unwrap();
    assert_eq!(items.len(), 1);
    let mut w2 = s.watch("/a/", rev);
    s.put("/a/3", b"3".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(next(&mut w2).await.key(), "/a/3");
    assert_eq!(next(&mut w).await.key(), "/a/3");

    // Watch from a future revision only yields events after it.
    let cur = s.revision().await.unwrap();
    let mut w3 = s.watch("/a/", cur + 1);
    s.put("/a/4", b"".to_vec(), Expect::Any).await.unwrap(); // cur+1: skipped
    s.put("/a/5", b"".to_vec(), Expect::Any).await.unwrap(); // cur+2
    assert_eq!(next(&mut w3).await.key(), "/a/5");

    // Stream ends when the store is dropped.
    drop(s);
    drop(w2);
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(10), w.collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(rest.len(), 2); // /a/4 and /a/5 were still buffered
}

#[tokio::test]
async fn watch_survives_lagging_receiver() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny live buffer so the watcher definitely lags.
    let s = open_opts(
        &dir,
        SqliteOptions {
            synchronous: Synchronous::Normal,
            watch_buffer: 4,
            ..Default::default()
        },
    );
    let mut w = s.watch("/k/", 0);
    s.put("/k/0", b"0".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), 1); // now in live mode

    let n = 300;
    for i in 1..n {
        // Mix in other prefixes and multi-key txns.
        s.put("/other", b"".to_vec(), Expect::Any).await.unwrap();
        s.txn(vec![
            put(&format!("/k/{i}"), &i.to_string(), Expect::Any),
            put(&format!("/k/{i}b"), "b", Expect::Any),
        ])
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 2 * (n - 1) {
        seen.push(next(&mut w).await);
    }
    for (j, ev) in seen.iter().enumerate() {
        let i = j / 2 + 1;
        let key = if j % 2 == 0 {
            format!("/k/{i}")
        } else {
            format!("/k/{i}b")
        };
        assert_eq!(ev.key(), key);
        assert_eq!(ev.revision(), 1 + 2 * i as i64);
    }
    // And it continues live afterwards.
    s.put("/k/last", b"".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(next(&mut w).await.key(), "/k/last");
}

#[tokio::test]
async fn watch_replays_long_history_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_opts(
        &dir,
        SqliteOptions {
            synchronous: Synchronous::Normal,
            ..Default::default()
        },
    );
    // One big txn (bigger than a replay chunk) plus many small writes.
    let big: Vec<_> = (0..1500)
        .map(|i| put(&format!("/big/{i:05}"), "v", Expect::Any))
        .collect();
    s.txn(big).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(&format!("/small/{i:05}"), b"v".to_vec(), Expect::Any)
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut w = s.watch("/", 0);
    let mut count = 0;
    let mut last_rev = 0;
    while count < 2700 {
        let ev = next(&mut w).await;
        assert!(ev.revision() >= last_rev);
        last_rev = ev.revision();
        count += 1;
    }
    assert_eq!(last_rev, 1201);
}

#[tokio::test]
async fn compaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..10 {
        s.put(&format!("k{i}"), vec![], Expect::Any).await.unwrap();
    }
    assert!(matches!(
        s.compact(11).await,
        Err(StoreError::FutureRevision {
            requested: 11,
            current: 10
        })
    ));
    s.compact(6).await.unwrap();
    s.compact(3).await.unwrap(); // older: no-op

    let mut w = s.watch("", 5);
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
    {
        Some(Err(StoreError::Compacted {
            requested: 5,
            oldest: 6,
        })) => {}
        other => panic!("{other:?}"),
    }
    assert!(w.next().await.is_none());

    let mut w = s.watch("", 6);
    assert_eq!(next(&mut w).await.revision(), 7);
    // Compaction does not touch current state.
    assert_eq!(s.list("", None, None).await.unwrap().0.len(), 10);
}

#[tokio::test]
async fn persistence_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir);
        s.put("a", b"1".to_vec(), Expect::Any).await.unwrap();
        s.put("b", b"1".to_vec(), Expect::Any).await.unwrap();
        s.delete("b", Expect::Any).await.unwrap(); // revision 3, deletes still count
    }
    let s = open(&dir);
    assert_eq!(s.revision().await.unwrap(), 3);
    assert_eq!(s.get("a").await.unwrap().unwrap().mod_revision, 1);
    assert_eq!(s.get("b").await.unwrap(), None);
    assert_eq!(s.put("c", vec![], Expect::Absent).await.unwrap(), 4);
    // History is still watchable after reopen.
    let mut w = s.watch("", 0);
    let revs: Vec<_> = [
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
    ]
    .iter()
    .map(|e| e.revision())
    .collect();
    assert_eq!(revs, [1, 2, 3, 4]);
}

#[tokio::test]
async fn json_helpers() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Group {
        name: String,
        cpu: f64,
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let g = Group {
        name: "web".into(),
        cpu: 1.5,
    };
    let rev = put_json(&s, "/g/web", &g, Expect::Absent).await.unwrap();
    let (back, mod_rev): (Group, _) = get_json(&s, "/g/web").await.unwrap().unwrap();
    assert_eq!((back, mod_rev), (g, rev));

    // Extension trait works on dyn Store too.
    let dynstore: std::sync::Arc<dyn Store> = std::sync::Arc::new(s.clone());
    dynstore
        .put_json("/g/x", &serde_json::json!({"a": 1}), Expect::Any)
        .await
        .unwrap();
    let got: Option<(serde_json::Value, Revision)> = dynstore.get_json("/g/x").await.unwrap();
    assert_eq!(got.unwrap().0["a"], 1);
    assert_eq!(dynstore.get_json::<Group>("/nope").await.unwrap(), None);

    s.put("/g/bad", b"not json".to_vec(), Expect::Any)
        .await
        .unwrap();
    assert!(matches!(
        get_json::<Group>(&s, "/g/bad").await,
        Err(StoreError::Codec { .. })
    ));
}

#[test]
fn schema_version_recorded_and_too_new_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite_conn(&path);
    conn.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("{other:?}"),
    }
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = c
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1);
    c
}
