//! The embedded authoritative DNS server for `<label>.<location>.<zone>`.
//!
//! Records live in memory (a map shared with the agent, which adds a name when a group's
//! network is set up or adopted and removes it on delete); any name under the zone that is
//! not a live group is NXDOMAIN, with the zone's SOA in the authority section so resolvers
//! cache the negative answer briefly. Names outside the zone are REFUSED: this server is not
//! a resolver.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Message, Metadata, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

const TTL: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("'{0}' is not a valid DNS zone")]
    Zone(String),
    #[error("cannot listen for DNS on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The live names. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    zone: LowerName,
    soa: Arc<Record>,
    names: Arc<RwLock<HashMap<LowerName, Ipv4Addr>>>,
}

impl Records {
    pub fn new(zone: &str) -> Result<Records, DnsError> {
        let err = || DnsError::Zone(zone.to_string());
        let mut origin = Name::from_str(zone.trim_end_matches('.')).map_err(|_| err())?;
        origin.set_fqdn(true);
        if origin.is_root() {
            return Err(err());
        }
        let mname = Name::from_str("ns").map_err(|_| err())?.append_domain(&origin).map_err(|_| err())?;
        let rname = Name::from_str("hostmaster").map_err(|_| err())?.append_domain(&origin).map_err(|_| err())?;
        let soa = Record::from_rdata(origin.clone(), TTL, RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, TTL)));
        Ok(Records { zone: LowerName::new(&origin), soa: Arc::new(soa), names: Arc::default() })
    }

    fn key(fqdn: &str) -> Option<LowerName> {
        let mut n = Name::from_str(fqdn.trim_end_matches('.')).ok()?;
        n.set_fqdn(true);
        Some(LowerName::new(&n))
    }

    pub fn set(&self, fqdn: &str, ip: Ipv4Addr) {
        if let Some(k) = Self::key(fqdn) {
            self.names.write().unwrap_or_else(|p| p.into_inner()).insert(k, ip);
        }
    }

    pub fn remove(&self, fqdn: &str) {
        if let Some(k) = Self::key(fqdn) {
            self.names.write().unwrap_or_else(|p| p.into_inner()).remove(&k);
        }
    }

    pub fn get(&self, fqdn: &str) -> Option<Ipv4Addr> {
        let k = Self::key(fqdn)?;
        self.names.read().unwrap_or_else(|p| p.into_inner()).get(&k).copied()
    }

    /// What the server answers for one question: (code, answer records, SOA in authority?).
    fn answer(&self, name: &LowerName, rtype: RecordType) -> (ResponseCode, Vec<Record>, bool) {
        if !self.zone.zone_of(name) {
            return (ResponseCode::Refused, Vec::new(), false);
        }
        if *name == self.zone {
            return match rtype {
                RecordType::SOA => (ResponseCode::NoError, vec![(*self.soa).clone()], false),
                _ => (ResponseCode::NoError, Vec::new(), true),
            };
        }
        let ip = self.names.read().unwrap_or_else(|p| p.into_inner()).get(name).copied();
        match (ip, rtype) {
            (Some(ip), RecordType::A | RecordType::ANY) => (ResponseCode::NoError, vec![Record::from_rdata(Name::from(name.clone()), TTL, RData::A(A(ip)))], false),
            (Some(_), _) => (ResponseCode::NoError, Vec::new(), true),
            (None, _) => (ResponseCode::NXDomain, Vec::new(), true),
        }
    }
}

struct Handler(Records);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        let info = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info,
            _ => {
                meta.response_code = ResponseCode::NotImp;
                let resp = builder.build_no_records(meta);
                return response_handle.send_response(resp).await.unwrap_or_else(|_| failed(meta));
            }
        };
        let (code, answers, with_soa) = self.0.answer(info.query.name(), info.query.query_type());
        meta.authoritative = code != ResponseCode::Refused;
        meta.response_code = code;
        let soa: Vec<&Record> = if with_soa { vec![&*self.0.soa] } else { Vec::new() };
        let resp = builder.build(meta, answers.iter(), soa, std::iter::empty(), std::iter::empty());
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response failed");
                failed(meta)
            }
        }
    }
}

fn failed(metadata: Metadata) -> ResponseInfo {
    hickory_server::proto::op::Header { metadata, counts: Default::default() }.into()
}

/// Serve `records` on UDP and TCP at `addr` until the process ends.
pub async fn serve(records: Records, addr: SocketAddr) -> Result<(), DnsError> {
    let bind = |source| DnsError::Bind { addr, source };
    let udp = tokio::net::UdpSocket::bind(addr).await.map_err(bind)?;
    let tcp = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let mut server = Server::new(Handler(records));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    Ok(())
}

/// One A query over UDP: `Ok(Some(ip))`, `Ok(None)` for NXDOMAIN, `Err` otherwise. For tests
/// and `skiff` diagnostics.
pub async fn query_a(server: SocketAddr, name: &str) -> std::io::Result<Option<Ipv4Addr>> {
    let n = Name::from_str(name).map_err(std::io::Error::other)?;
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(n, RecordType::A));
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    sock.send_to(&msg.to_vec().map_err(std::io::Error::other)?, server).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let resp = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
    match resp.metadata.response_code {
        ResponseCode::NXDomain => Ok(None),
        ResponseCode::NoError => Ok(resp.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })),
        other => Err(std::io::Error::other(format!("DNS answered {other}"))),
    }
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7) & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_live_names_and_nxdomain_otherwise() {
        let records = Records::new("skiff.test").unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        serve(records.clone(), addr).await.unwrap();
        records.set("shop.westus.skiff.test", Ipv4Addr::new(127, 77, 0, 5));
        assert_eq!(query_a(addr, "shop.westus.skiff.test.").await.unwrap(), Some(Ipv4Addr::new(127, 77, 0, 5)));
        assert_eq!(query_a(addr, "SHOP.westus.skiff.test.").await.unwrap(), Some(Ipv4Addr::new(127, 77, 0, 5)));
        assert_eq!(query_a(addr, "other.westus.skiff.test.").await.unwrap(), None);
        assert!(query_a(addr, "example.com.").await.is_err(), "names outside the zone are refused");
        records.remove("shop.westus.skiff.test");
        assert_eq!(query_a(addr, "shop.westus.skiff.test.").await.unwrap(), None);
    }
}
