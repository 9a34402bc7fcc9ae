//! Skiff extension: file shares for `azureFile` volumes (the self-hosted Azure Files).
//!
//! - `GET    /skiff/v1/shares` → `{"value": [share...]}` (no keys)
//! - `PUT    /skiff/v1/shares/{account}/{share}` body `{}` or `{"storageAccountKey": K}` →
//!   201 with the share and its key (generated if not given); 409 if it exists
//! - `GET    /skiff/v1/shares/{account}/{share}` → the share (no key)
//! - `DELETE /skiff/v1/shares/{account}/{share}` → 200, the record and the data are removed
//!
//! A volume `{"azureFile": {"storageAccountName", "shareName", "storageAccountKey"}}` mounts
//! the share if the key matches; the data persists across groups and restarts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use skiff_model::shares::{share_key, validate_share_names, ShareRecord, SHARES_PREFIX};
use skiff_model::ArmError;
use skiff_store::Expect;

use crate::error::ApiResult;
use crate::lro::{decode, json};
use crate::Api;

/// Shares are host-wide (not in any subscription): only an admin token may manage them when
/// authentication is on.
type Caller = Option<Extension<crate::auth::Principal>>;

fn admin_only(caller: &Caller) -> ApiResult<()> {
    match caller {
        Some(Extension(p)) if !p.0.admin => Err(ArmError::new(403, "AuthorizationFailed", "Only an admin token may manage file shares.").into()),
        _ => Ok(()),
    }
}

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new().route("/skiff/v1/shares", get(list)).route("/skiff/v1/shares/{account}/{share}", get(show).put(create).delete(remove))
}

fn not_found(account: &str, share: &str) -> ArmError {
    ArmError::new(404, "ShareNotFound", format!("The file share '{share}' of storage account '{account}' does not exist."))
}

async fn list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    admin_only(&caller)?;
    let (kvs, _) = api.store.list(SHARES_PREFIX, None, None).await?;
    let value = kvs.iter().map(|kv| decode::<ShareRecord>(kv).map(|r| r.to_json(false))).collect::<ApiResult<Vec<_>>>()?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "value": value })))
}

async fn show(State(api): State<Arc<Api>>, caller: Caller, Path((account, share)): Path<(String, String)>) -> ApiResult<Response> {
    admin_only(&caller)?;
    match api.store.get(&share_key(&account, &share)).await? {
        Some(kv) => Ok(json(StatusCode::OK, &decode::<ShareRecord>(&kv)?.to_json(false))),
        None => Err(not_found(&account, &share).into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateShare {
    #[serde(default)]
    storage_account_key: Option<String>,
}

async fn create(State(api): State<Arc<Api>>, caller: Caller, Path((account, share)): Path<(String, String)>, body: Bytes) -> ApiResult<Response> {
    admin_only(&caller)?;
    validate_share_names(&account, &share)?;
    let req: CreateShare = if body.iter().all(u8::is_ascii_whitespace) {
        CreateShare::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ArmError::invalid_content(format!("The share request is invalid: {e}")))?
    };
    let key = match req.storage_account_key {
        Some(k) if k.len() >= 16 => k,
        Some(_) => return Err(ArmError::bad_request("InvalidStorageAccountKey", "A storage account key needs at least 16 characters.").into()),
        None => format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
    };
    let rec = ShareRecord { storage_account_name: account.clone(), share_name: share.clone(), storage_account_key: key, created_at: jiff::Timestamp::now().to_string() };
    let mut stored = rec.clone();
    if let Some(k) = &api.cfg.secrets {
        stored.storage_account_key = k.seal(&rec.storage_account_key).map_err(|e| ArmError::internal(format!("sealing the share key failed: {e}")))?;
    }
    let raw = serde_json::to_vec(&stored).map_err(|e| ArmError::internal(e.to_string()))?;
    match api.store.put(&share_key(&account, &share), raw, Expect::Absent).await {
        Ok(_) => Ok(json(StatusCode::CREATED, &rec.to_json(true))),
        Err(e) if e.is_conflict() => Err(ArmError::conflict("ShareAlreadyExists", format!("The file share '{share}' of storage account '{account}' already exists.")).into()),
        Err(e) => Err(e.into()),
    }
}

/// Ids of the container groups whose volumes name the share (running, stopped or being
/// deleted: each of them would lose its data, or fail its next start).
async fn groups_using(api: &Api, account: &str, share: &str) -> ApiResult<Vec<String>> {
    let (kvs, _) = api.store.list(skiff_model::records::GROUPS_PREFIX, None, None).await?;
    let mut users = Vec::new();
    for kv in &kvs {
        let rec: skiff_model::records::GroupRecord = decode(kv)?;
        let uses = rec.spec.properties.volumes.iter().flatten().filter_map(|v| v.azure_file.as_ref()).any(|f| share_key(&f.storage_account_name, &f.share_name) == share_key(account, share));
        if uses {
            users.push(rec.resource_id());
        }
    }
    Ok(users)
}

async fn remove(State(api): State<Arc<Api>>, caller: Caller, Path((account, share)): Path<(String, String)>) -> ApiResult<Response> {
    admin_only(&caller)?;
    let users = groups_using(&api, &account, &share).await?;
    if !users.is_empty() {
        return Err(ArmError::conflict("ShareInUse", format!("The file share '{share}' of storage account '{account}' is used by {}; delete those container groups first.", users.join(", "))).into());
    }
    if api.store.delete(&share_key(&account, &share), Expect::Any).await?.is_none() {
        return Err(not_found(&account, &share).into());
    }
    api.node.remove_share_data(&account, &share).await?;
    Ok(StatusCode::OK.into_response())
}
