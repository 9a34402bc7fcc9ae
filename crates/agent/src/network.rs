//! The agent's side of group networking: what a group record asks for (public ports, DNS
//! label, subnet) turned into a `skiff_net` request before the supervisor starts, the
//! group's `/etc/hosts` and `/etc/resolv.conf`, and `ipAddress.ip`/`fqdn` written back to the
//! record. Without a configured network the group keeps a namespace with only `lo`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use skiff_model::records::GroupRecord;
use skiff_net::label::{dns_record_key, group_fqdn, LabelOwner, DNS_RECORD_PREFIX, LOCAL_TENANT};
use skiff_net::nft::Proto;
use skiff_net::{Attachment, GroupNetSpec};
use skiff_store::{Expect, StoreError};

use crate::records::update_group;
use crate::Shared;

/// The tenant every local subscription belongs to (label scope `TenantReuse`).

pub(crate) struct NetFiles {
    pub hosts: PathBuf,
    pub resolv: PathBuf,
}

/// The FQDN the record asks for, if any.
pub(crate) fn wanted_fqdn(sh: &Shared, rec: &GroupRecord) -> Option<String> {
    let net = sh.net.as_ref()?;
    let ip = rec.spec.properties.ip_address.as_ref()?;
    let label = ip.dns_name_label.as_deref()?;
    let owner = LabelOwner { tenant: LOCAL_TENANT, subscription: &rec.subscription, resource_group: &rec.resource_group, object: &rec.uid };
    let location = rec.spec.location.clone().unwrap_or_default();
    Some(group_fqdn(label, ip.auto_generated_domain_name_label_scope.as_deref(), &owner, &location, &net.config().dns_zone))
}

/// Where the group's `/etc/hosts` and `/etc/resolv.conf` live (written by [`provision`]);
/// `None` without a configured network.
pub(crate) fn files(sh: &Shared, dir: &Path) -> Option<NetFiles> {
    sh.net.as_ref().map(|_| NetFiles { hosts: dir.join("hosts"), resolv: dir.join("resolv.conf") })
}

/// The address (and FQDN) a group got, for `ipAddress.ip`/`fqdn` of its record.
pub(crate) struct Addresses {
    ip: String,
    fqdn: Option<String>,
}

/// Write the group's address and FQDN into its record (if they changed).
pub(crate) async fn record_addresses(sh: &Shared, rec: &GroupRecord, addresses: &Addresses) {
    let _ = update_group(sh.store.as_ref(), &rec.key(), |r| match r.spec.properties.ip_address.as_mut() {
        Some(a) if a.ip.as_deref() != Some(addresses.ip.as_str()) || a.fqdn != addresses.fqdn => {
            a.ip = Some(addresses.ip.clone());
            a.fqdn = addresses.fqdn.clone();
            true
        }
        _ => false,
    })
    .await;
}

/// Set up the group's network inside its namespace, which must exist (the owner creates it
/// before the supervisor, which joins it); returns what to [`record_addresses`] (`None`
/// without a configured network), or `Err((code, message))` for the provisioning error.
pub(crate) async fn provision(sh: &Shared, rec: &GroupRecord, dir: &Path, netns: &Path) -> Result<Option<Addresses>, (String, String)> {
    let (Some(net), Some(NetFiles { hosts, resolv })) = (sh.net.as_ref(), files(sh, dir)) else { return Ok(None) };
    let internal = |m: String| ("ContainerGroupDeploymentFailed".to_string(), m);
    let fq = wanted_fqdn(sh, rec);
    if let Some(f) = &fq {
        claim_name(sh, f, &rec.uid).await?;
    }
    let ipa = rec.spec.properties.ip_address.as_ref();
    let public_ports = ipa.filter(|ip| ip.address_type.eq_ignore_ascii_case("Public")).map(|ip| {
        ip.ports
            .iter()
            .filter_map(|p| {
                let proto = if p.protocol_or_default() == "UDP" { Proto::Udp } else { Proto::Tcp };
                u16::try_from(p.port).ok().map(|port| (port, proto))
            })
            .collect::<Vec<_>>()
    });
    let attachment = subnet_of(sh, rec).await.map_err(|m| ("SubnetNotFound".to_string(), m))?;
    let spec = GroupNetSpec { uid: rec.uid.clone(), netns: netns.to_owned(), attachment, public_ports };
    let got = net.setup_group(&spec).await.map_err(|e| internal(format!("setting up the group network: {}", chain(&e))))?;

    let hosts_text = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{}\t{}\n", got.private_ip, rec.name);
    std::fs::write(&hosts, hosts_text).map_err(|e| internal(format!("writing {}: {e}", hosts.display())))?;
    std::fs::write(&resolv, resolv_conf(rec)).map_err(|e| internal(format!("writing {}: {e}", resolv.display())))?;

    let answer = got.public_ip.unwrap_or(got.private_ip);
    if let Some(f) = &fq {
        net.records.set(f, answer);
    }
    Ok(Some(Addresses { ip: answer.to_string(), fqdn: fq }))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The group's resolver: its `dnsConfig`, else the host's non-loopback name servers.
fn resolv_conf(rec: &GroupRecord) -> String {
    if let Some(dns) = &rec.spec.properties.dns_config {
        let mut s: String = dns.name_servers.iter().map(|n| format!("nameserver {n}\n")).collect();
        if let Some(search) = &dns.search_domains {
            s.push_str(&format!("search {search}\n"));
        }
        if let Some(opts) = &dns.options {
            s.push_str(&format!("options {opts}\n"));
        }
        return s;
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter(|l| !l.trim_start().starts_with("nameserver") || !l.split_whitespace().nth(1).is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        .map(|l| format!("{l}\n"))
        .collect()
}

const SUBNETS_PREFIX: &str = "subnets/";

/// Remove the bridges of subnets that no longer exist.
async fn remove_stale_subnet_bridges(sh: &Shared) {
    let Some(net) = sh.net.as_ref() else { return };
    let live: HashSet<String> = match sh.store.list(SUBNETS_PREFIX, None, None).await {
        Ok((kvs, _)) => kvs.iter().filter_map(|kv| kv.key.strip_prefix(SUBNETS_PREFIX).map(str::to_string)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "listing subnets failed");
            return;
        }
    };
    match net.remove_stale_subnet_bridges(&live).await {
        Ok(gone) if !gone.is_empty() => tracing::info!(bridges = ?gone, "removed the bridges of deleted subnets"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %chain(&e), "removing the bridges of deleted subnets failed"),
    }
}

/// Follow subnet deletions: a deleted subnet's bridge goes with it (its groups went first: a
/// subnet in use cannot be deleted), so re-creating the subnet with another prefix starts clean.
pub(crate) async fn follow_subnets(sh: std::sync::Arc<Shared>) {
    if sh.net.is_none() {
        return;
    }
    use futures::StreamExt;
    loop {
        let revision = match sh.store.list(SUBNETS_PREFIX, None, None).await {
            Ok((_, rev)) => rev,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        remove_stale_subnet_bridges(&sh).await;
        let mut events = sh.store.watch(SUBNETS_PREFIX, revision);
        while let Some(ev) = events.next().await {
            match ev {
                Ok(skiff_store::WatchEvent::Delete { .. }) => remove_stale_subnet_bridges(&sh).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "watching subnets failed; starting over");
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A subnet of a named virtual network, stored by the network API under
/// `subnets/<lower-cased resource id>` as `{"addressPrefix": "10.1.0.0/24"}`.
async fn subnet_of(sh: &Shared, rec: &GroupRecord) -> Result<Attachment, String> {
    let Some(id) = rec.spec.properties.subnet_ids.as_ref().and_then(|s| s.first()) else { return Ok(Attachment::Default) };
    let key = format!("subnets/{}", id.id.to_ascii_lowercase());
    let kv = sh.store.get(&key).await.map_err(|e| format!("reading subnet {}: {e}", id.id))?.ok_or_else(|| format!("The subnet '{}' does not exist.", id.id))?;
    let v: serde_json::Value = serde_json::from_slice(&kv.value).map_err(|e| format!("unreadable subnet {}: {e}", id.id))?;
    let cidr = v["addressPrefix"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("subnet {} has no valid addressPrefix", id.id))?;
    Ok(Attachment::Subnet { id: id.id.to_ascii_lowercase(), cidr })
}

/// Reserve the FQDN for this group; a live group holding it already is a conflict.
async fn claim_name(sh: &Shared, fqdn: &str, uid: &str) -> Result<(), (String, String)> {
    let key = dns_record_key(fqdn);
    match sh.store.put(&key, uid.as_bytes().to_vec(), Expect::Absent).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => match sh.store.get(&key).await {
            Ok(Some(kv)) if kv.value == uid.as_bytes() => Ok(()),
            _ => Err(("DnsNameLabelConflict".to_string(), format!("The DNS name '{fqdn}' is already used by another container group."))),
        },
        Err(e) => Err(("ContainerGroupDeploymentFailed".to_string(), format!("reserving DNS name {fqdn}: {e}"))),
    }
}

/// After a daemon restart: answer DNS for a group that is still there.
pub(crate) fn adopt(sh: &Shared, rec: &GroupRecord) {
    let Some(net) = sh.net.as_ref() else { return };
    let ip = rec.spec.properties.ip_address.as_ref();
    if let (Some(f), Some(ip)) = (ip.and_then(|i| i.fqdn.clone()), ip.and_then(|i| i.ip.as_deref()).and_then(|s| s.parse().ok())) {
        net.records.set(&f, ip);
    }
}

/// Remove everything network of a deleted group and free its addresses and name.
pub(crate) async fn teardown(sh: &Shared, rec: &GroupRecord) {
    let Some(net) = sh.net.as_ref() else { return };
    let fq = wanted_fqdn(sh, rec);
    if let Err(e) = net.teardown_group(&rec.uid, fq.as_deref()).await {
        tracing::warn!(group = %rec.name, error = %chain(&e), "network teardown failed");
    }
    if let Some(f) = fq {
        if let Ok(Some(kv)) = sh.store.get(&dns_record_key(&f)).await {
            if kv.value == rec.uid.as_bytes() {
                let _ = sh.store.delete(&kv.key, Expect::ModRevision(kv.mod_revision)).await;
            }
        }
    }
}

/// Network leftovers of groups that no longer exist: veths, nft chains and map entries,
/// public addresses, address and name reservations.
pub(crate) async fn sweep(sh: &Shared, known: &HashSet<String>) {
    let Some(net) = sh.net.as_ref() else { return };
    match net.sweep(known).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed network leftovers of deleted groups"),
        Err(e) => tracing::warn!(error = %chain(&e), "sweeping network leftovers failed"),
    }
    if let Ok((kvs, _)) = sh.store.list(DNS_RECORD_PREFIX, None, None).await {
        for kv in kvs {
            if !known.contains(String::from_utf8_lossy(&kv.value).as_ref()) {
                let _ = sh.store.delete(&kv.key, Expect::ModRevision(kv.mod_revision)).await;
            }
        }
    }
}
