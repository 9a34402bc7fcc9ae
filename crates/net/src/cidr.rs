//! IPv4 CIDR blocks: parsing and the host addresses inside them. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, always stored normalised (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IPv4 CIDR block such as 10.77.0.0/16")]
pub struct CidrError(pub String);

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        Some(Cidr { network: u32::from(addr) & mask(prefix), prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.network
    }

    /// Whether the two blocks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let p = self.prefix.min(other.prefix);
        self.network & mask(p) == other.network & mask(p)
    }

    /// Whether every address of `other` is inside `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.network())
    }

    /// The number of usable host addresses: the network and broadcast addresses are left out
    /// for blocks larger than /31.
    pub fn host_count(&self) -> u64 {
        let size = 1u64 << (32 - self.prefix as u32);
        if size > 2 { size - 2 } else { size }
    }

    /// The `n`th usable host address (0-based), if the block has that many.
    pub fn host(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.host_count() {
            return None;
        }
        let first = if (1u64 << (32 - self.prefix as u32)) > 2 { 1 } else { 0 };
        Some(Ipv4Addr::from(self.network + (first + n) as u32))
    }

    /// The gateway Skiff gives a bridge network: its first host address.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.host(0)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_normalises() {
        let c: Cidr = "10.77.3.9/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.77.0.0/16");
        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(c.host_count(), 65534);
        assert_eq!(c.host(65533), Some(Ipv4Addr::new(10, 77, 255, 254)));
        assert_eq!(c.host(65534), None);
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_and_cover() {
        let a: Cidr = "10.0.0.0/16".parse().unwrap();
        let b: Cidr = "10.0.5.0/24".parse().unwrap();
        let c: Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && a.covers(&b) && !b.covers(&a));
        assert!(!a.overlaps(&c) && !a.covers(&c));
    }

    proptest! {
        #[test]
        fn hosts_are_inside_and_distinct(a in any::<u32>(), p in 8u8..=32, n in 0u64..300) {
            let c = Cidr::new(Ipv4Addr::from(a), p).unwrap();
            if let Some(h) = c.host(n) {
                prop_assert!(c.contains(h));
                prop_assert_ne!(Some(h), c.host(n + 1));
                if p < 31 {
                    prop_assert_ne!(h, c.network());
                }
            }
            prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
        }
    }
}
