//! Liveness and readiness probes: the plan, the pure bookkeeping of results against the
//! thresholds, and the HTTP check. The checks run from the supervisor: `exec` through
//! `crun exec` (like a user exec), `httpGet` from a thread that joins the group's network
//! namespace (so `127.0.0.1:<port>` is the group's loopback, not the host's).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ProbeAction {
    /// Succeeds when the command exits 0.
    Exec { command: Vec<String> },
    /// Succeeds on a 2xx/3xx answer.
    HttpGet {
        path: String,
        port: u16,
        /// `http` or `https` (certificate not verified).
        scheme: String,
        headers: Vec<(String, String)>,
    },
}

/// One probe with ACI's/Kubernetes' timing fields (defaults applied by the daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbePlan {
    pub action: ProbeAction,
    pub initial_delay_ms: u64,
    pub period_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// Consecutive results of one probe of one container run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
    /// The verdict so far: `None` until a threshold was crossed.
    pub healthy: Option<bool>,
}

impl ProbeState {
    /// Record one result; returns the new verdict when it changes.
    pub fn record(&mut self, ok: bool, plan: &ProbePlan) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= plan.success_threshold.max(1) {
            Some(true)
        } else if self.failures >= plan.failure_threshold.max(1) {
            Some(false)
        } else {
            None
        };
        match verdict {
            Some(v) if self.healthy != Some(v) => {
                self.healthy = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

/// The request an `httpGet` probe sends. Header names/values with CR or LF are dropped (the
/// API rejects them; this keeps a bad plan from splitting the request).
pub fn http_request(path: &str, port: u16, headers: &[(String, String)]) -> String {
    let clean = |s: &str| !s.contains(['\r', '\n']);
    let path = if path.starts_with('/') && clean(path) { path } else { "/" };
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: skiff-probe/1\r\n");
    for (k, v) in headers.iter().filter(|(k, v)| !k.is_empty() && clean(k) && !k.contains(':') && clean(v)) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// The status code of an HTTP response head, if it has one.
pub fn http_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..600).contains(&code).then_some(code)
}

/// Run an `httpGet` check inside the network namespace at `netns` (blocking; call from a
/// thread of its own: `setns` changes the calling thread only). `Err`: why it failed.
/// `https` does not verify the certificate (as Kubernetes' probes do not).
pub fn http_check(netns: &Path, path: &str, port: u16, scheme: &str, headers: &[(String, String)], timeout: Duration) -> Result<(), String> {
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("scheme {other} is not supported")),
    };
    let ns = std::fs::File::open(netns).map_err(|e| format!("cannot open the network namespace: {e}"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("cannot enter the network namespace: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let url = format!("{}://127.0.0.1:{port}{path}", if tls { "https" } else { "http" });
    let conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("Get \"{url}\": {e}"))?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = http_request(path, port, headers);
    let head = if tls {
        let tls_conn = rustls::ClientConnection::new(insecure_tls_config()?, rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())).map_err(|e| format!("TLS: {e}"))?;
        exchange(&mut rustls::StreamOwned::new(tls_conn, conn), &request)
    } else {
        let mut conn = conn;
        exchange(&mut conn, &request)
    }
    .map_err(|e| format!("Get \"{url}\": {e}"))?;
    match http_status(&head) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None => Err("the answer is not HTTP".to_string()),
    }
}

/// Send the request and read up to the end of the status line.
fn exchange(conn: &mut (impl Read + Write), request: &str) -> std::io::Result<Vec<u8>> {
    conn.write_all(request.as_bytes())?;
    conn.flush()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        match conn.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head)
}

/// TLS for probes: any certificate is accepted (probes check liveness, not identity; the
/// peer is the group's own loopback), signatures are still checked.
fn insecure_tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// [`http_check`] on a new thread, awaited without blocking the supervisor's loop.
pub async fn http_check_async(netns: PathBuf, path: String, port: u16, scheme: String, headers: Vec<(String, String)>, timeout: Duration) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("skiff-probe".into()).spawn(move || {
        let _ = tx.send(http_check(&netns, &path, port, &scheme, &headers, timeout));
    });
    if let Err(e) = spawned {
        return Err(format!("cannot start the probe thread: {e}"));
    }
    match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
        Ok(Ok(r)) => r,
        _ => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(failure: u32, success: u32) -> ProbePlan {
        ProbePlan { action: ProbeAction::Exec { command: vec!["true".into()] }, initial_delay_ms: 0, period_ms: 1000, timeout_ms: 1000, failure_threshold: failure, success_threshold: success }
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let p = plan(3, 2);
        let mut s = ProbeState::default();
        assert_eq!(s.record(true, &p), None);
        assert_eq!(s.record(true, &p), Some(true));
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(true, &p), None); // the failure streak is broken
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(false, &p), Some(false));
        assert_eq!(s.record(false, &p), None); // reported once
    }

    #[test]
    fn http_parsing_and_request() {
        assert_eq!(http_status(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Some(200));
        assert_eq!(http_status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(http_status(b"SSH-2.0-x\r\n"), None);
        assert_eq!(http_status(b"HTTP/1.1 abc\r\n"), None);
        let r = http_request("/healthz", 8080, &[("X-A".into(), "1".into()), ("Bad\r\nInjected".into(), "x".into())]);
        assert!(r.starts_with("GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(r.contains("X-A: 1\r\n") && !r.contains("Injected"));
        assert!(http_request("no-slash", 1, &[]).starts_with("GET / "));
    }

    /// Runs in the test's own network namespace (`setns` into it is a no-op, as root).
    #[test]
    fn http_and_https_checks_against_local_servers() {
        use std::net::TcpListener;
        let own = Path::new("/proc/self/ns/net");
        let t = Duration::from_secs(5);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.0 204 No Content\r\n\r\n", "HTTP/1.0 503 Busy\r\n\r\n"] {
                let (mut c, _) = l.accept().unwrap();
                let mut req = [0u8; 1024];
                let n = c.read(&mut req).unwrap();
                assert!(String::from_utf8_lossy(&req[..n]).contains("X-Probe: yes\r\n"));
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        let h = vec![("X-Probe".to_string(), "yes".to_string())];
        assert_eq!(http_check(own, "/h", port, "http", &h, t), Ok(()));
        assert_eq!(http_check(own, "/h", port, "HTTP", &h, t), Err("HTTP probe failed with statuscode: 503".to_string()));
        server.join().unwrap();
        assert!(http_check(own, "/", port, "http", &h, t).unwrap_err().contains("refused"));
        assert!(http_check(own, "/", port, "gopher", &h, t).is_err());

        // https: a self-signed certificate is accepted.
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=probe"])
            .arg("-keyout").arg(&key).arg("-out").arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut srv = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert").arg(&cert).arg("-key").arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let res = loop {
            let r = http_check(own, "/", port, "https", &[], t);
            if r.is_ok() || std::time::Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = srv.kill();
        let _ = srv.wait();
        assert_eq!(res, Ok(()));
    }

    proptest! {
        #[test]
        fn verdict_matches_the_latest_streak(results in proptest::collection::vec(any::<bool>(), 0..40), f in 1u32..4, s in 1u32..4) {
            let p = plan(f, s);
            let mut st = ProbeState::default();
            for r in &results { st.record(*r, &p); }
            // Whatever the history, a verdict only exists once some streak reached a threshold.
            let mut streak = 0u32; let mut last = None; let mut verdict = None;
            for r in &results {
                if Some(*r) == last { streak += 1 } else { streak = 1; last = Some(*r) }
                if *r && streak >= s { verdict = Some(true) }
                if !*r && streak >= f { verdict = Some(false) }
            }
            prop_assert_eq!(st.healthy, verdict);
        }

        #[test]
        fn status_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = http_status(&b);
        }
    }
}
