//! Links, addresses and routes through rtnetlink — no `ip` fork per step.
//!
//! A netlink socket acts in the network namespace it was created in. For the group side of
//! a veth pair, [`Netlink::in_netns`] opens a socket from a short-lived thread that has
//! entered the namespace (`setns` affects only that thread); the socket keeps working in that
//! namespace after the thread is gone. Nothing here forks.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot enter network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {what}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    NoLink(String),
}

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;
const EBUSY: i32 = 16;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// A netlink handle bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A socket in the caller's (the daemon's) namespace. Needs a tokio runtime.
    pub fn current() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A socket inside the namespace mounted at `path`.
    pub async fn in_netns(path: &Path) -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Handle::current();
        let path = path.to_owned();
        // A dedicated thread, never a pooled one: after `setns` it must not run anything else.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("skiff-netns-nl".into())
            .spawn(move || {
                let _guard = rt.enter();
                let ns_err = |source| NetlinkError::Netns { path: path.display().to_string(), source };
                let result = (|| {
                    let file = std::fs::File::open(&path).map_err(ns_err)?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(e.into()))?;
                    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
                    Ok::<_, NetlinkError>((conn, handle))
                })();
                let _ = tx.send(result);
            })
            .map_err(NetlinkError::Socket)?;
        let (conn, handle) = rx.await.map_err(|e| NetlinkError::Socket(std::io::Error::other(e)))??;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(req(format!("looking up link {name}"))(e)),
        }
    }

    /// Names of every link whose name starts with `prefix`.
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>, NetlinkError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(req("listing links"))? {
            for a in &l.attributes {
                if let LinkAttribute::IfName(n) = a {
                    if n.starts_with(prefix) {
                        out.push(n.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// The bridge `name` with `gateway/prefix` on it, up. Idempotent.
    pub async fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<u32, NetlinkError> {
        let index = match self.link_index(name).await? {
            Some(i) => i,
            None => {
                match self.handle.link().add(LinkBridge::new(name).build()).execute().await {
                    Err(e) if errno(&e) != Some(EEXIST) => return Err(req(format!("creating bridge {name}"))(e)),
                    _ => {}
                }
                self.link_index(name).await?.ok_or_else(|| NetlinkError::NoLink(name.to_string()))?
            }
        };
        self.add_address(index, gateway, prefix).await?;
        self.set_up(index).await?;
        Ok(index)
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(req(format!("setting link {index} up")))
    }

    /// Add an address; an address already present is fine.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        match self.handle.address().add(index, IpAddr::V4(ip), prefix).execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => Err(req(format!("adding {ip}/{prefix} to link {index}"))(e)),
            _ => Ok(()),
        }
    }

    /// Remove `ip` from the link named `iface`; absent is fine.
    pub async fn del_address(&self, iface: &str, ip: Ipv4Addr) -> Result<bool, NetlinkError> {
        let Some(index) = self.link_index(iface).await? else { return Ok(false) };
        let msgs = self.address_dump(index, iface).await?;
        for msg in msgs {
            let matches = msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == ip));
            if matches {
                return match self.handle.address().del(msg).execute().await {
                    Err(e) if errno(&e) != Some(EADDRNOTAVAIL) => Err(req(format!("removing {ip} from {iface}"))(e)),
                    _ => Ok(true),
                };
            }
        }
        Ok(false)
    }

    /// The address messages of one link. The handle shares one netlink socket, and the kernel
    /// answers EBUSY to a dump started while another dump on that socket is running (many
    /// groups torn down at once), so a busy dump is retried.
    async fn address_dump(&self, index: u32, iface: &str) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>, NetlinkError> {
        let mut attempt = 0;
        loop {
            let got: Result<Vec<_>, rtnetlink::Error> = self.handle.address().get().set_link_index_filter(index).execute().try_collect().await;
            match got {
                Err(e) if errno(&e) == Some(EBUSY) && attempt < 200 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                other => return other.map_err(req(format!("listing addresses of {iface}"))),
            }
        }
    }

    /// IPv4 addresses on `iface` inside `within`.
    pub async fn addresses(&self, iface: &str) -> Result<Vec<Ipv4Addr>, NetlinkError> {
        let Some(index) = self.link_index(iface).await? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for msg in self.address_dump(index, iface).await? {
            for a in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                    out.push(*ip);
                }
            }
        }
        Ok(out)
    }

    /// Delete the link `name`; absent is fine. Deleting one end of a veth removes both.
    /// Whether any link has the bridge `name` as its controller.
    pub async fn has_ports(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(index) = self.link_index(name).await? else { return Ok(false) };
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(req("listing links"))? {
            if l.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(c) if *c == index)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub async fn del_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(index) = self.link_index(name).await? else { return Ok(false) };
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) != Some(ENODEV) => Err(req(format!("deleting link {name}"))(e)),
            _ => Ok(true),
        }
    }

    /// Create the veth pair `host`/`peer` with `peer` born inside the namespace at `netns` and
    /// `host` already a port of the bridge, isolate the port if asked, and bring `host` up.
    ///
    /// One request makes the pair where it belongs: moving a link into another namespace
    /// afterwards waits for an RCU grace period in the kernel (measured here: ~25 ms of a
    /// ~65 ms group start), creating it there does not.
    pub async fn add_group_veth(&self, host: &str, peer: &str, bridge: u32, isolated: bool, netns: &Path) -> Result<(), NetlinkError> {
        let ns = std::fs::File::open(netns).map_err(|source| NetlinkError::Netns { path: netns.display().to_string(), source })?;
        let peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(ns.as_raw_fd()).build();
        let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .controller(bridge)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle.link().add(pair).execute().await.map_err(req(format!("creating veth {host} (peer {peer} in {})", netns.display())))?;
        let host_idx = self.link_index(host).await?.ok_or_else(|| NetlinkError::NoLink(host.to_string()))?;
        if isolated {
            // Ports of the shared bridge may not talk to each other at layer 2; each group
            // reaches only the gateway.
            self.handle
                .link()
                .set_port(LinkBridgePort::new(host_idx).append_info_data(InfoBridgePort::Isolated(true)).build())
                .execute()
                .await
                .map_err(req(format!("isolating bridge port {host}")))?;
        }
        self.set_up(host_idx).await
    }

    /// Inside a group namespace: rename `peer` to `eth0`, address it, bring it up and route
    /// everything through the gateway.
    pub async fn configure_group_side(&self, peer: &str, ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let idx = self.link_index(peer).await?.ok_or_else(|| NetlinkError::NoLink(peer.to_string()))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).name("eth0".to_string()).build())
            .execute()
            .await
            .map_err(req(format!("renaming {peer} to eth0")))?;
        self.add_address(idx, ip, prefix).await?;
        self.set_up(idx).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(idx).build();
        match self.handle.route().add(route).execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => Err(req(format!("adding the default route via {gateway}"))(e)),
            _ => Ok(()),
        }
    }
}
