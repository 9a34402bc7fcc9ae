//! Names of the host objects Skiff owns. Every one carries a Skiff prefix so that sweeping
//! leftovers by name can never touch anything else. Group uids are 12 hex characters, so
//! `skv` + uid is exactly the kernel's 15-character interface-name limit.

/// Host side of a group's veth pair (attached to a bridge).
pub fn host_veth(uid: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", short(uid))
}

/// The group side before it is moved into the namespace and renamed `eth0`.
pub fn peer_veth(uid: &str) -> String {
    format!("skp{}", short(uid))
}

pub const HOST_VETH_PREFIX: &str = "skv";
pub const PEER_VETH_PREFIX: &str = "skp";
pub const SUBNET_BRIDGE_PREFIX: &str = "skb";
pub const GROUP_CHAIN_PREFIX: &str = "g-";

/// The uid part of a veth name, if the name is one of ours: the prefix and exactly the 12 hex
/// digits of a group uid. The sweep deletes what this accepts, so an operator's `skpub0` or
/// `skv-test` is never mistaken for a leftover.
pub fn uid_of_veth(name: &str) -> Option<&str> {
    let uid = name.strip_prefix(HOST_VETH_PREFIX).or_else(|| name.strip_prefix(PEER_VETH_PREFIX))?;
    (uid.len() == 12 && uid.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(uid)
}

/// nftables chain holding a group's DNAT rules.
pub fn group_chain(uid: &str) -> String {
    format!("{GROUP_CHAIN_PREFIX}{uid}")
}

/// Bridge of a named subnet: a short stable hash of its resource id.
pub fn subnet_bridge(subnet_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(subnet_key.to_ascii_lowercase().as_bytes());
    format!("{SUBNET_BRIDGE_PREFIX}{}", hex8(&d[..6]))
}

fn hex8(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn short(uid: &str) -> &str {
    let end = uid.char_indices().nth(12).map(|(i, _)| i).unwrap_or(uid.len());
    &uid[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_interface_limit() {
        assert_eq!(host_veth("0123456789ab"), "skv0123456789ab");
        assert_eq!(host_veth("0123456789abcdef"), "skv0123456789ab");
        assert!(subnet_bridge("/subscriptions/s/resourcegroups/r/providers/microsoft.network/virtualnetworks/v/subnets/a").len() <= 15);
        assert_eq!(uid_of_veth("skv0123456789ab"), Some("0123456789ab"));
        assert_eq!(uid_of_veth("skp0123456789ab"), Some("0123456789ab"));
        for other in ["eth0", "skpub0", "skv-test", "skv0123456789AB", "skv0123456789a", "skp0123456789abc"] {
            assert_eq!(uid_of_veth(other), None, "{other}");
        }
    }
}
