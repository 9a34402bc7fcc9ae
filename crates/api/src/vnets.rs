//! Minimal `Microsoft.Network/virtualNetworks` and their `subnets`: named address spaces that
//! container groups join through `subnetIds`.
//!
//! Storage: `vnets/<lower-cased vnet id>` holds the virtual network (address space, location,
//! tags); each subnet is its own key `subnets/<lower-cased subnet id>` =
//! `{"addressPrefix", "name", "id"}`, which is what the agent reads when it attaches a group.
//! A virtual network's subnets are therefore listed by prefix, one source of truth.
//!
//! Address spaces must not overlap each other across the host (every subnet becomes a bridge
//! with a route on the one host), nor the operator's reserved blocks (the default private
//! CIDR). A subnet a container group refers to cannot be removed or renumbered (409).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use skiff_model::records::{resource_group_key, GroupRecord};
use skiff_model::ArmError;
use skiff_net::cidr::Cidr;
use skiff_store::{Expect, TxnOp};

use crate::error::ApiResult;
use crate::lro::*;
use crate::route::VnetRef;
use crate::Ctx;

const VNET_PREFIX: &str = "vnets/";
const SUBNET_PREFIX: &str = "subnets/";
const VNET_TYPE: &str = "Microsoft.Network/virtualNetworks";
const SUBNET_TYPE: &str = "Microsoft.Network/virtualNetworks/subnets";
/// Smallest subnet: a gateway plus at least a few groups.
const MAX_SUBNET_PREFIX: u8 = 29;

/// A stored virtual network (subnets live under their own keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VnetRecord {
    pub id: String,
    pub name: String,
    pub location: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub address_prefixes: Vec<String>,
}

/// A stored subnet; `addressPrefix` is the field the agent reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubnetRecord {
    pub id: String,
    pub name: String,
    pub address_prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VnetBody {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    properties: VnetProps,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VnetProps {
    address_space: Option<AddressSpace>,
    subnets: Option<Vec<SubnetBody>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressSpace {
    #[serde(default)]
    address_prefixes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubnetBody {
    name: Option<String>,
    #[serde(default)]
    properties: SubnetProps,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubnetProps {
    address_prefix: Option<String>,
}

pub fn vnet_id(v: &VnetRef) -> String {
    format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}", v.subscription, v.resource_group, v.name)
}

pub fn subnet_id(v: &VnetRef, subnet: &str) -> String {
    format!("{}/subnets/{subnet}", vnet_id(v))
}

fn vnet_key(v: &VnetRef) -> String {
    format!("{VNET_PREFIX}{}", vnet_id(v).to_ascii_lowercase())
}

fn subnet_key_of_id(id: &str) -> String {
    format!("{SUBNET_PREFIX}{}", id.to_ascii_lowercase())
}

fn subnets_prefix(v: &VnetRef) -> String {
    format!("{SUBNET_PREFIX}{}/subnets/", vnet_id(v).to_ascii_lowercase())
}

// ---- pure validation ----

fn name_ok(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.ends_with('.')
}

pub fn validate_vnet_name(name: &str) -> Result<(), ArmError> {
    if name_ok(name, 64) && name.len() >= 2 {
        return Ok(());
    }
    Err(ArmError::bad_request("InvalidResourceName", format!("Resource name {name} is invalid. The name can be up to 64 characters long (at least 2), start with a letter or number, and contain letters, numbers, '.', '-' or '_'.")))
}

pub fn validate_subnet_name(name: &str) -> Result<(), ArmError> {
    if name_ok(name, 80) {
        return Ok(());
    }
    Err(ArmError::bad_request("InvalidResourceName", format!("Resource name {name} is invalid. The name can be up to 80 characters long, start with a letter or number, and contain letters, numbers, '.', '-' or '_'.")))
}

fn parse_prefix(p: &str, target: &str) -> Result<Cidr, ArmError> {
    p.parse::<Cidr>()
        .map_err(|_| ArmError::bad_request("InvalidAddressPrefixFormat", format!("Address prefix {p} has an invalid format: give an IPv4 CIDR block such as 10.1.0.0/16.")).with_target(target))
}

/// Check a virtual network: `prefixes` (its address space), `subnets` (name, prefix) and the
/// address blocks already taken on this host by other virtual networks and the operator
/// (`taken`: (owner description, block)). Returns the parsed subnets. Pure.
pub fn check_layout(prefixes: &[String], subnets: &[(String, String)], taken: &[(String, Cidr)]) -> Result<Vec<(String, Cidr)>, ArmError> {
    if prefixes.is_empty() {
        return Err(ArmError::bad_request("InvalidAddressSpace", "The virtual network needs at least one address prefix in properties.addressSpace.addressPrefixes.").with_target("properties.addressSpace.addressPrefixes"));
    }
    let space = prefixes.iter().map(|p| parse_prefix(p, "properties.addressSpace.addressPrefixes")).collect::<Result<Vec<_>, _>>()?;
    for (i, a) in space.iter().enumerate() {
        if let Some(b) = space[i + 1..].iter().find(|b| a.overlaps(b)) {
            return Err(ArmError::bad_request("VnetAddressSpacesOverlap", format!("The address prefixes {a} and {b} of the virtual network overlap.")));
        }
        if let Some((owner, b)) = taken.iter().find(|(_, b)| a.overlaps(b)) {
            return Err(ArmError::bad_request("NetcfgVnetAddressSpaceOverlaps", format!("The address space {a} overlaps {b} of {owner}.")));
        }
    }
    let mut out: Vec<(String, Cidr)> = Vec::new();
    for (name, p) in subnets {
        validate_subnet_name(name)?;
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(ArmError::bad_request("DuplicateResourceName", format!("The subnet name {name} is used twice.")));
        }
        let c = parse_prefix(p, "properties.addressPrefix")?;
        if c.prefix() > MAX_SUBNET_PREFIX {
            return Err(ArmError::bad_request("InvalidAddressPrefix", format!("The subnet {name} is too small ({c}): give a prefix of /{MAX_SUBNET_PREFIX} or larger.")));
        }
        if !space.iter().any(|s| s.covers(&c)) {
            return Err(ArmError::bad_request("NetcfgSubnetRangeOutsideVnet", format!("The subnet {name} ({c}) is not inside the address space of the virtual network.")));
        }
        if let Some((other, oc)) = out.iter().find(|(_, oc)| oc.overlaps(&c)) {
            return Err(ArmError::bad_request("NetcfgSubnetRangesOverlap", format!("The subnet {name} ({c}) overlaps the subnet {other} ({oc}).")));
        }
        out.push((name.clone(), c));
    }
    Ok(out)
}

fn in_use(name: &str) -> ArmError {
    ArmError::conflict("InUseSubnetCannotBeDeleted", format!("The subnet {name} is in use by a container group and cannot be deleted or changed."))
}

fn vnet_not_found(name: &str) -> ArmError {
    ArmError::new(404, "ResourceNotFound", format!("The Resource 'Microsoft.Network/virtualNetworks/{name}' was not found."))
}

fn subnet_not_found(vnet: &str, name: &str) -> ArmError {
    ArmError::new(404, "NotFound", format!("Resource 'Microsoft.Network/virtualNetworks/{vnet}/subnets/{name}' was not found."))
}

// ---- store access ----

fn subnet_arm(s: &SubnetRecord) -> Value {
    j!({"id": s.id, "name": s.name, "type": SUBNET_TYPE, "properties": {"addressPrefix": s.address_prefix, "provisioningState": "Succeeded"}})
}

fn vnet_arm(v: &VnetRecord, subnets: &[SubnetRecord]) -> Value {
    j!({
        "id": v.id, "name": v.name, "type": VNET_TYPE, "location": v.location, "tags": v.tags,
        "properties": {
            "provisioningState": "Succeeded",
            "addressSpace": {"addressPrefixes": v.address_prefixes},
            "subnets": subnets.iter().map(subnet_arm).collect::<Vec<_>>(),
        }
    })
}

async fn subnets_of(ctx: &Ctx, v: &VnetRef) -> ApiResult<Vec<(SubnetRecord, skiff_store::Revision)>> {
    let (kvs, _) = ctx.api.store.list(&subnets_prefix(v), None, None).await?;
    kvs.iter().map(|kv| Ok((decode::<SubnetRecord>(kv)?, kv.mod_revision))).collect()
}

/// Lower-cased subnet ids that container groups (live or being deleted) refer to.
async fn used_subnets(ctx: &Ctx) -> ApiResult<Vec<String>> {
    let (kvs, _) = ctx.api.store.list("groups/", None, None).await?;
    let mut ids = Vec::new();
    for kv in &kvs {
        let rec: GroupRecord = decode(kv)?;
        for s in rec.spec.properties.subnet_ids.iter().flatten() {
            ids.push(s.id.to_ascii_lowercase());
        }
    }
    Ok(ids)
}

/// Address blocks of other virtual networks and the operator's reserved ones.
async fn taken(ctx: &Ctx, except: &str) -> ApiResult<Vec<(String, Cidr)>> {
    let mut out: Vec<(String, Cidr)> = ctx.api.cfg.network_reserved.iter().filter_map(|c| c.parse().ok().map(|c| ("the host's private network".to_string(), c))).collect();
    let (kvs, _) = ctx.api.store.list(VNET_PREFIX, None, None).await?;
    for kv in &kvs {
        if kv.key == except {
            continue;
        }
        let v: VnetRecord = decode(kv)?;
        out.extend(v.address_prefixes.iter().filter_map(|p| p.parse().ok().map(|c| (format!("virtual network {}", v.name), c))));
    }
    Ok(out)
}

async fn require_rg(ctx: &Ctx, v: &VnetRef) -> ApiResult<()> {
    if ctx.api.store.get(&resource_group_key(&v.subscription, &v.resource_group)).await?.is_none() {
        return Err(ArmError::resource_group_not_found(&v.resource_group).into());
    }
    Ok(())
}

fn body<T: serde::de::DeserializeOwned + Default>(ctx: &Ctx) -> ApiResult<T> {
    if ctx.body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&ctx.body).map_err(|e| ArmError::invalid_content(format!("The request content was invalid and could not be deserialized: {e}")).into())
}

/// The writes that make the stored subnets of `v` equal to `want` (by name), refusing to
/// remove or renumber a subnet in use.
fn subnet_writes(v: &VnetRef, have: &[(SubnetRecord, skiff_store::Revision)], want: &[(String, Cidr)], used: &[String]) -> ApiResult<Vec<TxnOp>> {
    let mut ops = Vec::new();
    for (old, rev) in have {
        let kept = want.iter().find(|(n, _)| n.eq_ignore_ascii_case(&old.name));
        let busy = used.contains(&old.id.to_ascii_lowercase());
        match kept {
            None if busy => return Err(in_use(&old.name).into()),
            None => ops.push(TxnOp::Delete { key: subnet_key_of_id(&old.id), expect: Expect::ModRevision(*rev) }),
            Some((_, c)) if busy && old.address_prefix.parse::<Cidr>().ok() != Some(*c) => return Err(in_use(&old.name).into()),
            Some(_) => {}
        }
    }
    for (name, c) in want {
        let old = have.iter().find(|(o, _)| o.name.eq_ignore_ascii_case(name));
        let rec = SubnetRecord { id: old.map(|(o, _)| o.id.clone()).unwrap_or_else(|| subnet_id(v, name)), name: old.map(|(o, _)| o.name.clone()).unwrap_or_else(|| name.clone()), address_prefix: c.to_string() };
        let expect = old.map(|(_, r)| Expect::ModRevision(*r)).unwrap_or(Expect::Absent);
        ops.push(txn_put(&subnet_key_of_id(&rec.id), &rec, expect)?);
    }
    Ok(ops)
}

// ---- handlers ----

/// `PUT …/virtualNetworks/{vnet}`: 201 created, 200 updated. The body's subnets replace the
/// stored ones (as ARM does); without `properties.subnets` the subnets are kept.
pub(crate) async fn put_vnet(ctx: &Ctx, v: &VnetRef) -> ApiResult<Response> {
    validate_vnet_name(&v.name)?;
    require_rg(ctx, v).await?;
    let b: VnetBody = body(ctx)?;
    let prefixes = b.properties.address_space.map(|a| a.address_prefixes).unwrap_or_default();
    let store = &*ctx.api.store;
    let key = vnet_key(v);
    for _ in 0..MAX_ATTEMPTS {
        let old = get_record::<VnetRecord>(store, &key).await?;
        let have = subnets_of(ctx, v).await?;
        let wanted: Vec<(String, String)> = match &b.properties.subnets {
            Some(list) => list.iter().map(|s| (s.name.clone().unwrap_or_default(), s.properties.address_prefix.clone().unwrap_or_default())).collect(),
            None => have.iter().map(|(s, _)| (s.name.clone(), s.address_prefix.clone())).collect(),
        };
        let parsed = check_layout(&prefixes, &wanted, &taken(ctx, &key).await?)?;
        let mut ops = subnet_writes(v, &have, &parsed, &used_subnets(ctx).await?)?;
        let location = b.location.as_deref().map(normalize_location).filter(|l| !l.is_empty()).or_else(|| old.as_ref().map(|(o, _)| o.location.clone())).unwrap_or_else(|| ctx.api.cfg.location.clone());
        let rec = VnetRecord {
            id: old.as_ref().map(|(o, _)| o.id.clone()).unwrap_or_else(|| vnet_id(v)),
            name: old.as_ref().map(|(o, _)| o.name.clone()).unwrap_or_else(|| v.name.clone()),
            location,
            tags: b.tags.clone().unwrap_or_default(),
            address_prefixes: prefixes.iter().map(|p| p.parse::<Cidr>().map(|c| c.to_string()).unwrap_or_else(|_| p.clone())).collect(),
        };
        let (expect, status) = match &old {
            Some((_, rev)) => (Expect::ModRevision(*rev), StatusCode::OK),
            None => (Expect::Absent, StatusCode::CREATED),
        };
        ops.push(txn_put(&key, &rec, expect)?);
        if commit(store, ops).await? {
            let subnets: Vec<SubnetRecord> = subnets_of(ctx, v).await?.into_iter().map(|(s, _)| s).collect();
            return Ok(json(status, &vnet_arm(&rec, &subnets)));
        }
    }
    Err(too_many_conflicts())
}

pub(crate) async fn get_vnet(ctx: &Ctx, v: &VnetRef) -> ApiResult<Response> {
    let Some((rec, _)) = get_record::<VnetRecord>(&*ctx.api.store, &vnet_key(v)).await? else { return Err(vnet_not_found(&v.name).into()) };
    let subnets: Vec<SubnetRecord> = subnets_of(ctx, v).await?.into_iter().map(|(s, _)| s).collect();
    Ok(json(StatusCode::OK, &vnet_arm(&rec, &subnets)))
}

/// `DELETE …/virtualNetworks/{vnet}`: 200, or 204 when there was none; 409 while a subnet is in use.
pub(crate) async fn delete_vnet(ctx: &Ctx, v: &VnetRef) -> ApiResult<Response> {
    let store = &*ctx.api.store;
    let key = vnet_key(v);
    for _ in 0..MAX_ATTEMPTS {
        let Some(kv) = store.get(&key).await? else { return Ok(empty(StatusCode::NO_CONTENT)) };
        let have = subnets_of(ctx, v).await?;
        let mut ops = subnet_writes(v, &have, &[], &used_subnets(ctx).await?)?;
        ops.push(TxnOp::Delete { key: key.clone(), expect: Expect::ModRevision(kv.mod_revision) });
        if commit(store, ops).await? {
            return Ok(empty(StatusCode::OK));
        }
    }
    Err(too_many_conflicts())
}

/// `PUT …/virtualNetworks/{vnet}/subnets/{subnet}`: 201 created, 200 updated.
pub(crate) async fn put_subnet(ctx: &Ctx, v: &VnetRef, name: &str) -> ApiResult<Response> {
    validate_subnet_name(name)?;
    let b: SubnetBody = body(ctx)?;
    let prefix = b.properties.address_prefix.unwrap_or_default();
    let store = &*ctx.api.store;
    let key = vnet_key(v);
    for _ in 0..MAX_ATTEMPTS {
        let Some(vkv) = store.get(&key).await? else { return Err(vnet_not_found(&v.name).into()) };
        let vnet: VnetRecord = decode(&vkv)?;
        let have = subnets_of(ctx, v).await?;
        let mut wanted: Vec<(String, String)> = have.iter().filter(|(s, _)| !s.name.eq_ignore_ascii_case(name)).map(|(s, _)| (s.name.clone(), s.address_prefix.clone())).collect();
        let existed = wanted.len() != have.len();
        wanted.push((name.to_string(), prefix.clone()));
        let parsed = check_layout(&vnet.address_prefixes, &wanted, &taken(ctx, &key).await?)?;
        let mut ops = subnet_writes(v, &have, &parsed, &used_subnets(ctx).await?)?;
        // The vnet must not vanish under the new subnet.
        ops.push(TxnOp::Put { key: key.clone(), value: vkv.value.clone(), expect: Expect::ModRevision(vkv.mod_revision) });
        if commit(store, ops).await? {
            let id = have.iter().find(|(s, _)| s.name.eq_ignore_ascii_case(name)).map(|(s, _)| s.id.clone()).unwrap_or_else(|| subnet_id(v, name));
            let Some((rec, _)) = get_record::<SubnetRecord>(store, &subnet_key_of_id(&id)).await? else { return Err(subnet_not_found(&v.name, name).into()) };
            return Ok(json(if existed { StatusCode::OK } else { StatusCode::CREATED }, &subnet_arm(&rec)));
        }
    }
    Err(too_many_conflicts())
}

pub(crate) async fn get_subnet(ctx: &Ctx, v: &VnetRef, name: &str) -> ApiResult<Response> {
    match get_record::<SubnetRecord>(&*ctx.api.store, &subnet_key_of_id(&subnet_id(v, name))).await? {
        Some((rec, _)) => Ok(json(StatusCode::OK, &subnet_arm(&rec))),
        None => Err(subnet_not_found(&v.name, name).into()),
    }
}

/// `DELETE …/subnets/{subnet}`: 200, 204 when there was none, 409 while a group uses it.
pub(crate) async fn delete_subnet(ctx: &Ctx, v: &VnetRef, name: &str) -> ApiResult<Response> {
    let store = &*ctx.api.store;
    let key = subnet_key_of_id(&subnet_id(v, name));
    let Some(kv) = store.get(&key).await? else { return Ok(empty(StatusCode::NO_CONTENT)) };
    if used_subnets(ctx).await?.contains(&subnet_id(v, name).to_ascii_lowercase()) {
        return Err(in_use(name).into());
    }
    if commit(store, vec![TxnOp::Delete { key, expect: Expect::ModRevision(kv.mod_revision) }]).await? {
        Ok(empty(StatusCode::OK))
    } else {
        Err(too_many_conflicts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn layout_rules() {
        let space = vec!["10.1.0.0/16".to_string()];
        let ok = check_layout(&space, &s(&[("a", "10.1.1.0/24"), ("b", "10.1.2.0/24")]), &[]).unwrap();
        assert_eq!(ok[1].1.to_string(), "10.1.2.0/24");
        let code = |subnets: &[(&str, &str)], space: &[&str], taken: &[(String, Cidr)]| {
            let space: Vec<String> = space.iter().map(|x| x.to_string()).collect();
            check_layout(&space, &s(subnets), taken).unwrap_err().code
        };
        assert_eq!(code(&[], &[], &[]), "InvalidAddressSpace");
        assert_eq!(code(&[], &["10.1.0.0"], &[]), "InvalidAddressPrefixFormat");
        assert_eq!(code(&[("a", "10.2.0.0/24")], &["10.1.0.0/16"], &[]), "NetcfgSubnetRangeOutsideVnet");
        assert_eq!(code(&[("a", "10.1.0.0/24"), ("b", "10.1.0.128/25")], &["10.1.0.0/16"], &[]), "NetcfgSubnetRangesOverlap");
        assert_eq!(code(&[("a", "10.1.0.0/24"), ("A", "10.1.1.0/24")], &["10.1.0.0/16"], &[]), "DuplicateResourceName");
        assert_eq!(code(&[("a", "10.1.0.0/30")], &["10.1.0.0/16"], &[]), "InvalidAddressPrefix");
        assert_eq!(code(&[("a/b", "10.1.0.0/24")], &["10.1.0.0/16"], &[]), "InvalidResourceName");
        assert_eq!(code(&[], &["10.1.0.0/16", "10.1.128.0/17"], &[]), "VnetAddressSpacesOverlap");
        assert_eq!(code(&[], &["10.77.5.0/24"], &[("host".into(), "10.77.0.0/16".parse().unwrap())]), "NetcfgVnetAddressSpaceOverlaps");
    }

    #[test]
    fn names() {
        assert!(validate_vnet_name("vnet-1").is_ok());
        assert!(validate_vnet_name("v").is_err());
        assert!(validate_vnet_name("-x").is_err());
        assert!(validate_subnet_name("s").is_ok());
        assert!(validate_subnet_name("s.").is_err());
    }

    proptest! {
        /// Whatever is accepted is a layout the host can route: subnets inside the space and
        /// pairwise disjoint.
        #[test]
        fn accepted_layouts_are_disjoint_and_inside(space in (any::<u32>(), 8u8..=24), subs in proptest::collection::vec((any::<u32>(), 16u8..=29), 0..6)) {
            let sp = Cidr::new(std::net::Ipv4Addr::from(space.0), space.1).unwrap();
            let subnets: Vec<(String, String)> = subs.iter().enumerate().map(|(i, (a, p))| (format!("s{i}"), Cidr::new(std::net::Ipv4Addr::from(*a), *p).unwrap().to_string())).collect();
            if let Ok(got) = check_layout(&[sp.to_string()], &subnets, &[]) {
                for (i, (_, a)) in got.iter().enumerate() {
                    prop_assert!(sp.covers(a));
                    for (_, b) in &got[i + 1..] {
                        prop_assert!(!a.overlaps(b));
                    }
                }
            }
        }
    }
}
