//! Container group verbs: create-or-update, get, tags patch, delete, start, stop, restart,
//! logs. Each write is one compare-and-swap transaction of the group record and (when the
//! verb is long-running) a new operation record; a lost race re-reads and retries.

use axum::http::StatusCode;
use axum::response::Response;
use skiff_model::arm::{ContainerGroup, TagsPatch};
use skiff_model::records::{group_key, operation_key, resource_group_key, Desired, GroupRecord, OperationKind, OperationRecord, OperationStatus, ResourceGroupRecord};
use skiff_model::validate::{parse_group, validate_group, validate_tags_patch};
use skiff_model::ArmError;
use skiff_store::{Expect, Revision};

use crate::error::ApiResult;
use crate::lro::*;
use crate::route::GroupRef;
use crate::Ctx;

pub(crate) const DELETING: &str = "Deleting";

pub(crate) async fn load(ctx: &Ctx, g: &GroupRef) -> ApiResult<Option<(GroupRecord, Revision)>> {
    get_record(&*ctx.api.store, &group_key(&g.subscription, &g.resource_group, &g.name)).await
}

pub(crate) async fn load_required(ctx: &Ctx, g: &GroupRef) -> ApiResult<(GroupRecord, Revision)> {
    match load(ctx, g).await? {
        Some(found) => Ok(found),
        None => Err(not_found(ctx, g).await),
    }
}

/// ARM's answer for a group that is not there: `ResourceGroupNotFound` when its resource group
/// is missing too, else `ResourceNotFound`.
pub(crate) async fn not_found(ctx: &Ctx, g: &GroupRef) -> crate::error::ApiError {
    match ctx.api.store.get(&resource_group_key(&g.subscription, &g.resource_group)).await {
        Ok(None) => ArmError::resource_group_not_found(&g.resource_group).into(),
        Ok(Some(_)) => ArmError::group_not_found(&g.resource_group, &g.name).into(),
        Err(e) => e.into(),
    }
}

fn is_deleting(rec: &GroupRecord) -> bool {
    rec.desired == Desired::Deleted || rec.provisioning_state == DELETING
}

fn being_deleted(rec: &GroupRecord) -> ArmError {
    ArmError::conflict("Conflict", format!("The container group '{}' is being deleted. Wait for the deletion to finish.", rec.name))
}

/// `PUT P`: create (201) or update (200) a group; both long-running.
pub(crate) async fn put(ctx: &Ctx, g: &GroupRef) -> ApiResult<Response> {
    let mut doc = parse_group(&ctx.body)?;
    if let Some(n) = doc.name.as_deref() {
        if !n.eq_ignore_ascii_case(&g.name) {
            return Err(ArmError::bad_request("InvalidRequestContent", format!("The name '{n}' in the request body does not match the name '{}' in the request path.", g.name)).with_target("name").into());
        }
    }
    doc.name = None;
    let store = &*ctx.api.store;
    let Some((rg, _)) = get_record::<ResourceGroupRecord>(store, &resource_group_key(&g.subscription, &g.resource_group)).await? else {
        return Err(ArmError::resource_group_not_found(&g.resource_group).into());
    };
    let requested_location = doc.location.as_deref().map(normalize_location).filter(|l| !l.is_empty());
    let mut spec = validate_group(doc, &g.name, &ctx.api.cfg.capacity)?;
    let key = group_key(&g.subscription, &g.resource_group, &g.name);

    for _ in 0..MAX_ATTEMPTS {
        let existing = get_record::<GroupRecord>(store, &key).await?;
        let Some((mut rec, rev)) = existing else {
            // Create.
            let location = requested_location.clone().unwrap_or_else(|| normalize_location(&rg.location));
            check_quota(ctx, &g.subscription, &location, &spec, None).await?;
            spec.location = Some(location);
            let mut rec = GroupRecord {
                uid: new_uid(),
                subscription: g.subscription.clone(),
                resource_group: rg.name.clone(),
                name: g.name.clone(),
                spec: ctx.api.seal_spec(&spec)?,
                desired: Desired::Running,
                generation: 1,
                observed_generation: 0,
                provisioning_state: "Pending".to_string(),
                pending_operation: None,
                group_view: skiff_model::arm::GroupInstanceView { events: Vec::new(), state: Some("Pending".to_string()), ..Default::default() },
                container_views: Default::default(),
                created_at: now(),
            };
            check_dns_label(ctx, &rec, &spec).await?;
            let location = group_location(ctx, &rec);
            let op = new_operation(&rec, OperationKind::Create, &location);
            rec.pending_operation = Some(op.id.clone());
            let ops = vec![txn_put(&key, &rec, Expect::Absent)?, txn_put(&operation_key(&op.id), &op, Expect::Absent)?];
            if !commit(store, ops).await? {
                continue;
            }
            let mut resp = json(StatusCode::CREATED, &rec.to_arm(true));
            async_headers(ctx, &mut resp, &rec.subscription, &location, &op.id);
            return Ok(resp);
        };

        if is_deleting(&rec) {
            return Err(being_deleted(&rec).into());
        }
        let old_location = group_location(ctx, &rec);
        let location = requested_location.clone().unwrap_or_else(|| old_location.clone());
        if location != old_location {
            return Err(ArmError::conflict(
                "InvalidResourceLocation",
                format!("The resource '{}' already exists in location '{old_location}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'.", rec.name, rec.resource_group),
            )
            .into());
        }
        spec.location = rec.spec.location.clone();
        let mut ops = Vec::new();
        let op_id;
        if same_except_tags(&spec, &ctx.api.open_spec(&rec.spec)?) {
            // Tags only (or nothing): no reprovisioning. Point the client at the operation
            // still in flight, if any, else at one that has already succeeded.
            if rec.spec.tags != spec.tags {
                rec.spec.tags = spec.tags.clone();
                ops.push(txn_put(&key, &rec, Expect::ModRevision(rev))?);
            }
            let in_flight = rec.pending_operation.clone().filter(|_| rec.observed_generation < rec.generation);
            match in_flight {
                Some(id) => op_id = id,
                None => {
                    let mut op = new_operation(&rec, OperationKind::Update, &location);
                    op.status = OperationStatus::Succeeded;
                    op.end_time = Some(op.start_time.clone());
                    ops.push(txn_put(&operation_key(&op.id), &op, Expect::Absent)?);
                    op_id = op.id;
                }
            }
        } else {
            check_quota(ctx, &g.subscription, &location, &spec, Some(&rec.spec)).await?;
            check_dns_label(ctx, &rec, &spec).await?;
            ops.extend(cancel_pending(store, &rec, "update").await?);
            rec.spec = ctx.api.seal_spec(&spec)?;
            rec.generation += 1;
            rec.provisioning_state = "Updating".to_string();
            rec.desired = Desired::Running;
            let op = new_operation(&rec, OperationKind::Update, &location);
            rec.pending_operation = Some(op.id.clone());
            ops.push(txn_put(&key, &rec, Expect::ModRevision(rev))?);
            ops.push(txn_put(&operation_key(&op.id), &op, Expect::Absent)?);
            op_id = op.id;
        }
        if !commit(store, ops).await? {
            continue;
        }
        let mut resp = json(StatusCode::OK, &rec.to_arm(true));
        async_headers(ctx, &mut resp, &rec.subscription, &location, &op_id);
        return Ok(resp);
    }
    Err(too_many_conflicts())
}

/// Whether two documents ask for the same containers: equal up to tags and to the empty
/// lists `GET` fills in (`initContainers`, `environmentVariables`), so a re-`PUT` of a read is
/// not an update.
fn same_except_tags(a: &ContainerGroup, b: &ContainerGroup) -> bool {
    fn canonical(g: &ContainerGroup) -> ContainerGroup {
        let mut g = g.clone();
        g.tags = None;
        let p = &mut g.properties;
        if p.init_containers.as_ref().is_some_and(Vec::is_empty) {
            p.init_containers = None;
        }
        for c in &mut p.containers {
            if c.properties.environment_variables.as_ref().is_some_and(Vec::is_empty) {
                c.properties.environment_variables = None;
            }
        }
        for c in p.init_containers.iter_mut().flatten() {
            if c.properties.environment_variables.as_ref().is_some_and(Vec::is_empty) {
                c.properties.environment_variables = None;
            }
        }
        g
    }
    canonical(a) == canonical(b)
}

/// Refuse a document whose DNS name label (under its label scope, in its location) is held by
/// another container group that still exists. The agent's claim of the name when it sets up
/// the network stays the one that decides a race; this answers the common case at once.
async fn check_dns_label(ctx: &Ctx, rec: &GroupRecord, spec: &ContainerGroup) -> ApiResult<()> {
    use skiff_net::label::{dns_record_key, group_fqdn, LabelOwner, LOCAL_TENANT};
    let Some(zone) = ctx.api.cfg.dns_zone.as_deref() else { return Ok(()) };
    let Some(ip) = spec.properties.ip_address.as_ref() else { return Ok(()) };
    let Some(label) = ip.dns_name_label.as_deref() else { return Ok(()) };
    let location = spec.location.as_deref().unwrap_or_default();
    let owner = LabelOwner { tenant: LOCAL_TENANT, subscription: &rec.subscription, resource_group: &rec.resource_group, object: &rec.uid };
    let fqdn = group_fqdn(label, ip.auto_generated_domain_name_label_scope.as_deref(), &owner, location, zone);
    let Some(held) = ctx.api.store.get(&dns_record_key(&fqdn)).await? else { return Ok(()) };
    let holder = String::from_utf8_lossy(&held.value);
    if holder == rec.uid {
        return Ok(());
    }
    let (groups, _) = ctx.api.store.list(skiff_model::records::GROUPS_PREFIX, None, None).await?;
    let alive = groups.iter().any(|kv| serde_json::from_slice::<GroupRecord>(&kv.value).is_ok_and(|g| g.uid == holder));
    if !alive {
        return Ok(());
    }
    Err(ArmError::conflict("DnsNameLabelConflict", format!("The DNS name label '{label}' is already used by another container group in location '{location}' ({fqdn}).")).with_target("properties.ipAddress.dnsNameLabel").into())
}

/// A subscription's use of one location: container groups, cores, memory in GB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QuotaUse {
    pub groups: u64,
    pub cores: u64,
    pub memory_gb: f64,
}

impl QuotaUse {
    fn of(spec: &ContainerGroup) -> QuotaUse {
        let a = skiff_model::resources::allocate(&spec.properties);
        QuotaUse { groups: 1, cores: u64::from(a.cpu_cores), memory_gb: a.memory_bytes as f64 / skiff_model::resources::BYTES_PER_GB }
    }
}

/// The quota error for adding `wanted` to `used` (minus `replaced`, the old version of a group
/// being updated, which `used` already counts), or `None` when it fits. Pure.
pub(crate) fn quota_violation(location: &str, limit: QuotaUse, used: QuotaUse, replaced: Option<QuotaUse>, wanted: QuotaUse) -> Option<ArmError> {
    let mut used = used;
    if let Some(old) = replaced {
        used.groups = used.groups.saturating_sub(old.groups);
        used.cores = used.cores.saturating_sub(old.cores);
        used.memory_gb = (used.memory_gb - old.memory_gb).max(0.0);
    }
    let exceeded = |quota: &str, limit: String, usage: String, requested: String| {
        ArmError::conflict(
            "ContainerGroupQuotaReached",
            format!("Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota '{quota}' exceeded in region '{location}'. Limit: '{limit}', Usage: '{usage}' Requested: '{requested}'."),
        )
    };
    if used.groups + wanted.groups > limit.groups {
        return Some(exceeded("ContainerGroups", limit.groups.to_string(), used.groups.to_string(), wanted.groups.to_string()));
    }
    if used.cores + wanted.cores > limit.cores {
        return Some(exceeded("StandardCores", limit.cores.to_string(), used.cores.to_string(), wanted.cores.to_string()));
    }
    // Compared in MB so float noise in the GB sums never refuses an exact fit.
    let mb = |gb: f64| (gb * 1024.0).round() as u64;
    if mb(used.memory_gb) + mb(wanted.memory_gb) > mb(limit.memory_gb) {
        let q = |gb: f64| format!("{}", (gb * 1000.0).round() / 1000.0);
        return Some(exceeded("MemoryInGB", q(limit.memory_gb), q(used.memory_gb), q(wanted.memory_gb)));
    }
    None
}

/// Refuse a create (`replacing: None`) or an update of the group whose current document is
/// `replacing` that would exceed the subscription's quota in the location (a check, not a
/// reservation: two racing creates may both pass).
async fn check_quota(ctx: &Ctx, subscription: &str, location: &str, spec: &ContainerGroup, replacing: Option<&ContainerGroup>) -> ApiResult<()> {
    let cfg = &ctx.api.cfg;
    let (groups, cores, memory_gb) = crate::handlers::usage_with_memory(ctx, subscription, location).await?;
    let limit = QuotaUse { groups: cfg.quota_groups, cores: cfg.quota_cores, memory_gb: cfg.quota_memory_gb };
    let used = QuotaUse { groups, cores, memory_gb };
    match quota_violation(location, limit, used, replacing.map(QuotaUse::of), QuotaUse::of(spec)) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `GET P`.
pub(crate) async fn get(ctx: &Ctx, g: &GroupRef) -> ApiResult<Response> {
    let (rec, _) = load_required(ctx, g).await?;
    Ok(json(StatusCode::OK, &rec.to_arm(true)))
}

/// `PATCH P`: tags only.
pub(crate) async fn patch(ctx: &Ctx, g: &GroupRef) -> ApiResult<Response> {
    let invalid = |e: String| ArmError::invalid_content(format!("The request content was invalid and could not be deserialized: {e}"));
    let value: serde_json::Value = serde_json::from_slice(&ctx.body).map_err(|e| invalid(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("expected a JSON object".to_string()).into());
    }
    let patch: TagsPatch = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    validate_tags_patch(&patch)?;
    let store = &*ctx.api.store;
    for _ in 0..MAX_ATTEMPTS {
        let (mut rec, rev) = load_required(ctx, g).await?;
        if is_deleting(&rec) {
            return Err(being_deleted(&rec).into());
        }
        let Some(tags) = patch.tags.clone() else { return Ok(json(StatusCode::OK, &rec.to_arm(true))) };
        if rec.spec.tags.as_ref() == Some(&tags) {
            return Ok(json(StatusCode::OK, &rec.to_arm(true)));
        }
        rec.spec.tags = Some(tags);
        if commit(store, vec![txn_put(&rec.key(), &rec, Expect::ModRevision(rev))?]).await? {
            return Ok(json(StatusCode::OK, &rec.to_arm(true)));
        }
    }
    Err(too_many_conflicts())
}

/// Mark `rec` for deletion: the writes, the operation id and the location. `None` when the
/// group is already being deleted (the id is then the operation in flight, if any).
pub(crate) async fn mark_deleted(ctx: &Ctx, rec: &mut GroupRecord, rev: Revision) -> ApiResult<(Vec<skiff_store::TxnOp>, Option<String>)> {
    if is_deleting(rec) {
        return Ok((Vec::new(), rec.pending_operation.clone()));
    }
    let store = &*ctx.api.store;
    let location = group_location(ctx, rec);
    let mut ops: Vec<skiff_store::TxnOp> = cancel_pending(store, rec, "delete").await?.into_iter().collect();
    rec.desired = Desired::Deleted;
    rec.provisioning_state = DELETING.to_string();
    let op = new_operation(rec, OperationKind::Delete, &location);
    rec.pending_operation = Some(op.id.clone());
    ops.push(txn_put(&rec.key(), rec, Expect::ModRevision(rev))?);
    ops.push(txn_put(&operation_key(&op.id), &op, Expect::Absent)?);
    Ok((ops, Some(op.id)))
}

/// `DELETE P`: 204 when absent, else 202 + `Location` + `Azure-AsyncOperation`.
pub(crate) async fn delete(ctx: &Ctx, g: &GroupRef) -> ApiResult<Response> {
    let store = &*ctx.api.store;
    for _ in 0..MAX_ATTEMPTS {
        let Some((mut rec, rev)) = load(ctx, g).await? else { return Ok(empty(StatusCode::NO_CONTENT)) };
        let (ops, op_id) = mark_deleted(ctx, &mut rec, rev).await?;
        if !ops.is_empty() && !commit(store, ops).await? {
            continue;
        }
        let location = group_location(ctx, &rec);
        let mut resp = json(StatusCode::ACCEPTED, &rec.to_arm(true));
        if let Some(id) = op_id {
            set_header(&mut resp, "location", &op_result_url(ctx, &rec.subscription, &location, &id));
            async_headers(ctx, &mut resp, &rec.subscription, &location, &id);
        }
        return Ok(resp);
    }
    Err(too_many_conflicts())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Start,
    Stop,
    Restart,
}

fn is_terminal_state(rec: &GroupRecord) -> bool {
    matches!(rec.group_view.state.as_deref(), Some("Stopped" | "Succeeded" | "Failed"))
}

/// `POST P/start|stop|restart`.
pub(crate) async fn action(ctx: &Ctx, g: &GroupRef, action: Action) -> ApiResult<Response> {
    let store = &*ctx.api.store;
    for _ in 0..MAX_ATTEMPTS {
        let (mut rec, rev) = load_required(ctx, g).await?;
        if is_deleting(&rec) {
            return Err(being_deleted(&rec).into());
        }
        let location = group_location(ctx, &rec);
        let (kind, status) = match action {
            Action::Stop => {
                if rec.desired == Desired::Stopped {
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
                let mut ops: Vec<_> = cancel_pending(store, &rec, "stop").await?.into_iter().collect();
                rec.desired = Desired::Stopped;
                rec.pending_operation = None;
                ops.push(txn_put(&rec.key(), &rec, Expect::ModRevision(rev))?);
                if commit(store, ops).await? {
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
                continue;
            }
            Action::Start => {
                if rec.desired == Desired::Running && !is_terminal_state(&rec) {
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
                (OperationKind::Start, StatusCode::ACCEPTED)
            }
            Action::Restart => (OperationKind::Restart, StatusCode::NO_CONTENT),
        };
        let mut ops: Vec<_> = cancel_pending(store, &rec, if kind == OperationKind::Start { "start" } else { "restart" }).await?.into_iter().collect();
        rec.desired = Desired::Running;
        rec.generation += 1;
        if kind == OperationKind::Start {
            rec.provisioning_state = "Pending".to_string();
        }
        let op: OperationRecord = new_operation(&rec, kind, &location);
        rec.pending_operation = Some(op.id.clone());
        ops.push(txn_put(&rec.key(), &rec, Expect::ModRevision(rev))?);
        ops.push(txn_put(&operation_key(&op.id), &op, Expect::Absent)?);
        if !commit(store, ops).await? {
            continue;
        }
        let mut resp = empty(status);
        async_headers(ctx, &mut resp, &rec.subscription, &location, &op.id);
        return Ok(resp);
    }
    Err(too_many_conflicts())
}

/// `GET P/containers/{c}/logs`.
pub(crate) async fn logs(ctx: &Ctx, g: &GroupRef, container: &str, tail: Option<usize>, timestamps: bool) -> ApiResult<Response> {
    let (rec, _) = load_required(ctx, g).await?;
    let known = rec.container_names().any(|c| c == container) || rec.spec.properties.init_containers.iter().flatten().any(|c| c.name == container);
    if !known {
        return Err(ArmError::container_not_found(&rec.name, container).into());
    }
    let content = ctx.api.node.logs(&rec, container, tail, timestamps).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "content": content })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: QuotaUse = QuotaUse { groups: 3, cores: 4, memory_gb: 2.0 };

    fn u(groups: u64, cores: u64, memory_gb: f64) -> QuotaUse {
        QuotaUse { groups, cores, memory_gb }
    }

    #[test]
    fn creates_fit_or_name_the_exceeded_quota() {
        let one = u(1, 1, 0.5);
        assert_eq!(quota_violation("westus", LIMIT, u(2, 3, 1.5), None, one), None, "exact fit on every quota");
        let e = quota_violation("westus", LIMIT, u(3, 0, 0.0), None, one).unwrap();
        assert_eq!((e.status, e.code.as_str()), (409, "ContainerGroupQuotaReached"));
        assert!(e.message.contains("'ContainerGroups'") && e.message.contains("Limit: '3', Usage: '3' Requested: '1'"), "{}", e.message);
        assert!(quota_violation("westus", LIMIT, u(1, 4, 0.0), None, one).unwrap().message.contains("StandardCores"));
        assert!(quota_violation("westus", LIMIT, u(1, 0, 1.75), None, one).unwrap().message.contains("MemoryInGB"));
        // Float noise in the sums never refuses an exact fit.
        assert_eq!(quota_violation("westus", LIMIT, u(0, 0, 0.1 + 0.2 + 0.7 + 0.5), None, u(1, 1, 0.5)), None);
    }

    #[test]
    fn an_update_counts_only_what_it_adds() {
        // The group already uses 1 core and 1 GB of the 2 GB in use.
        let used = u(3, 4, 2.0);
        assert_eq!(quota_violation("westus", LIMIT, used, Some(u(1, 1, 1.0)), u(1, 1, 1.0)), None, "same size: fits although the quota is full");
        assert!(quota_violation("westus", LIMIT, used, Some(u(1, 1, 1.0)), u(1, 1, 1.5)).unwrap().message.contains("MemoryInGB"));
        assert!(quota_violation("westus", LIMIT, used, Some(u(1, 1, 1.0)), u(1, 2, 1.0)).unwrap().message.contains("StandardCores"));
    }
}
