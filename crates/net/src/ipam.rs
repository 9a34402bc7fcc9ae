//! Address allocation. The choice of an address is pure ([`pick`]); the record of who holds
//! it lives in the store under `ipam/<pool>/<ip>` (value: the group uid), written with
//! `Expect::Absent` so that two groups can never hold one address, even across daemons or
//! restarts. Allocation is idempotent per (pool, group uid).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use skiff_store::{Expect, Store, StoreError, TxnOp};

use crate::cidr::Cidr;

pub const IPAM_PREFIX: &str = "ipam/";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("the address pool {pool} ({cidr}) is exhausted")]
    Exhausted { pool: String, cidr: Cidr },
    #[error("store error in address pool {pool}")]
    Store {
        pool: String,
        #[source]
        source: StoreError,
    },
}

/// The lowest usable host address of `cidr` that is neither used nor reserved.
pub fn pick(cidr: &Cidr, used: &BTreeSet<Ipv4Addr>, reserved: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    (0..cidr.host_count()).filter_map(|n| cidr.host(n)).find(|ip| !used.contains(ip) && !reserved.contains(ip))
}

pub fn pool_prefix(pool: &str) -> String {
    format!("{IPAM_PREFIX}{pool}/")
}

pub fn key(pool: &str, ip: Ipv4Addr) -> String {
    format!("{IPAM_PREFIX}{pool}/{ip}")
}

/// One persistent pool.
pub struct Pool<'a> {
    pub store: &'a dyn Store,
    pub name: &'a str,
    pub cidr: Cidr,
    /// Addresses never handed out (e.g. the bridge gateway).
    pub reserved: Vec<Ipv4Addr>,
}

impl Pool<'_> {
    fn err(&self, source: StoreError) -> IpamError {
        IpamError::Store { pool: self.name.to_string(), source }
    }

    async fn entries(&self) -> Result<Vec<(Ipv4Addr, String, i64)>, IpamError> {
        let (kvs, _) = self.store.list(&pool_prefix(self.name), None, None).await.map_err(|e| self.err(e))?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let ip = kv.key.rsplit('/').next()?.parse().ok()?;
                Some((ip, String::from_utf8_lossy(&kv.value).to_string(), kv.mod_revision))
            })
            .collect())
    }

    /// The address `owner` holds in this pool, allocating the lowest free one if it holds none.
    pub async fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        loop {
            let entries = self.entries().await?;
            if let Some((ip, _, _)) = entries.iter().find(|(ip, o, _)| o == owner && self.cidr.contains(*ip)) {
                return Ok(*ip);
            }
            let used: BTreeSet<Ipv4Addr> = entries.iter().map(|(ip, _, _)| *ip).collect();
            let ip = pick(&self.cidr, &used, &self.reserved).ok_or(IpamError::Exhausted { pool: self.name.to_string(), cidr: self.cidr })?;
            let op = TxnOp::Put { key: key(self.name, ip), value: owner.as_bytes().to_vec(), expect: Expect::Absent };
            match self.store.txn(vec![op]).await {
                Ok(_) => return Ok(ip),
                // Someone else took it between the list and the write: look again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// The address `owner` holds, if any.
    pub async fn lookup(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.entries().await?.into_iter().find(|(_, o, _)| o == owner).map(|(ip, _, _)| ip))
    }
}

/// Free every address `owner` holds in any pool.
pub async fn release_all(store: &dyn Store, owner: &str) -> Result<Vec<(String, Ipv4Addr)>, StoreError> {
    release_where(store, |o| o == owner).await
}

/// Free every address whose owner fails `keep` (used to sweep what deleted groups left).
pub async fn release_where(store: &dyn Store, release: impl Fn(&str) -> bool) -> Result<Vec<(String, Ipv4Addr)>, StoreError> {
    let (kvs, _) = store.list(IPAM_PREFIX, None, None).await?;
    let mut freed = Vec::new();
    for kv in kvs {
        let owner = String::from_utf8_lossy(&kv.value);
        if !release(&owner) {
            continue;
        }
        match store.delete(&kv.key, Expect::ModRevision(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let rest = &kv.key[IPAM_PREFIX.len()..];
        if let Some((pool, ip)) = rest.rsplit_once('/') {
            if let Ok(ip) = ip.parse() {
                freed.push((pool.to_string(), ip));
            }
        }
    }
    Ok(freed)
}

/// Every (pool, address, owner) on record.
pub async fn all(store: &dyn Store) -> Result<Vec<(String, Ipv4Addr, String)>, StoreError> {
    let (kvs, _) = store.list(IPAM_PREFIX, None, None).await?;
    Ok(kvs
        .into_iter()
        .filter_map(|kv| {
            let rest = kv.key.strip_prefix(IPAM_PREFIX)?;
            let (pool, ip) = rest.rsplit_once('/')?;
            Some((pool.to_string(), ip.parse().ok()?, String::from_utf8_lossy(&kv.value).to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn picks_lowest_free_skipping_reserved() {
        let c: Cidr = "10.0.0.0/29".parse().unwrap();
        let gw = c.gateway().unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(pick(&c, &used, &[gw]), Some(Ipv4Addr::new(10, 0, 0, 2)));
        used.insert(Ipv4Addr::new(10, 0, 0, 2));
        used.insert(Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(pick(&c, &used, &[gw]), Some(Ipv4Addr::new(10, 0, 0, 3)));
        for i in 3..=6 {
            used.insert(Ipv4Addr::new(10, 0, 0, i));
        }
        assert_eq!(pick(&c, &used, &[gw]), None, "network, gateway and broadcast are never handed out");
    }

    proptest! {
        #[test]
        fn repeated_picks_never_collide(n in 1usize..40, p in 24u8..=30) {
            let c = Cidr::new(Ipv4Addr::new(10, 9, 0, 0), p).unwrap();
            let gw = c.gateway().unwrap();
            let mut used = BTreeSet::new();
            for _ in 0..n {
                match pick(&c, &used, &[gw]) {
                    Some(ip) => {
                        prop_assert!(c.contains(ip) && ip != gw && ip != c.network());
                        prop_assert!(used.insert(ip));
                    }
                    None => prop_assert_eq!(used.len() as u64, c.host_count() - 1),
                }
            }
        }
    }
}
