//! Minimal `Microsoft.Resources/resourceGroups`: enough for clients that create a resource
//! group before their container groups, and for `az group delete`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use skiff_model::arm::{ResourceGroup, TagsPatch};
use skiff_model::records::{group_prefix_rg, resource_group_key, GroupRecord, ResourceGroupRecord};
use skiff_model::validate::validate_tags_patch;
use skiff_model::ArmError;
use skiff_store::{Expect, TxnOp};

use crate::error::ApiResult;
use crate::lro::*;
use crate::Ctx;

fn key(sub: &str, rg: &str) -> String {
    resource_group_key(sub, rg)
}

/// `PUT /subscriptions/{s}/resourcegroups/{rg}`: 201 created, 200 updated.
pub(crate) async fn put_rg(ctx: &Ctx, sub: &str, rg: &str) -> ApiResult<Response> {
    let body: ResourceGroup = serde_json::from_slice(&ctx.body).map_err(|e| ArmError::invalid_content(format!("The request content was invalid and could not be deserialized: {e}")))?;
    let location = normalize_location(&body.location);
    if location.is_empty() {
        return Err(ArmError::bad_request("LocationRequired", "The location property is required for this definition.").with_target("location").into());
    }
    validate_tags_patch(&TagsPatch { tags: body.tags.clone() })?;
    let tags: BTreeMap<String, String> = body.tags.unwrap_or_default();
    let store = &*ctx.api.store;
    let k = key(sub, rg);
    for _ in 0..MAX_ATTEMPTS {
        let (rec, expect, status) = match get_record::<ResourceGroupRecord>(store, &k).await? {
            None => (ResourceGroupRecord { subscription: sub.to_string(), name: rg.to_string(), location: location.clone(), tags: tags.clone() }, Expect::Absent, StatusCode::CREATED),
            Some((mut old, rev)) => {
                if normalize_location(&old.location) != location {
                    return Err(ArmError::conflict(
                        "InvalidResourceGroupLocation",
                        format!("Invalid resource group location '{location}'. The Resource group already exists in location '{}'.", old.location),
                    )
                    .into());
                }
                old.tags = tags.clone();
                (old, Expect::ModRevision(rev), StatusCode::OK)
            }
        };
        if commit(store, vec![txn_put(&k, &rec, expect)?]).await? {
            return Ok(json(status, &rec.to_arm()));
        }
    }
    Err(too_many_conflicts())
}

async fn load(ctx: &Ctx, sub: &str, rg: &str) -> ApiResult<Option<(ResourceGroupRecord, skiff_store::Revision)>> {
    get_record(&*ctx.api.store, &key(sub, rg)).await
}

/// `GET /subscriptions/{s}/resourcegroups/{rg}`.
pub(crate) async fn get_rg(ctx: &Ctx, sub: &str, rg: &str) -> ApiResult<Response> {
    match load(ctx, sub, rg).await? {
        Some((rec, _)) => Ok(json(StatusCode::OK, &rec.to_arm())),
        None => Err(ArmError::resource_group_not_found(rg).into()),
    }
}

/// `HEAD /subscriptions/{s}/resourcegroups/{rg}`: 204 or 404, no body.
pub(crate) async fn head_rg(ctx: &Ctx, sub: &str, rg: &str) -> ApiResult<Response> {
    match load(ctx, sub, rg).await? {
        Some(_) => Ok(empty(StatusCode::NO_CONTENT)),
        None => Err(ArmError::resource_group_not_found(rg).into()),
    }
}

/// `DELETE /subscriptions/{s}/resourcegroups/{rg}`: every container group in it is marked for
/// deletion (as `DELETE P` does) and the resource group record removed, in one transaction.
/// 202 while container groups are still being torn down, 200 otherwise.
pub(crate) async fn delete_rg(ctx: &Ctx, sub: &str, rg: &str) -> ApiResult<Response> {
    let store = &*ctx.api.store;
    let k = key(sub, rg);
    for _ in 0..MAX_ATTEMPTS {
        let Some((_, rg_rev)) = load(ctx, sub, rg).await? else { return Err(ArmError::resource_group_not_found(rg).into()) };
        let (items, _) = store.list(&group_prefix_rg(sub, rg), None, None).await?;
        let mut ops: Vec<TxnOp> = Vec::new();
        for kv in &items {
            let mut rec: GroupRecord = decode(kv)?;
            let (writes, _) = crate::groups::mark_deleted(ctx, &mut rec, kv.mod_revision).await?;
            ops.extend(writes);
        }
        ops.push(TxnOp::Delete { key: k.clone(), expect: Expect::ModRevision(rg_rev) });
        if commit(store, ops).await? {
            return Ok(empty(if items.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED }));
        }
    }
    Err(too_many_conflicts())
}
