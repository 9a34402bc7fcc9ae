//! The server's TLS material: a local CA and a server certificate in `<data-dir>/tls/`.
//!
//! On first start the server makes a CA (`ca.pem`, `ca.key`) and a certificate for its listen
//! names signed by it (`server.pem`, `server.key`); clients trust `ca.pem`. Later starts reuse
//! them, and issue a new server certificate from the same CA when the names change (a new
//! `--listen` address or `--tls-san`), so clients keep trusting the server. Operators can bring
//! their own certificate instead (`--tls-cert`/`--tls-key`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Paths of the certificate chain and key the listener serves, and the CA clients should trust.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// The names a certificate for `listen_ip` should carry: loopback names, the host name, the
/// listen address when it is a specific one, and the operator's extra names. Sorted, unique.
pub fn server_names(listen_ip: IpAddr, hostname: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !listen_ip.is_unspecified() {
        names.push(listen_ip.to_string());
    }
    if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
        names.push(h.to_string());
    }
    names.extend(extra.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    names.sort();
    names.dedup();
    names
}

fn ca_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name.push(DnType::OrganizationName, "Skiff");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2044, 1, 1);
    Ok(p)
}

/// Make (or reuse) the local CA and a server certificate for `names` in `dir`.
pub fn ensure_local(dir: &Path, names: &[String]) -> anyhow::Result<TlsFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key, ca_cn, cert, key, names_file) =
        (dir.join("ca.pem"), dir.join("ca.key"), dir.join("ca.cn"), dir.join("server.pem"), dir.join("server.key"), dir.join("server.names"));
    let (issuer_params, issuer_key, fresh_ca) = if ca_pem.exists() && ca_key.exists() && ca_cn.exists() {
        let cn = std::fs::read_to_string(&ca_cn).context("reading ca.cn")?;
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key).context("reading ca.key")?).context("parsing ca.key")?;
        (ca_params(cn.trim())?, key, false)
    } else {
        // A per-installation name, so two Skiff CAs in one trust store are told apart.
        let cn = format!("Skiff local CA {}", &uuid_like());
        let key = KeyPair::generate().context("generating the CA key")?;
        let params = ca_params(&cn)?;
        let ca = params.self_signed(&key).context("signing the CA certificate")?;
        crate::private_file::write_atomically(&ca_key, &key.serialize_pem(), 0o600)?;
        crate::private_file::write_atomically(&ca_pem, &ca.pem(), 0o644)?;
        crate::private_file::write_atomically(&ca_cn, &cn, 0o644)?;
        (params, key, true)
    };
    let want = names.join("\n");
    let current = std::fs::read_to_string(&names_file).ok();
    if fresh_ca || !cert.exists() || !key.exists() || current.as_deref() != Some(want.as_str()) {
        let issuer = Issuer::new(issuer_params, issuer_key);
        let mut p = CertificateParams::new(names.to_vec()).context("server certificate names")?;
        p.distinguished_name.push(DnType::CommonName, names.iter().find(|n| n.parse::<IpAddr>().is_err()).cloned().unwrap_or_else(|| "localhost".into()));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.use_authority_key_identifier_extension = true;
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let server_key = KeyPair::generate().context("generating the server key")?;
        let server = p.signed_by(&server_key, &issuer).context("signing the server certificate")?;
        crate::private_file::write_atomically(&key, &server_key.serialize_pem(), 0o600)?;
        // The chain: server certificate, then the CA (clients that pin the CA need only ca.pem).
        crate::private_file::write_atomically(&cert, &format!("{}{}", server.pem(), std::fs::read_to_string(&ca_pem).context("reading ca.pem")?), 0o644)?;
        crate::private_file::write_atomically(&names_file, &want, 0o644)?;
        tracing::info!(names = %names.join(","), "issued a server certificate from the local CA");
    }
    Ok(TlsFiles { cert, key, ca: Some(ca_pem) })
}

fn uuid_like() -> String {
    let mut b = [0u8; 6];
    // /dev/urandom through std: no extra dependency for eight random bytes.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_loopback_listen_address_and_extras() {
        let n = server_names("10.1.2.3".parse().unwrap(), Some("box\n"), &["skiff.example".into(), "".into()]);
        assert_eq!(n, vec!["10.1.2.3", "127.0.0.1", "::1", "box", "localhost", "skiff.example"]);
        let n = server_names("0.0.0.0".parse().unwrap(), None, &[]);
        assert_eq!(n, vec!["127.0.0.1", "::1", "localhost"]);
    }

    #[test]
    fn ca_is_kept_and_server_cert_follows_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_local(dir.path(), &["localhost".into()]).unwrap();
        let ca1 = std::fs::read_to_string(a.ca.as_ref().unwrap()).unwrap();
        let cert1 = std::fs::read_to_string(&a.cert).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&a.key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let b = ensure_local(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&b.cert).unwrap(), cert1, "same names: certificate reused");
        let c = ensure_local(dir.path(), &["localhost".into(), "other".into()]).unwrap();
        assert_ne!(std::fs::read_to_string(&c.cert).unwrap(), cert1, "new names: new certificate");
        assert_eq!(std::fs::read_to_string(c.ca.as_ref().unwrap()).unwrap(), ca1, "the CA stays");
        assert!(std::fs::read_to_string(&c.cert).unwrap().ends_with(&ca1), "the chain ends with the CA");
    }
}
