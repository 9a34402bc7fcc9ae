//! Docker-style image reference normalization (pure logic).
//!
//! `busybox` → `docker.io/library/busybox:latest`,
//! `127.0.0.1:5000/app` → `127.0.0.1:5000/app:latest`,
//! `repo@sha256:…` keeps the digest and gets no default tag.

use crate::ImageError;

/// Default registry for names without a registry component.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalized reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReference {
    /// host[:port], e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (defaults to `latest` when there is no digest).
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if pinned.
    pub digest: Option<String>,
}

impl ParsedReference {
    /// The canonical string form.
    pub fn to_canonical(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// Normalize a user-supplied reference with docker-style defaults.
pub fn normalize_reference(s: &str) -> Result<String, ImageError> {
    parse_reference(s).map(|p| p.to_canonical())
}

/// Parse and validate a reference, applying docker-style defaults.
pub fn parse_reference(input: &str) -> Result<ParsedReference, ImageError> {
    let bad = |reason: &str| ImageError::InvalidReference {
        reference: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty reference"));
    }
    if s.len() > 4096 {
        return Err(bad("reference too long"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        validate_digest(d).map_err(|r| bad(&r))?;
    }
    // The tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if last_slash.is_none_or(|sl| i > sl) => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad(
                "invalid tag (allowed: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})",
            ));
        }
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
        _ => registry,
    };
    if !valid_registry(&registry) {
        return Err(bad("invalid registry host"));
    }
    let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if repository.is_empty() || !repository.split('/').all(valid_path_component) {
        return Err(bad(
            "invalid repository name (lowercase letters, digits and separators '.', '_', '-' only)",
        ));
    }
    if repository.len() > 255 {
        return Err(bad("repository name too long"));
    }
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some("latest".to_string()),
        (None, Some(_)) => None,
    };
    Ok(ParsedReference {
        registry,
        repository,
        tag,
        digest: digest.map(str::to_string),
    })
}

fn validate_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err("digest must look like sha256:<hex>".into());
    };
    if alg != "sha256" {
        return Err(format!("unsupported digest algorithm {alg:?}"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("sha256 digest must be 64 lowercase hex characters".into());
    }
    Ok(())
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn valid_registry(r: &str) -> bool {
    let (host, port): (Option<&str>, Option<&str>) = if let Some(rest) = r.strip_prefix('[') {
        // [ipv6]:port
        let Some((h, p)) = rest.split_once(']') else {
            return false;
        };
        if h.is_empty() || !h.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        let port = if p.is_empty() {
            None
        } else if let Some(p) = p.strip_prefix(':') {
            Some(p)
        } else {
            return false;
        };
        (None, port)
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(h) = host {
        if h.is_empty()
            || !h
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
            || h.starts_with(['.', '-'])
            || h.ends_with(['.', '-'])
        {
            return false;
        }
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    true
}

/// Is this registry on a loopback address (plain HTTP always allowed)?
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(registry)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_defaults() {
        let n = |s: &str| normalize_reference(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            n("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(n("127.0.0.1:5000/busybox"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(n("localhost/a/b/c:v1"), "localhost/a/b/c:v1");
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(
            n("mcr.microsoft.com/azuredocs/aci-helloworld"),
            "mcr.microsoft.com/azuredocs/aci-helloworld:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(n(&format!("r.io/x:t@{d}")), format!("r.io/x:t@{d}"));
        assert_eq!(n("[::1]:5000/x"), "[::1]:5000/x:latest");
    }

    #[test]
    fn rejects_bad() {
        for s in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "a//b",
            "busybox:-x",
            "r.io/x@md5:00",
            "a/../b",
            "/x",
            "x/",
            "h:99999999/x",
        ] {
            assert!(normalize_reference(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn loopback() {
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("127.3.4.5"));
        assert!(is_loopback_registry("localhost:5001"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("docker.io"));
        assert!(!is_loopback_registry("10.0.0.1:5000"));
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent_and_parseable(
            reg in proptest::option::of(prop_oneof![Just("127.0.0.1:5000"), Just("localhost"), Just("ghcr.io"), Just("docker.io")]),
            comps in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,4})?", 1..4),
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        ) {
            let mut s = String::new();
            if let Some(r) = reg { s.push_str(r); s.push('/'); }
            s.push_str(&comps.join("/"));
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            let n = normalize_reference(&s).unwrap();
            prop_assert_eq!(normalize_reference(&n).unwrap(), n.clone());
            let r: oci_client::Reference = n.parse().unwrap();
            prop_assert_eq!(r.tag().unwrap(), tag.as_deref().unwrap_or("latest"));
        }

        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = normalize_reference(&s);
        }
    }
}
