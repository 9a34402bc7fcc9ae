//! nftables: the only module that talks to `nft`. It owns table `ip skiff` and nothing
//! else, and sends each change as one JSON batch on `nft -j -f -` (atomic per batch).
//!
//! Layout of the table:
//! - map `pubips` (public address → `jump g-<uid>`), used by one rule in the `prerouting`
//!   (traffic from other hosts) and `output` (traffic from this host) nat chains;
//! - chain `g-<uid>` per group: `dnat` of exactly the group's listed TCP/UDP ports;
//! - set `bridges` (Skiff's bridge names) and set `intra` (`bridge . bridge` for subnets whose
//!   members may talk to each other);
//! - `postrouting`: masquerade loopback sources leaving through a Skiff bridge (a container
//!   cannot answer 127.0.0.1), and, if an egress interface is configured, group sources
//!   leaving through it;
//! - `forward`: groups reach only their own subnet (and the egress interface if configured);
//!   nothing reaches a group's private address from outside except through a DNAT;
//! - `input`: groups cannot open connections to the host itself.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

pub const TABLE: &str = "skiff";
const FAMILY: &str = "ip";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected the batch: {stderr}")]
    Rejected { stderr: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

fn obj(kind: &str, mut body: Value) -> Value {
    body["family"] = json!(FAMILY);
    body["table"] = json!(TABLE);
    json!({ kind: body })
}

fn chain(name: &str) -> Value {
    obj("chain", json!({"name": name}))
}

fn base_chain(name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    obj("chain", json!({"name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}))
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": obj("rule", json!({"chain": chain, "expr": expr}))})
}

fn meta_in(key: &str, set: &str) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": format!("@{set}")}})
}

fn meta_eq(key: &str, value: &str) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": value}})
}

fn ct_state(states: &[&str]) -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": states}})
}

/// The table with its sets, maps and base chains; the base chains' rules are rewritten (so
/// a changed setting takes effect) while group chains and set elements are kept, so groups
/// that survived a daemon restart keep their forwarding.
pub fn base_batch(egress: Option<&str>, host_access: bool) -> Value {
    let mut cmds = vec![
        json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}),
        json!({"add": obj("set", json!({"name": "bridges", "type": "ifname"}))}),
        json!({"add": obj("set", json!({"name": "intra", "type": ["ifname", "ifname"]}))}),
        json!({"add": obj("map", json!({"name": "pubips", "type": "ipv4_addr", "map": "verdict"}))}),
    ];
    let chains = [
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
        ("forward", "filter", "forward", 0),
        ("input", "filter", "input", 0),
    ];
    for (name, kind, hook, prio) in chains {
        cmds.push(json!({"add": base_chain(name, kind, hook, prio)}));
        cmds.push(json!({"flush": chain(name)}));
    }
    let daddr_vmap = json!({"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}}, "data": "@pubips"}});
    cmds.push(rule("prerouting", vec![daddr_vmap.clone()]));
    cmds.push(rule("output", vec![daddr_vmap]));
    cmds.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}),
            meta_in("oifname", "bridges"),
            json!({"masquerade": null}),
        ],
    ));
    cmds.push(rule("forward", vec![ct_state(&["established", "related"]), json!({"accept": null})]));
    cmds.push(rule(
        "forward",
        vec![json!({"match": {"op": "==", "left": {"concat": [{"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}}]}, "right": "@intra"}}), json!({"accept": null})],
    ));
    if let Some(egress) = egress {
        // Every Skiff bridge (the default one and each subnet's), whatever its prefix.
        cmds.push(rule("postrouting", vec![meta_in("iifname", "bridges"), meta_eq("oifname", egress), json!({"masquerade": null})]));
        cmds.push(rule("forward", vec![meta_in("iifname", "bridges"), meta_eq("oifname", egress), json!({"accept": null})]));
    }
    cmds.push(rule("forward", vec![meta_in("iifname", "bridges"), json!({"drop": null})]));
    // From outside, a group's private address is reachable only through its public DNAT.
    cmds.push(rule(
        "forward",
        vec![meta_in("oifname", "bridges"), json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}), json!({"accept": null})],
    ));
    cmds.push(rule("forward", vec![meta_in("oifname", "bridges"), json!({"drop": null})]));
    // Groups never open connections to the host's own addresses (API, registry, gateways)
    // unless the operator allows it.
    if !host_access {
        cmds.push(rule("input", vec![meta_in("iifname", "bridges"), ct_state(&["established", "related"]), json!({"accept": null})]));
        cmds.push(rule("input", vec![meta_in("iifname", "bridges"), json!({"drop": null})]));
    }
    json!({"nftables": cmds})
}

/// Anti-spoofing lives in a second table, `bridge skiff`, because only the bridge family sees
/// which port (veth) a frame came in on. Set `vaddr` holds `veth . address` of every group;
/// a frame from a group veth whose IPv4 or ARP sender address is not its own is dropped, and
/// so is IPv6 (groups have no IPv6 address to speak from).
pub fn spoof_base_batch() -> Value {
    let t = |kind: &str, mut body: Value| {
        body["family"] = json!(SPOOF_FAMILY);
        body["table"] = json!(TABLE);
        json!({ kind: body })
    };
    let veth = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": format!("{}*", crate::names::HOST_VETH_PREFIX)}});
    let not_own = |proto: &str, field: &str| {
        json!({"match": {"op": "!=", "left": {"concat": [{"meta": {"key": "iifname"}}, {"payload": {"protocol": proto, "field": field}}]}, "right": "@vaddr"}})
    };
    let r = |expr: Vec<Value>| json!({"add": t("rule", json!({"chain": "prerouting", "expr": expr}))});
    json!({"nftables": [
        {"add": {"table": {"family": SPOOF_FAMILY, "name": TABLE}}},
        {"add": t("set", json!({"name": "vaddr", "type": ["ifname", "ipv4_addr"]}))},
        {"add": t("chain", json!({"name": "prerouting", "type": "filter", "hook": "prerouting", "prio": -200, "policy": "accept"}))},
        {"flush": t("chain", json!({"name": "prerouting"}))},
        r(vec![veth.clone(), not_own("ip", "saddr"), json!({"drop": null})]),
        r(vec![veth.clone(), not_own("arp", "saddr ip"), json!({"drop": null})]),
        r(vec![veth, json!({"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "type"}}, "right": "ip6"}}), json!({"drop": null})]),
    ]})
}

const SPOOF_FAMILY: &str = "bridge";

fn vaddr_elem(veth: &str, ip: Ipv4Addr) -> Value {
    json!({"family": SPOOF_FAMILY, "table": TABLE, "name": "vaddr", "elem": [{"concat": [veth, ip.to_string()]}]})
}

/// Allow `veth` to send from `ip` (and nothing else).
pub fn add_vaddr_batch(veth: &str, ip: Ipv4Addr) -> Value {
    json!({"nftables": [{"add": {"element": vaddr_elem(veth, ip)}}]})
}

pub fn delete_vaddr_batch(veth: &str, ip: Ipv4Addr) -> Value {
    json!({"nftables": [{"delete": {"element": vaddr_elem(veth, ip)}}]})
}

/// `veth . address` elements of the anti-spoofing set, from `nft -j list table bridge skiff`.
pub fn vaddr_elements(listing: &Value) -> Vec<(String, Ipv4Addr)> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["set"]["name"] == "vaddr")
        .flat_map(|o| o["set"]["elem"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            let c = e["concat"].as_array()?;
            Some((c.first()?.as_str()?.to_string(), c.get(1)?.as_str()?.parse().ok()?))
        })
        .collect()
}

/// The anti-spoofing table, or `None` if it does not exist.
pub fn list_spoof_table() -> Result<Option<Value>, NftError> {
    let out = Command::new("nft").args(["-j", "list", "table", SPOOF_FAMILY, TABLE]).output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| NftError::Rejected { stderr: format!("unreadable nft output: {e}") })
}

/// Register a bridge; `intra` lets members of that bridge's subnet reach each other when the
/// kernel passes bridged traffic through the IP hooks (br_netfilter).
pub fn bridge_batch(bridge: &str, intra: bool) -> Value {
    let mut cmds = vec![json!({"add": obj("element", json!({"name": "bridges", "elem": [bridge]}))})];
    if intra {
        cmds.push(json!({"add": obj("element", json!({"name": "intra", "elem": [{"concat": [bridge, bridge]}]}))}));
    }
    json!({"nftables": cmds})
}

/// Forget a subnet bridge: its elements of both sets (as [`bridge_batch`] added them with
/// `intra`). nft 1.0.6 has no `destroy`: a batch whose element is already gone fails whole.
pub fn forget_bridge_batch(bridge: &str) -> Value {
    json!({"nftables": [
        {"delete": obj("element", json!({"name": "bridges", "elem": [bridge]}))},
        {"delete": obj("element", json!({"name": "intra", "elem": [{"concat": [bridge, bridge]}]}))},
    ]})
}

/// Forward exactly `ports` of `public` to `private` (same port numbers: ACI has no port
/// mapping). Idempotent: the chain is flushed and refilled.
pub fn group_batch(chain_name: &str, public: Ipv4Addr, private: Ipv4Addr, ports: &[(u16, Proto)]) -> Value {
    let mut cmds = vec![json!({"add": chain(chain_name)}), json!({"flush": chain(chain_name)})];
    for (port, proto) in ports {
        cmds.push(rule(
            chain_name,
            vec![
                json!({"match": {"op": "==", "left": {"payload": {"protocol": proto.as_str(), "field": "dport"}}, "right": port}}),
                json!({"dnat": {"addr": private.to_string()}}),
            ],
        ));
    }
    cmds.push(json!({"add": obj("element", json!({"name": "pubips", "elem": [[public.to_string(), {"jump": {"target": chain_name}}]]}))}));
    json!({"nftables": cmds})
}

/// One batch doing what `batches` do, in order (one `nft` run, one atomic commit).
pub fn merge(batches: &[Value]) -> Value {
    let cmds: Vec<Value> = batches.iter().flat_map(|b| b["nftables"].as_array().cloned().unwrap_or_default()).collect();
    json!({"nftables": cmds})
}

pub fn delete_element_batch(public: Ipv4Addr) -> Value {
    json!({"nftables": [{"delete": obj("element", json!({"name": "pubips", "elem": [public.to_string()]}))}]})
}

pub fn delete_chain_batch(chain_name: &str) -> Value {
    json!({"nftables": [{"flush": chain(chain_name)}, {"delete": chain(chain_name)}]})
}

pub fn delete_table_batch() -> Value {
    json!({"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})
}

/// `nft` resolves names against a cache it reads before committing; two batches from this
/// process racing each other can see each other's half-made state, so they go one at a time.
static APPLY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run one batch.
pub fn apply(batch: &Value) -> Result<(), NftError> {
    let _one_at_a_time = APPLY.lock().unwrap_or_else(|p| p.into_inner());
    apply_unlocked(batch)
}

fn apply_unlocked(batch: &Value) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(batch.to_string().as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected { stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// The table as `nft -j list table ip skiff` shows it, or `None` if it does not exist.
pub fn list_table() -> Result<Option<Value>, NftError> {
    let out = Command::new("nft").args(["-j", "list", "table", FAMILY, TABLE]).output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| NftError::Rejected { stderr: format!("unreadable nft output: {e}") })
}

/// Group chains present in a listing.
pub fn group_chains(listing: &Value) -> Vec<String> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["chain"]["name"].as_str())
        .filter(|n| n.starts_with(crate::names::GROUP_CHAIN_PREFIX))
        .map(str::to_string)
        .collect()
}

/// Public addresses present in the `pubips` map of a listing.
pub fn public_elements(listing: &Value) -> Vec<Ipv4Addr> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["map"]["name"] == "pubips")
        .flat_map(|o| o["map"]["elem"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e[0].as_str().and_then(|s| s.parse().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_batches_keep_every_command_in_order() {
        let a = add_vaddr_batch("skvabc", Ipv4Addr::new(10, 77, 0, 2));
        let b = group_batch("g-abc", Ipv4Addr::new(127, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 2), &[(80, Proto::Tcp)]);
        let m = merge(&[a.clone(), b.clone()]);
        let cmds = m["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), a["nftables"].as_array().unwrap().len() + b["nftables"].as_array().unwrap().len());
        assert_eq!(cmds[0], a["nftables"][0]);
        assert_eq!(cmds.last(), b["nftables"].as_array().unwrap().last());
        assert_eq!(merge(&[]), json!({"nftables": []}));
    }

    #[test]
    fn group_batch_forwards_exactly_the_listed_ports() {
        let b = group_batch("g-abc", Ipv4Addr::new(127, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 2), &[(80, Proto::Tcp), (53, Proto::Udp)]);
        let cmds = b["nftables"].as_array().unwrap();
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c.get("add").and_then(|a| a.get("rule"))).collect();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["expr"][0]["match"]["left"]["payload"]["protocol"], "tcp");
        assert_eq!(rules[1]["expr"][0]["match"]["right"], 53);
        assert_eq!(rules[1]["expr"][1]["dnat"]["addr"], "10.77.0.2");
        assert!(cmds.iter().all(|c| c.to_string().contains("\"table\":\"skiff\"")));
    }

    /// The forward chain's order decides who reaches whom: replies first, then a subnet's own
    /// members, egress, then traffic from groups stops and only DNATed traffic reaches them;
    /// egress masquerades every Skiff bridge, whatever its prefix.
    #[test]
    fn forward_rules_in_order_and_egress_for_every_bridge() {
        let b = base_batch(Some("eth9"), false);
        let forward: Vec<String> = b["nftables"].as_array().unwrap().iter().filter(|c| c["add"]["rule"]["chain"] == "forward").map(|c| c["add"]["rule"]["expr"].to_string()).collect();
        let pos = |needle: &str| forward.iter().position(|r| r.contains(needle)).unwrap_or_else(|| panic!("{needle} in {forward:?}"));
        assert!(pos("established") < pos("@intra"));
        assert!(pos("@intra") < pos("eth9") && pos("eth9") < pos("\"dnat\""));
        let drop_from_groups = forward.iter().position(|r| r.contains("iifname") && r.contains("drop")).unwrap();
        assert!(pos("eth9") < drop_from_groups && drop_from_groups < pos("\"dnat\""));
        let post: Vec<String> = b["nftables"].as_array().unwrap().iter().filter(|c| c["add"]["rule"]["chain"] == "postrouting").map(|c| c["add"]["rule"]["expr"].to_string()).collect();
        assert!(post.iter().any(|r| r.contains("@bridges") && r.contains("eth9") && r.contains("masquerade")), "{post:?}");
        assert!(!base_batch(None, false).to_string().contains("eth9"));
    }

    #[test]
    fn host_access_and_spoofing_batches() {
        let closed = base_batch(None, false).to_string();
        let open = base_batch(None, true).to_string();
        assert!(closed.contains("\"chain\":\"input\",\"expr\""));
        assert!(!open.contains("\"chain\":\"input\",\"expr\""));
        let b = spoof_base_batch().to_string();
        assert!(b.contains("\"family\":\"bridge\"") && b.contains("skv*") && b.contains("saddr ip"));
        let v: Value = serde_json::from_str(r#"{"nftables":[{"set":{"family":"bridge","name":"vaddr","table":"skiff","elem":[{"concat":["skvabc","10.0.0.2"]}]}}]}"#).unwrap();
        assert_eq!(vaddr_elements(&v), vec![("skvabc".to_string(), Ipv4Addr::new(10, 0, 0, 2))]);
        assert_eq!(add_vaddr_batch("skvabc", Ipv4Addr::new(10, 0, 0, 2))["nftables"][0]["add"]["element"]["elem"][0]["concat"][1], "10.0.0.2");
    }

    #[test]
    fn listing_parsers() {
        let v: Value = serde_json::from_str(r#"{"nftables":[{"metainfo":{}},{"chain":{"family":"ip","table":"skiff","name":"g-0123"}},{"chain":{"name":"forward"}},
            {"map":{"name":"pubips","elem":[["127.77.0.2",{"jump":{"target":"g-0123"}}]]}}]}"#).unwrap();
        assert_eq!(group_chains(&v), vec!["g-0123"]);
        assert_eq!(public_elements(&v), vec![Ipv4Addr::new(127, 77, 0, 2)]);
    }
}
