//! TLS for the exec/attach websocket (`wss://`): the server's certificate must chain to the
//! CLI's CA (`--ca-cert`, `SKIFF_CA_CERT`, the config file, or the local server's CA).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::CliError;

/// Host and port of a `wss://host[:port]/...` URI.
pub fn host_port(uri: &str) -> Option<(String, u16)> {
    let rest = uri.strip_prefix("wss://")?;
    let authority = rest.split(['/', '?']).next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map_or(Some(443), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), 443)),
    }
}

/// A TLS connection to the websocket's host.
pub async fn connect(uri: &str, ca: Option<&Path>) -> Result<TlsStream<TcpStream>, CliError> {
    let (host, port) = host_port(uri).ok_or_else(|| CliError::Http(format!("invalid websocket URI '{uri}'")))?;
    let ca = ca.ok_or_else(|| CliError::usage("the session websocket is TLS: give the server's CA with --ca-cert or SKIFF_CA_CERT"))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| CliError::usage(format!("cannot read the CA certificate {}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| CliError::usage(format!("invalid CA certificate {}: {e}", ca.display())))?;
        roots.add(cert).map_err(|e| CliError::usage(format!("invalid CA certificate {}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Http(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|_| CliError::Http(format!("invalid host name '{host}'")))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| CliError::Http(format!("cannot connect to {host}:{port}: {e}")))?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.map_err(|e| CliError::Http(format!("TLS handshake with {host}:{port} failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(host_port("wss://127.0.0.1:8443/execstream/sessionId/x?a=1"), Some(("127.0.0.1".into(), 8443)));
        assert_eq!(host_port("wss://skiff.example/x"), Some(("skiff.example".into(), 443)));
        assert_eq!(host_port("wss://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(host_port("ws://h/x"), None);
        assert_eq!(host_port("wss://h:notaport/x"), None);
    }
}
