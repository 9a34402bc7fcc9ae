//! Per-group user-namespace id ranges. Each live group owns one range of host ids, so root in
//! a container is an unprivileged id on the host and no two groups share an owner. Ranges are
//! allocated like addresses: one store key per slot, taken with compare-and-swap so two groups
//! can never get the same one, kept across daemon restarts, freed when the group is deleted.

use std::collections::BTreeSet;

use skiff_runtime::IdRange;
use skiff_store::{Expect, Store, StoreError};

const PREFIX: &str = "uidranges/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsernsConfig {
    /// First host id of slot 0.
    pub base: u32,
    /// Ids per group (65536: every id a Linux image may use).
    pub size: u32,
    /// How many slots exist (`base + slots × size` must fit in 32 bits).
    pub slots: u32,
}

impl Default for UsernsConfig {
    fn default() -> Self {
        // 1e9 is far above the ids of real users and system accounts; 30 000 slots end below 2^32.
        UsernsConfig { base: 1_000_000_000, size: 65_536, slots: 30_000 }
    }
}

impl UsernsConfig {
    pub fn range_of(&self, slot: u32) -> IdRange {
        IdRange { host_base: self.base + slot * self.size, size: self.size }
    }
}

/// The first slot not in `used`, probing upwards (with wrap-around) from `start`.
///
/// Each group starts from a slot derived from its own uid, so groups created at the same
/// moment mostly ask for different slots instead of all racing for the lowest free one.
pub fn free_slot(used: &BTreeSet<u32>, slots: u32, start: u32) -> Option<u32> {
    if slots == 0 {
        return None;
    }
    (0..slots).map(|i| (start % slots + i) % slots).find(|s| !used.contains(s))
}

/// Where a group's probe for a free slot begins (FNV-1a of its uid: stable, spread out).
fn start_slot(uid: &str) -> u32 {
    uid.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn key(slot: u32) -> String {
    format!("{PREFIX}{slot:05}")
}

fn slot_of(key: &str) -> Option<u32> {
    key.strip_prefix(PREFIX)?.parse().ok()
}

/// The group's range, allocating one if it has none yet (idempotent per group uid).
pub async fn ensure_range(store: &dyn Store, cfg: &UsernsConfig, uid: &str) -> Result<Option<IdRange>, StoreError> {
    // A conflict means another group took that slot, so every retry follows someone's progress;
    // at most `slots` rounds can fail before the pool is seen full.
    for _ in 0..=cfg.slots {
        let (taken, _) = store.list(PREFIX, None, None).await?;
        if let Some(kv) = taken.iter().find(|kv| kv.value == uid.as_bytes()) {
            return Ok(slot_of(&kv.key).map(|s| cfg.range_of(s)));
        }
        let used: BTreeSet<u32> = taken.iter().filter_map(|kv| slot_of(&kv.key)).collect();
        let Some(slot) = free_slot(&used, cfg.slots, start_slot(uid)) else { return Ok(None) };
        match store.put(&key(slot), uid.as_bytes().to_vec(), Expect::Absent).await {
            Ok(_) => return Ok(Some(cfg.range_of(slot))),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict { key: PREFIX.to_string() })
}

/// Free the ranges of `uid` (or, with `keep`, of every group not in it).
pub async fn release(store: &dyn Store, owner: impl Fn(&str) -> bool) -> Result<(), StoreError> {
    let (taken, _) = store.list(PREFIX, None, None).await?;
    for kv in taken {
        if owner(&String::from_utf8_lossy(&kv.value)) {
            store.delete(&kv.key, Expect::ModRevision(kv.mod_revision)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_slot_from_start_wraps_around() {
        assert_eq!(free_slot(&BTreeSet::new(), 3, 0), Some(0));
        assert_eq!(free_slot(&BTreeSet::new(), 3, 7), Some(1));
        assert_eq!(free_slot(&[0, 1].into_iter().collect(), 3, 0), Some(2));
        assert_eq!(free_slot(&[0, 2].into_iter().collect(), 3, 2), Some(1), "wraps past the end");
        assert_eq!(free_slot(&[0, 1, 2].into_iter().collect(), 3, 1), None);
        assert_eq!(free_slot(&BTreeSet::new(), 0, 0), None);
        let cfg = UsernsConfig::default();
        let last = cfg.range_of(cfg.slots - 1);
        assert!(u64::from(last.host_base) + u64::from(last.size) <= u64::from(u32::MAX));
    }

    #[tokio::test]
    async fn ranges_are_unique_idempotent_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let cfg = UsernsConfig { base: 100_000, size: 65_536, slots: 2 };
        let a = ensure_range(&store, &cfg, "aaa").await.unwrap().unwrap();
        let b = ensure_range(&store, &cfg, "bbb").await.unwrap().unwrap();
        assert_ne!(a, b);
        assert_eq!(ensure_range(&store, &cfg, "aaa").await.unwrap(), Some(a), "idempotent per group");
        assert_eq!(ensure_range(&store, &cfg, "ccc").await.unwrap(), None, "no slot left");
        release(&store, |o| o == "aaa").await.unwrap();
        assert_eq!(ensure_range(&store, &cfg, "ccc").await.unwrap(), Some(a), "a freed range is reused");
    }

    /// Many groups allocating at once all get a range, and no two the same (the old allocator
    /// had every group race for the lowest slot and gave up after 16 lost rounds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_allocations_all_succeed_and_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(skiff_store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let cfg = UsernsConfig { base: 100_000, size: 65_536, slots: 64 };
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { ensure_range(store.as_ref(), &cfg, &format!("group-{i}")).await })
            })
            .collect();
        let mut seen = BTreeSet::new();
        for t in tasks {
            let range = t.await.unwrap().unwrap().expect("a slot for every group");
            assert!(seen.insert(range.host_base), "range handed out twice");
        }
        assert_eq!(seen.len(), 64);
    }
}
