//! Shared plumbing of the handlers: record (de)coding, compare-and-swap commits with retry,
//! operation records and the long-running-operation headers ARM clients poll with.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_model::records::{operation_key, GroupRecord, OperationKind, OperationRecord, OperationStatus};
use skiff_model::ArmError;
use skiff_store::{Expect, KeyValue, Revision, Store, TxnOp};

use crate::error::{conflict, ApiError, ApiResult};
use crate::{Ctx, OPERATION_API_VERSION};

/// Read-modify-write attempts before a lost race is answered with 409 `Conflict`.
pub(crate) const MAX_ATTEMPTS: usize = 5;

pub(crate) fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// 12 random hex characters: names every host object of a group.
pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// ARM normalises locations: "West US" → "westus".
pub(crate) fn normalize_location(loc: &str) -> String {
    loc.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

pub(crate) fn encode<T: Serialize>(key: &str, value: &T) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        tracing::error!(key, error = %e, "encoding a record failed");
        ApiError(ArmError::internal("An internal error occurred while processing the request."))
    })
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> ApiResult<T> {
    serde_json::from_slice(&kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "a stored record does not decode");
        ApiError(ArmError::internal("An internal error occurred while processing the request."))
    })
}

pub(crate) async fn get_record<T: DeserializeOwned>(store: &dyn Store, key: &str) -> ApiResult<Option<(T, Revision)>> {
    match store.get(key).await? {
        None => Ok(None),
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
    }
}

pub(crate) fn txn_put<T: Serialize>(key: &str, value: &T, expect: Expect) -> ApiResult<TxnOp> {
    Ok(TxnOp::Put { key: key.to_string(), value: encode(key, value)?, expect })
}

/// Commit a transaction. `Ok(false)`: a compare failed (someone else wrote first); re-read and retry.
pub(crate) async fn commit(store: &dyn Store, ops: Vec<TxnOp>) -> ApiResult<bool> {
    match store.txn(ops).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn too_many_conflicts() -> ApiError {
    ApiError(conflict())
}

/// A new operation on `rec`, for the generation it has now.
pub(crate) fn new_operation(rec: &GroupRecord, kind: OperationKind, location: &str) -> OperationRecord {
    OperationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        subscription: rec.subscription.clone(),
        location: location.to_string(),
        kind,
        group_key: rec.key(),
        resource_id: rec.resource_id(),
        generation: rec.generation,
        status: OperationStatus::InProgress,
        start_time: now(),
        end_time: None,
        error: None,
        pulls: Vec::new(),
    }
}

/// The location a group's operations live under.
pub(crate) fn group_location(ctx: &Ctx, rec: &GroupRecord) -> String {
    rec.spec.location.as_deref().map(normalize_location).filter(|l| !l.is_empty()).unwrap_or_else(|| normalize_location(&ctx.api.cfg.location))
}

/// If `rec` has a pending operation still in progress, the write that cancels it (a later
/// request replaced it, so the agent will never complete it).
pub(crate) async fn cancel_pending(store: &dyn Store, rec: &GroupRecord, by: &str) -> ApiResult<Option<TxnOp>> {
    let Some(id) = rec.pending_operation.as_deref() else { return Ok(None) };
    let key = operation_key(id);
    let Some((mut op, rev)) = get_record::<OperationRecord>(store, &key).await? else { return Ok(None) };
    if op.status.is_terminal() {
        return Ok(None);
    }
    op.status = OperationStatus::Canceled;
    op.end_time = Some(now());
    op.error = Some(ArmError::conflict("OperationCanceled", format!("The operation was canceled because a later {by} request replaced it.")));
    Ok(Some(txn_put(&key, &op, Expect::ModRevision(rev))?))
}

pub(crate) fn op_url(ctx: &Ctx, subscription: &str, location: &str, id: &str) -> String {
    format!("{}/subscriptions/{subscription}/providers/{}/locations/{location}/operations/{id}?api-version={OPERATION_API_VERSION}", ctx.base, skiff_model::arm::PROVIDER)
}

pub(crate) fn op_result_url(ctx: &Ctx, subscription: &str, location: &str, id: &str) -> String {
    format!("{}/subscriptions/{subscription}/providers/{}/locations/{location}/operationResults/{id}?api-version={}", ctx.base, skiff_model::arm::PROVIDER, ctx.api_version)
}

pub(crate) fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// `Azure-AsyncOperation` + `Retry-After: 1` (the SDK otherwise waits 30 s between polls).
pub(crate) fn async_headers(ctx: &Ctx, resp: &mut Response, subscription: &str, location: &str, op_id: &str) {
    set_header(resp, "azure-asyncoperation", &op_url(ctx, subscription, location, op_id));
    set_header(resp, "retry-after", "1");
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "encoding a response failed");
            crate::error_response(&ArmError::internal("An internal error occurred while processing the request."))
        }
    }
}

pub(crate) fn empty(status: StatusCode) -> Response {
    status.into_response()
}
