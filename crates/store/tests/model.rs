//! Property test: random puts/deletes/txns behave like a BTreeMap model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use skiff_store::*;

#[derive(Debug, Clone)]
enum Exp {
    Any,
    Absent,
    Current,    // ModRevision(current mod rev of the key, if any, else 1)
    Stale(i64), // ModRevision(arbitrary)
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, Exp),
    Delete(u8, Exp),
    Txn(Vec<(bool, u8, u8, Exp)>), // (is_put, key, value, expect)
    Reopen,
}

fn exp() -> impl Strategy<Value = Exp> {
    prop_oneof![
        Just(Exp::Any),
        Just(Exp::Absent),
        Just(Exp::Current),
        (0i64..30).prop_map(Exp::Stale)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, any::<u8>(), exp()).prop_map(|(k, v, e)| Op::Put(k, v, e)),
        2 => (0u8..6, exp()).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => prop::collection::vec((any::<bool>(), 0u8..6, any::<u8>(), exp()), 0..4).prop_map(Op::Txn),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    value: u8,
    create: i64,
    modr: i64,
}

#[derive(Default)]
struct Model {
    map: BTreeMap<String, Entry>,
    rev: i64,
}

fn key(k: u8) -> String {
    // Include a non-ASCII key and a prefix relation to exercise ordering.
    ["a", "a/b", "ab", "b", "\u{e9}", "z"][k as usize].to_string()
}

impl Model {
    fn resolve(&self, k: &str, e: &Exp) -> Expect {
        match e {
            Exp::Any => Expect::Any,
            Exp::Absent => Expect::Absent,
            Exp::Current => Expect::ModRevision(self.map.get(k).map(|e| e.modr).unwrap_or(1)),
            Exp::Stale(r) => Expect::ModRevision(*r),
        }
    }
    fn holds(&self, k: &str, e: Expect) -> bool {
        match (e, self.map.get(k)) {
            (Expect::Any, _) | (Expect::Absent, None) => true,
            (Expect::ModRevision(r), Some(en)) => en.modr == r,
            _ => false,
        }
    }
    /// Returns Ok(new revision, changed) or Err(conflict key).
    fn txn(&mut self, ops: &[(bool, String, u8, Expect)]) -> Result<(i64, bool), String> {
        for (_, k, _, e) in ops {
            if !self.holds(k, *e) {
                return Err(k.clone());
            }
        }
        let changed = ops
            .iter()
            .any(|(p, k, _, _)| *p || self.map.contains_key(k));
        if !changed {
            return Ok((self.rev, false));
        }
        self.rev += 1;
        for (p, k, v, _) in ops {
            if *p {
                let create = self.map.get(k).map(|e| e.create).unwrap_or(self.rev);
                self.map.insert(
                    k.clone(),
                    Entry {
                        value: *v,
                        create,
                        modr: self.rev,
                    },
                );
            } else {
                self.map.remove(k);
            }
        }
        Ok((self.rev, true))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn matches_btreemap_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let opts = || SqliteOptions { synchronous: Synchronous::Normal, ..Default::default() };
        rt.block_on(async {
            let mut s = SqliteStore::open_with(&path, opts()).unwrap();
            let mut m = Model::default();
            for op in &ops {
                match op {
                    Op::Reopen => {
                        drop(s);
                        s = SqliteStore::open_with(&path, opts()).unwrap();
                    }
                    Op::Put(k, v, e) => {
                        let k = key(*k);
                        let e = m.resolve(&k, e);
                        let want = m.txn(&[(true, k.clone(), *v, e)]).map(|r| r.0);
                        let got = s.put(&k, vec![*v], e).await;
                        match (got, want) {
                            (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                            (Err(StoreError::Conflict { key }), Err(w)) => prop_assert_eq!(key, w),
                            (g, w) => prop_assert!(false, "put {k} {e:?}: got {g:?} want {w:?}"),
                        }
                    }
                    Op::Delete(k, e) => {
                        let k = key(*k);
                        let e = m.resolve(&k, e);
                        let want = m.txn(&[(false, k.clone(), 0, e)]).map(|(r, changed)| changed.then_some(r));
                        let got = s.delete(&k, e).await;
                        match (got, want) {
                            (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                            (Err(StoreError::Conflict { key }), Err(w)) => prop_assert_eq!(key, w),
                            (g, w) => prop_assert!(false, "delete {k} {e:?}: got {g:?} want {w:?}"),
                        }
                    }
                    Op::Txn(tops) => {
                        let mut seen = std::collections::HashSet::new();
                        let tops: Vec<_> = tops.iter().filter(|t| seen.insert(t.1)).collect();
                        let resolved: Vec<(bool, String, u8, Expect)> =
                            tops.iter().map(|(p, k, v, e)| { let k = key(*k); let e = m.resolve(&k, e); (*p, k, *v, e) }).collect();
                        let want = m.txn(&resolved).map(|r| r.0);
                        let txops = resolved.iter().map(|(p, k, v, e)| if *p {
                            TxnOp::Put { key: k.clone(), value: vec![*v], expect: *e }
                        } else {
                            TxnOp::Delete { key: k.clone(), expect: *e }
                        }).collect();
                        let got = s.txn(txops).await;
                        match (got, want) {
                            (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                            (Err(StoreError::Conflict { key }), Err(w)) => prop_assert_eq!(key, w),
                            (g, w) => prop_assert!(false, "txn {resolved:?}: got {g:?} want {w:?}"),
                        }
                    }
                }
            }
            // Final state equals the model, in order.
            let (all, rev) = s.list("", None, None).await.unwrap();
            prop_assert_eq!(rev, m.rev);
            let got: Vec<(String, Entry)> = all.into_iter().map(|kv| (kv.key, Entry { value: kv.value[0], create: kv.create_revision, modr: kv.mod_revision })).collect();
            let want: Vec<(String, Entry)> = m.map.clone().into_iter().collect();
            prop_assert_eq!(got, want);
            // Replaying the whole changelog into a map gives the same state too.
            use futures::StreamExt;
            let mut w = s.watch("", 0);
            let mut replayed = BTreeMap::new();
            // A sentinel write marks the end of history.
            s.put("~end", vec![0], Expect::Absent).await.unwrap();
            loop {
                let ev = w.next().await.unwrap().unwrap();
                if ev.key() == "~end" {
                    prop_assert_eq!(ev.revision(), m.rev + 1);
                    break;
                }
                match ev {
                    WatchEvent::Put(kv) => { replayed.insert(kv.key, kv.value[0]); }
                    WatchEvent::Delete { key, .. } => { replayed.remove(&key); }
                }
            }
            let want: BTreeMap<String, u8> = m.map.iter().map(|(k, e)| (k.clone(), e.value)).collect();
            prop_assert_eq!(replayed, want);
            Ok(())
        })?;
    }
}
