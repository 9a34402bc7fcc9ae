//! skiff-net: gives each container group its network — one namespace shared by the group's
//! containers, a private address on a Skiff bridge, an optional public address with DNAT of
//! exactly its listed ports, isolation between groups and subnets, and DNS names.
pub mod cidr;
pub mod dns;
pub mod ipam;
pub mod label;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod sysctl;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use cidr::Cidr;
use netlink::{Netlink, NetlinkError};
use nft::{NftError, Proto};
use skiff_store::Store;

/// Operator settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Private addresses of groups that are not in a named subnet (on `bridge`).
    pub private_cidr: Cidr,
    /// Public addresses (`ipAddress.type: Public`).
    pub public_pool: Cidr,
    /// Interface the public addresses are bound on.
    pub public_interface: String,
    /// The bridge of groups that are not in a named subnet.
    pub bridge: String,
    /// Where the DNS server listens (`None`: no DNS server).
    pub dns_listen: Option<SocketAddr>,
    /// FQDNs are `<label>.<location>.<zone>`.
    pub dns_zone: String,
    /// Masquerade group traffic out of this interface; `None`: groups reach nothing outside.
    pub egress_interface: Option<String>,
    /// Let groups open connections to the host itself (off: only replies reach it).
    pub host_access: bool,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            private_cidr: Cidr::new(Ipv4Addr::new(10, 77, 0, 0), 16).expect("valid"),
            public_pool: Cidr::new(Ipv4Addr::new(127, 77, 0, 0), 16).expect("valid"),
            public_interface: "lo".to_string(),
            bridge: "skiff0".to_string(),
            dns_listen: None,
            dns_zone: "skiff.local".to_string(),
            egress_interface: None,
            host_access: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error(transparent)]
    Sysctl(#[from] sysctl::SysctlError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("store error while {0}")]
    Store(&'static str, #[source] skiff_store::StoreError),
    #[error("creating the network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a group's private address comes from.
#[derive(Debug, Clone)]
pub enum Attachment {
    /// The shared default bridge; groups on it cannot reach each other.
    Default,
    /// A named subnet (its resource id and CIDR): members reach each other, nobody else.
    Subnet { id: String, cidr: Cidr },
}

/// What a group asks for.
#[derive(Debug, Clone)]
pub struct GroupNetSpec {
    pub uid: String,
    pub netns: PathBuf,
    pub attachment: Attachment,
    /// `Some(ports)` for a public address forwarding exactly these ports.
    pub public_ports: Option<Vec<(u16, Proto)>>,
}

/// What a group got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNet {
    pub private_ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
}

pub const PUBLIC_POOL: &str = "public";
pub const DEFAULT_POOL: &str = "private";

/// The host's group networking. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    cfg: Arc<NetConfig>,
    store: Arc<dyn Store>,
    nl: Netlink,
    pub records: dns::Records,
    /// Bridges known to exist, so a group setup costs no bridge lookup.
    bridges: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Network {
    /// Check and set the kernel settings, create the default bridge and the nft table, and
    /// start the DNS server.
    pub async fn start(store: Arc<dyn Store>, cfg: NetConfig) -> Result<Network, NetError> {
        let nl = Netlink::current()?;
        let records = dns::Records::new(&cfg.dns_zone)?;
        let net = Network { cfg: Arc::new(cfg), store, nl, records, bridges: Arc::default() };
        let cfg = &net.cfg;
        if cfg.egress_interface.is_some() || cfg.public_interface != "lo" {
            sysctl::ensure("net.ipv4.ip_forward", "1", "forwarding public and egress traffic to groups")?;
        }
        nft::apply(&nft::base_batch(cfg.egress_interface.as_deref(), cfg.host_access))?;
        nft::apply(&nft::spoof_base_batch())?;
        net.ensure_bridge(&cfg.bridge.clone(), cfg.private_cidr, false).await?;
        if let Some(addr) = cfg.dns_listen {
            dns::serve(net.records.clone(), addr).await?;
        }
        Ok(net)
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    async fn ensure_bridge(&self, name: &str, cidr: Cidr, intra: bool) -> Result<(), NetError> {
        if self.bridges.lock().unwrap_or_else(|p| p.into_inner()).contains(name) {
            return Ok(());
        }
        let gw = cidr.gateway().ok_or(ipam::IpamError::Exhausted { pool: name.to_string(), cidr })?;
        self.nl.ensure_bridge(name, gw, cidr.prefix()).await?;
        // DNAT of traffic sent to a loopback public address leaves through the bridge with a
        // 127/8 source; the kernel drops that unless route_localnet is on for the bridge.
        sysctl::ensure(&format!("net.ipv4.conf.{name}.route_localnet"), "1", "forwarding loopback public addresses")?;
        nft::apply(&nft::bridge_batch(name, intra))?;
        self.bridges.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string());
        Ok(())
    }

    /// Give the group its addresses, veth, routes and forwarding. Idempotent: whatever a
    /// previous (possibly interrupted) attempt left is replaced.
    pub async fn setup_group(&self, spec: &GroupNetSpec) -> Result<GroupNet, NetError> {
        let (pool, bridge, cidr, isolated) = match &spec.attachment {
            Attachment::Default => (DEFAULT_POOL.to_string(), self.cfg.bridge.clone(), self.cfg.private_cidr, true),
            Attachment::Subnet { id, cidr } => {
                let b = names::subnet_bridge(id);
                (b.clone(), b, *cidr, false)
            }
        };
        let gateway = cidr.gateway().ok_or(ipam::IpamError::Exhausted { pool: pool.clone(), cidr })?;
        // Both addresses at once: the store commits the two writes together.
        let private = ipam::Pool { store: self.store.as_ref(), name: &pool, cidr, reserved: vec![gateway] };
        let public = spec.public_ports.as_ref().map(|_| ipam::Pool { store: self.store.as_ref(), name: PUBLIC_POOL, cidr: self.cfg.public_pool, reserved: Vec::new() });
        let (private_ip, public_ip) = tokio::try_join!(private.allocate(&spec.uid), async {
            match &public {
                Some(p) => p.allocate(&spec.uid).await.map(Some),
                None => Ok(None),
            }
        })?;
        self.ensure_bridge(&bridge, cidr, !isolated).await?;
        let netns = spec.netns.clone();
        tokio::task::spawn_blocking(move || skiff_runtime_netns(&netns))
            .await
            .map_err(|e| NetError::Netns { path: spec.netns.display().to_string(), source: std::io::Error::other(e) })?
            .map_err(|source| NetError::Netns { path: spec.netns.display().to_string(), source })?;
        let host = names::host_veth(&spec.uid);
        let peer = names::peer_veth(&spec.uid);
        self.nl.del_link(&host).await?;
        self.nl.del_link(&peer).await?;
        let bridge_idx = self.nl.link_index(&bridge).await?.ok_or_else(|| NetlinkError::NoLink(bridge.clone()))?;
        // The firewall side (the veth's one allowed source address, the public address's
        // forwarded ports) is one nft batch, applied while the links are made: until it is in,
        // the veth may send nothing, so the race fails closed.
        let mut rules = vec![nft::add_vaddr_batch(&host, private_ip)];
        if let (Some(public), Some(ports)) = (public_ip, &spec.public_ports) {
            rules.push(nft::group_batch(&names::group_chain(&spec.uid), public, private_ip, ports));
        }
        let rules = nft::merge(&rules);
        let links = async {
            self.nl.add_group_veth(&host, &peer, bridge_idx, isolated, &spec.netns).await?;
            // Fault injection for the convergence test: die with the veth made but the group
            // side not configured yet (the next daemon must finish or remove it).
            if std::env::var_os("SKIFF_FAULT_ABORT_IN_NET_SETUP").is_some() {
                std::process::abort();
            }
            Netlink::in_netns(&spec.netns).await?.configure_group_side(&peer, private_ip, cidr.prefix(), gateway).await?;
            if let Some(public) = public_ip {
                if let Some(idx) = self.nl.link_index(&self.cfg.public_interface).await? {
                    self.nl.add_address(idx, public, 32).await?;
                }
            }
            Ok::<(), NetError>(())
        };
        let (links, firewall) = tokio::join!(links, tokio::task::spawn_blocking(move || nft::apply(&rules)));
        links?;
        firewall.map_err(|e| NftError::Spawn(std::io::Error::other(e)))??;
        Ok(GroupNet { private_ip, prefix: cidr.prefix(), gateway, public_ip })
    }

    /// Remove the group's veth, forwarding, public address and DNS name, then free its
    /// addresses. Idempotent; the namespace itself belongs to the runtime.
    pub async fn teardown_group(&self, uid: &str, fqdn: Option<&str>) -> Result<(), NetError> {
        if let Some(f) = fqdn {
            self.records.remove(f);
        }
        let held = ipam::all(self.store.as_ref()).await.map_err(|e| NetError::Store("listing addresses", e))?;
        let public: Vec<Ipv4Addr> = held.iter().filter(|(p, _, o)| p == PUBLIC_POOL && o == uid).map(|(_, ip, _)| *ip).collect();
        // Every step runs even if one fails; the addresses are freed only when all succeeded
        // (otherwise the next start's sweep finishes the job, the group being gone).
        let mut first_err: Option<NetError> = None;
        for ip in &public {
            let _ = nft::apply(&nft::delete_element_batch(*ip));
            if let Err(e) = self.nl.del_address(&self.cfg.public_interface, *ip).await {
                first_err.get_or_insert(e.into());
            }
        }
        let _ = nft::apply(&nft::delete_chain_batch(&names::group_chain(uid)));
        for (_, ip, _) in held.iter().filter(|(p, _, o)| p != PUBLIC_POOL && o == uid) {
            let _ = nft::apply(&nft::delete_vaddr_batch(&names::host_veth(uid), *ip));
        }
        for link in [names::host_veth(uid), names::peer_veth(uid)] {
            if let Err(e) = self.nl.del_link(&link).await {
                first_err.get_or_insert(e.into());
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        ipam::release_all(self.store.as_ref(), uid).await.map_err(|e| NetError::Store("freeing addresses", e))?;
        Ok(())
    }

    /// Remove the bridges of named subnets that no longer exist (`live`: the lower-cased
    /// resource ids of those that do), with their firewall set elements. A bridge that still
    /// has ports is left alone. Returns the bridges removed.
    pub async fn remove_stale_subnet_bridges(&self, live: &HashSet<String>) -> Result<Vec<String>, NetError> {
        let keep: HashSet<String> = live.iter().map(|id| names::subnet_bridge(id)).collect();
        let mut removed = Vec::new();
        for bridge in self.nl.links_with_prefix(names::SUBNET_BRIDGE_PREFIX).await? {
            if keep.contains(&bridge) || self.nl.has_ports(&bridge).await? {
                continue;
            }
            self.bridges.lock().unwrap_or_else(|p| p.into_inner()).remove(&bridge);
            if self.nl.del_link(&bridge).await? {
                let batch = nft::forget_bridge_batch(&bridge);
                // Already forgotten (an earlier, interrupted sweep) is fine.
                let _ = tokio::task::spawn_blocking(move || nft::apply(&batch)).await;
                removed.push(bridge);
            }
        }
        Ok(removed)
    }

    /// Remove network objects of groups that no longer exist (a crash between "record
    /// removed" and "network torn down", or mid-create), found by their Skiff names.
    pub async fn sweep(&self, known: &HashSet<String>) -> Result<usize, NetError> {
        let mut removed = 0;
        let held = ipam::all(self.store.as_ref()).await.map_err(|e| NetError::Store("listing addresses", e))?;
        let live_public: HashSet<Ipv4Addr> = held.iter().filter(|(p, _, o)| p == PUBLIC_POOL && known.contains(o)).map(|(_, ip, _)| *ip).collect();
        for prefix in [names::HOST_VETH_PREFIX, names::PEER_VETH_PREFIX] {
            for link in self.nl.links_with_prefix(prefix).await? {
                if names::uid_of_veth(&link).is_some_and(|u| !known.contains(u)) && self.nl.del_link(&link).await? {
                    removed += 1;
                }
            }
        }
        if let Some(listing) = nft::list_table()? {
            for ip in nft::public_elements(&listing) {
                if !live_public.contains(&ip) {
                    let _ = nft::apply(&nft::delete_element_batch(ip));
                    removed += 1;
                }
            }
            for chain in nft::group_chains(&listing) {
                let uid = &chain[names::GROUP_CHAIN_PREFIX.len()..];
                if !known.contains(uid) {
                    let _ = nft::apply(&nft::delete_chain_batch(&chain));
                    removed += 1;
                }
            }
        }
        if let Some(listing) = nft::list_spoof_table()? {
            for (veth, ip) in nft::vaddr_elements(&listing) {
                if names::uid_of_veth(&veth).is_none_or(|u| !known.contains(u)) {
                    let _ = nft::apply(&nft::delete_vaddr_batch(&veth, ip));
                    removed += 1;
                }
            }
        }
        for ip in self.nl.addresses(&self.cfg.public_interface).await? {
            if self.cfg.public_pool.contains(ip) && !live_public.contains(&ip) && self.nl.del_address(&self.cfg.public_interface, ip).await? {
                removed += 1;
            }
        }
        let freed = ipam::release_where(self.store.as_ref(), |o| !known.contains(o)).await.map_err(|e| NetError::Store("freeing addresses", e))?;
        Ok(removed + freed.len())
    }
}

/// The runtime crate owns namespace creation; this crate does not depend on it, so the
/// agent passes namespaces that already exist. Checked here so a missing one is a clear error.
fn skiff_runtime_netns(path: &std::path::Path) -> std::io::Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the group's network namespace does not exist; create it first"))
    }
}
