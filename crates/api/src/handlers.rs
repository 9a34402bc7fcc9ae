//! Route → handler, plus the read-only endpoints: lists with paging, operation status,
//! location information and the provider's operation list.

use axum::http::StatusCode;
use axum::response::Response;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json as j, Value};
use skiff_model::records::{group_prefix_rg, group_prefix_sub, operation_key, resource_group_key, GroupRecord, OperationRecord, OperationStatus, ResourceGroupRecord};
use skiff_model::ArmError;
use skiff_store::KeyValue;

use crate::error::ApiResult;
use crate::groups::{self, Action};
use crate::lro::*;
use crate::resource_groups as rgs;
use crate::route::{Page, Route};
use crate::Ctx;

pub(crate) async fn handle(ctx: &Ctx, route: Route) -> ApiResult<Response> {
    match route {
        Route::ListProviderOperations => Ok(json(StatusCode::OK, &provider_operations())),
        Route::ListResourceGroups { subscription, page } => {
            let prefix = resource_group_key(&subscription, "");
            list(ctx, &prefix, &page, |kv| Ok(serde_json::to_value(decode::<ResourceGroupRecord>(kv)?.to_arm()).unwrap_or(Value::Null))).await
        }
        Route::PutResourceGroup { subscription, resource_group } => rgs::put_rg(ctx, &subscription, &resource_group).await,
        Route::GetResourceGroup { subscription, resource_group } => rgs::get_rg(ctx, &subscription, &resource_group).await,
        Route::HeadResourceGroup { subscription, resource_group } => rgs::head_rg(ctx, &subscription, &resource_group).await,
        Route::DeleteResourceGroup { subscription, resource_group } => rgs::delete_rg(ctx, &subscription, &resource_group).await,
        Route::ListGroups { subscription, page } => list(ctx, &group_prefix_sub(&subscription), &page, group_item).await,
        Route::ListGroupsByResourceGroup { subscription, resource_group, page } => {
            // ARM answers 404 for a resource group that does not exist.
            if ctx.api.store.get(&resource_group_key(&subscription, &resource_group)).await?.is_none() {
                return Err(ArmError::resource_group_not_found(&resource_group).into());
            }
            list(ctx, &group_prefix_rg(&subscription, &resource_group), &page, group_item).await
        }
        Route::GetGroup(g) => groups::get(ctx, &g).await,
        Route::PutGroup(g) => groups::put(ctx, &g).await,
        Route::PatchGroup(g) => groups::patch(ctx, &g).await,
        Route::DeleteGroup(g) => groups::delete(ctx, &g).await,
        Route::StartGroup(g) => groups::action(ctx, &g, Action::Start).await,
        Route::StopGroup(g) => groups::action(ctx, &g, Action::Stop).await,
        Route::RestartGroup(g) => groups::action(ctx, &g, Action::Restart).await,
        Route::OutboundDependencies(g) => {
            if groups::load(ctx, &g).await?.is_none() {
                return Err(groups::not_found(ctx, &g).await);
            }
            Ok(json(StatusCode::OK, &Vec::<String>::new()))
        }
        Route::ContainerLogs { group, container, tail, timestamps } => groups::logs(ctx, &group, &container, tail, timestamps).await,
        Route::ContainerExec { group, container } => crate::streams::exec(ctx, &group, &container).await,
        Route::ContainerAttach { group, container } => crate::streams::attach(ctx, &group, &container).await,
        Route::ContainerLogStream { group, container, tail, timestamps } => crate::streams::log_stream(ctx, &group, &container, tail, timestamps).await,
        Route::GetOperation { subscription, id, .. } => {
            let op = load_op(ctx, &subscription, &id).await?;
            Ok(json(StatusCode::OK, &op.to_arm()))
        }
        Route::GetOperationResult { subscription, location, id } => operation_result(ctx, &subscription, &location, &id).await,
        Route::ListUsages { subscription, location } => usages(ctx, &subscription, &location).await,
        Route::ListCapabilities { location, .. } => {
            let cap = &ctx.api.cfg.capacity;
            Ok(json(
                StatusCode::OK,
                &j!({"value": [{
                    "resourceType": "containerGroups",
                    "osType": "Linux",
                    "location": location,
                    "ipAddressType": "Public",
                    "gpu": "None",
                    "capabilities": {"maxMemoryInGB": cap.max_memory_gb_per_group, "maxCpu": cap.max_cpu_per_group, "maxGpuCount": 0}
                }]}),
            ))
        }
        Route::ListCachedImages { .. } => {
            let images: Vec<Value> = ctx.api.node.cached_images().await.into_iter().map(|image| j!({"osType": "Linux", "image": image})).collect();
            Ok(json(StatusCode::OK, &j!({ "value": images })))
        }
        Route::UsageRecords { subscription, from, to, group_by, resource_group } => crate::metering::usage_records(ctx, &subscription, from, to, group_by, resource_group).await,
        Route::Events { subscription, resource_group, follow, since } => crate::metering::events(ctx, &subscription, resource_group, follow, since).await,
        Route::GroupMetrics { group, metric_names, interval } => crate::telemetry::group_metrics(ctx, &group, metric_names, interval).await,
        Route::PutVirtualNetwork(v) => crate::vnets::put_vnet(ctx, &v).await,
        Route::GetVirtualNetwork(v) => crate::vnets::get_vnet(ctx, &v).await,
        Route::DeleteVirtualNetwork(v) => crate::vnets::delete_vnet(ctx, &v).await,
        Route::PutSubnet { vnet, subnet } => crate::vnets::put_subnet(ctx, &vnet, &subnet).await,
        Route::GetSubnet { vnet, subnet } => crate::vnets::get_subnet(ctx, &vnet, &subnet).await,
        Route::DeleteSubnet { vnet, subnet } => crate::vnets::delete_subnet(ctx, &vnet, &subnet).await,
    }
}

fn group_item(kv: &KeyValue) -> ApiResult<Value> {
    let rec: GroupRecord = decode(kv)?;
    Ok(serde_json::to_value(rec.to_arm(false)).unwrap_or(Value::Null))
}

/// One page of the keys under `prefix`, in key order: `{"value":[...], "nextLink"?}`. The
/// continuation token is the last key served, relative to the prefix.
async fn list(ctx: &Ctx, prefix: &str, page: &Page, item: impl Fn(&KeyValue) -> ApiResult<Value>) -> ApiResult<Response> {
    let size = page.top.unwrap_or(ctx.api.cfg.page_size).max(1);
    let after = page.skip_token.as_deref().map(|t| format!("{prefix}{t}"));
    let (mut kvs, _) = ctx.api.store.list(prefix, after.as_deref(), Some(size.saturating_add(1))).await?;
    let more = kvs.len() > size;
    kvs.truncate(size);
    let value = kvs.iter().map(&item).collect::<ApiResult<Vec<Value>>>()?;
    let mut body = j!({ "value": value });
    if more {
        if let Some(last) = kvs.last() {
            let token = last.key.strip_prefix(prefix).unwrap_or(&last.key);
            let mut link = format!("{}{}?api-version={}", ctx.base, ctx.path, ctx.api_version);
            if let Some(top) = page.top {
                link.push_str(&format!("&$top={top}"));
            }
            link.push_str(&format!("&$skipToken={}", utf8_percent_encode(token, NON_ALPHANUMERIC)));
            body["nextLink"] = link.into();
        }
    }
    Ok(json(StatusCode::OK, &body))
}

fn operation_not_found(id: &str) -> ArmError {
    ArmError::new(404, "OperationNotFound", format!("The operation '{id}' was not found."))
}

async fn load_op(ctx: &Ctx, subscription: &str, id: &str) -> ApiResult<OperationRecord> {
    match get_record::<OperationRecord>(&*ctx.api.store, &operation_key(id)).await? {
        Some((op, _)) if op.subscription.eq_ignore_ascii_case(subscription) => Ok(op),
        _ => Err(operation_not_found(id).into()),
    }
}

/// `operationResults`: 202 while in progress, 204 when done, the error when it failed.
async fn operation_result(ctx: &Ctx, subscription: &str, location: &str, id: &str) -> ApiResult<Response> {
    let op = load_op(ctx, subscription, id).await?;
    match op.status {
        OperationStatus::InProgress => {
            let mut resp = empty(StatusCode::ACCEPTED);
            set_header(&mut resp, "location", &op_result_url(ctx, subscription, location, id));
            set_header(&mut resp, "retry-after", "1");
            Ok(resp)
        }
        OperationStatus::Succeeded => Ok(empty(StatusCode::NO_CONTENT)),
        OperationStatus::Failed | OperationStatus::Canceled => {
            let mut err = op.error.unwrap_or_else(|| ArmError::new(0, "OperationFailed", format!("The operation '{id}' {}.", op.status.as_str().to_ascii_lowercase())));
            // The status is not stored with the error; a failed provisioning is the request's
            // fault as far as the client can act on it (5xx would make the SDK retry 10 times).
            if !(400..600).contains(&err.status) || err.status >= 500 {
                err.status = if op.status == OperationStatus::Canceled { 409 } else { 400 };
            }
            Err(err.into())
        }
    }
}

/// Groups, cores and memory (GB) a subscription uses in a location (groups being deleted still count).
pub(crate) async fn usage_with_memory(ctx: &Ctx, subscription: &str, location: &str) -> ApiResult<(u64, u64, f64)> {
    let loc = normalize_location(location);
    let (items, _) = ctx.api.store.list(&group_prefix_sub(subscription), None, None).await?;
    let (mut groups, mut cores, mut memory) = (0u64, 0u64, 0f64);
    for kv in &items {
        let rec: GroupRecord = decode(kv)?;
        if group_location(ctx, &rec) != loc {
            continue;
        }
        groups += 1;
        let alloc = skiff_model::resources::allocate(&rec.spec.properties);
        cores += u64::from(alloc.cpu_cores);
        memory += alloc.memory_bytes as f64 / skiff_model::resources::BYTES_PER_GB;
    }
    Ok((groups, cores, memory))
}

async fn usages(ctx: &Ctx, subscription: &str, location: &str) -> ApiResult<Response> {
    let (groups, cores, memory) = usage_with_memory(ctx, subscription, location).await?;
    let cfg = &ctx.api.cfg;
    Ok(json(
        StatusCode::OK,
        &j!({"value": [
            {"unit": "Count", "currentValue": groups, "limit": cfg.quota_groups, "name": {"value": "ContainerGroups", "localizedValue": "Container Groups"}},
            {"unit": "Count", "currentValue": cores, "limit": cfg.quota_cores, "name": {"value": "StandardCores", "localizedValue": "Standard Cores"}},
            // The Usage schema's values are int32: memory in use rounds up, the quota down.
            {"unit": "GB", "currentValue": (memory - 1e-9).ceil().max(0.0) as i64, "limit": cfg.quota_memory_gb.floor() as i64, "name": {"value": "MemoryInGB", "localizedValue": "Memory (GB)"}},
        ]}),
    ))
}

/// The provider's operations: one per verb this API serves.
pub fn provider_operations() -> Value {
    const P: &str = "Microsoft.ContainerInstance";
    let ops: &[(&str, &str, &str, &str)] = &[
        ("containerGroups/read", "Container Group", "Get Container Group", "Get all container groups."),
        ("containerGroups/write", "Container Group", "Create or Update Container Group", "Create or update a specific container group."),
        ("containerGroups/delete", "Container Group", "Delete Container Group", "Delete the specific container group."),
        ("containerGroups/start/action", "Container Group", "Start Container Group", "Starts a specific container group."),
        ("containerGroups/stop/action", "Container Group", "Stop Container Group", "Stops a specific container group."),
        ("containerGroups/restart/action", "Container Group", "Restart Container Group", "Restarts a specific container group."),
        ("containerGroups/outboundNetworkDependenciesEndpoints/read", "Container Group", "List outbound network dependencies", "Gets the outbound network dependency endpoints of a container group."),
        ("containerGroups/containers/logs/read", "Container", "Get container logs", "Get the logs for a specific container."),
        ("containerGroups/containers/exec/action", "Container", "Container Exec", "Exec into a specific container."),
        ("containerGroups/containers/attach/action", "Container", "Container Attach", "Attach to the output stream of a specific container."),
        ("locations/operations/read", "Operation", "Get operation", "Gets the status of an asynchronous operation."),
        ("locations/usages/read", "Usage", "Get Usage", "Get the usage of container groups in a region."),
        ("locations/capabilities/read", "Capabilities", "Get Capabilities", "Get the capabilities of a region."),
        ("locations/cachedImages/read", "Cached Images", "Get Cached Images", "Gets the list of cached images of a region."),
        ("operations/read", "Operation", "List Operations", "List the operations of the Microsoft.ContainerInstance resource provider."),
    ];
    let value: Vec<Value> = ops
        .iter()
        .map(|(name, resource, operation, description)| {
            j!({"name": format!("{P}/{name}"), "display": {"provider": P, "resource": resource, "operation": operation, "description": description}, "origin": "User"})
        })
        .collect();
    j!({ "value": value })
}
