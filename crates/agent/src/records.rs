//! Read-modify-write of records with compare-and-swap, so the agent's writes never clobber a
//! concurrent change made through the API (and vice versa).

use skiff_model::records::{operation_key, GroupRecord, OperationRecord, OperationStatus};
use skiff_model::ArmError;
use skiff_store::{Expect, Store, StoreError, TxnOp};

const CAS_ATTEMPTS: usize = 20;

/// Apply `change` to the latest stored version of the group. Returns the stored record, or
/// `None` when the record no longer exists. `change` returns false to skip the write.
pub async fn update_group(store: &dyn Store, key: &str, mut change: impl FnMut(&mut GroupRecord) -> bool) -> Result<Option<GroupRecord>, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(kv) = store.get(key).await? else { return Ok(None) };
        let Ok(mut rec) = serde_json::from_slice::<GroupRecord>(&kv.value) else { return Ok(None) };
        if !change(&mut rec) {
            return Ok(Some(rec));
        }
        let value = serde_json::to_vec(&rec).unwrap_or_default();
        match store.put(key, value, Expect::ModRevision(kv.mod_revision)).await {
            Ok(_) => return Ok(Some(rec)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict { key: key.to_string() })
}

pub async fn update_operation(store: &dyn Store, id: &str, mut change: impl FnMut(&mut OperationRecord) -> bool) -> Result<(), StoreError> {
    let key = operation_key(id);
    for _ in 0..CAS_ATTEMPTS {
        let Some(kv) = store.get(&key).await? else { return Ok(()) };
        let Ok(mut op) = serde_json::from_slice::<OperationRecord>(&kv.value) else { return Ok(()) };
        if !change(&mut op) {
            return Ok(());
        }
        let value = serde_json::to_vec(&op).unwrap_or_default();
        match store.put(&key, value, Expect::ModRevision(kv.mod_revision)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict { key })
}

/// Finish an operation once (later calls leave a terminal operation alone).
pub async fn complete_operation(store: &dyn Store, id: &str, now: &str, error: Option<ArmError>) -> Result<(), StoreError> {
    update_operation(store, id, |op| {
        if op.status.is_terminal() {
            return false;
        }
        op.status = if error.is_some() { OperationStatus::Failed } else { OperationStatus::Succeeded };
        op.error = error.clone();
        op.end_time = Some(now.to_string());
        true
    })
    .await
}

/// Remove a deleted group's record and finish its delete operation in one transaction.
pub async fn remove_group(store: &dyn Store, rec: &GroupRecord, now: &str) -> Result<(), StoreError> {
    let mut ops = vec![TxnOp::Delete { key: rec.key(), expect: Expect::Any }];
    if let Some(id) = &rec.pending_operation {
        let key = operation_key(id);
        if let Some(kv) = store.get(&key).await? {
            if let Ok(mut op) = serde_json::from_slice::<OperationRecord>(&kv.value) {
                if !op.status.is_terminal() {
                    op.status = OperationStatus::Succeeded;
                    op.end_time = Some(now.to_string());
                    ops.push(TxnOp::Put { key, value: serde_json::to_vec(&op).unwrap_or_default(), expect: Expect::ModRevision(kv.mod_revision) });
                }
            }
        }
    }
    match store.txn(ops).await {
        Ok(_) => Ok(()),
        // The operation changed under us: delete the record alone, then finish the operation.
        Err(StoreError::Conflict { .. }) => {
            store.delete(&rec.key(), Expect::Any).await?;
            if let Some(id) = &rec.pending_operation {
                complete_operation(store, id, now, None).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
