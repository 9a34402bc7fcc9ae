//! Housekeeping of the store: compact the change history watchers no longer need, and drop
//! finished operation records once clients have had ample time to read their result.

use std::sync::Arc;
use std::time::Duration;

use skiff_model::records::{OperationRecord, OPERATIONS_PREFIX};
use skiff_store::{Expect, Store};

/// Change history kept for watchers that reconnect (revisions).
const HISTORY_REVISIONS: i64 = 50_000;
/// How long a finished operation stays readable.
const OPERATION_RETENTION: Duration = Duration::from_secs(24 * 3600);
const INTERVAL: Duration = Duration::from_secs(300);

pub(crate) async fn run(store: Arc<dyn Store>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        if let Err(e) = once(store.as_ref(), jiff::Timestamp::now()).await {
            tracing::warn!(error = %e, "store maintenance failed");
        }
    }
}

pub(crate) async fn once(store: &dyn Store, now: jiff::Timestamp) -> Result<usize, skiff_store::StoreError> {
    let revision = store.revision().await?;
    if revision > HISTORY_REVISIONS {
        store.compact(revision - HISTORY_REVISIONS).await?;
    }
    let (ops, _) = store.list(OPERATIONS_PREFIX, None, None).await?;
    let mut removed = 0;
    for kv in ops {
        let Ok(op) = serde_json::from_slice::<OperationRecord>(&kv.value) else { continue };
        if expired(&op, now) && store.delete(&kv.key, Expect::ModRevision(kv.mod_revision)).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// A finished operation older than the retention period.
fn expired(op: &OperationRecord, now: jiff::Timestamp) -> bool {
    let Some(end) = op.end_time.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { return false };
    op.status.is_terminal() && now.duration_since(end).unsigned_abs() > OPERATION_RETENTION && end < now
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_model::records::{OperationKind, OperationStatus};

    fn op(status: OperationStatus, end: Option<&str>) -> OperationRecord {
        OperationRecord {
            id: "x".into(),
            subscription: "s".into(),
            location: "westus".into(),
            kind: OperationKind::Create,
            group_key: "k".into(),
            resource_id: "r".into(),
            generation: 1,
            status,
            start_time: "2026-01-01T00:00:00Z".into(),
            end_time: end.map(str::to_string),
            error: None,
            pulls: vec![],
        }
    }

    #[test]
    fn only_old_finished_operations_expire() {
        let now: jiff::Timestamp = "2026-01-03T00:00:00Z".parse().unwrap();
        assert!(expired(&op(OperationStatus::Succeeded, Some("2026-01-01T00:00:00Z")), now));
        assert!(!expired(&op(OperationStatus::Succeeded, Some("2026-01-02T12:00:00Z")), now));
        assert!(!expired(&op(OperationStatus::InProgress, None), now));
        assert!(!expired(&op(OperationStatus::Failed, Some("not a time")), now));
    }

    #[tokio::test]
    async fn maintenance_removes_expired_operations_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let old = op(OperationStatus::Succeeded, Some("2026-01-01T00:00:00Z"));
        let running = op(OperationStatus::InProgress, None);
        store.put("ops/old", serde_json::to_vec(&old).unwrap(), Expect::Absent).await.unwrap();
        store.put("ops/running", serde_json::to_vec(&running).unwrap(), Expect::Absent).await.unwrap();
        store.put("groups/s/rg/g", b"{}".to_vec(), Expect::Absent).await.unwrap();
        let now: jiff::Timestamp = "2026-01-03T00:00:00Z".parse().unwrap();
        assert_eq!(once(&store, now).await.unwrap(), 1);
        assert!(store.get("ops/old").await.unwrap().is_none());
        assert!(store.get("ops/running").await.unwrap().is_some());
        assert!(store.get("groups/s/rg/g").await.unwrap().is_some());
    }
}
