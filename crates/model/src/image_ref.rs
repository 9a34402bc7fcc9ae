//! Image reference grammar (`[registry[:port]/]repo/path[:tag][@sha256:hex]`), with Docker's
//! defaults: no registry means Docker Hub, a single path component lives under `library/`,
//! no tag means `latest`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: &'static str,
}

pub const DEFAULT_REGISTRY: &str = "docker.io";
const DOCKER_HUB_ALIASES: &[&str] = &["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, ImageRefError> {
        let err = |reason| ImageRefError { reference: input.to_string(), reason };
        if input.is_empty() || input.len() > 4096 {
            return Err(err("must be between 1 and 4096 characters"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("must not contain whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d).ok_or_else(|| err("digest must be sha256: followed by 64 hex digits"))?)),
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !is_valid_tag(t) {
                return Err(err("tag must be 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder)) if looks_like_registry(first) => (first.to_string(), remainder.to_string()),
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        // Docker Hub's other names are the same registry.
        let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) { DEFAULT_REGISTRY.to_string() } else { registry };
        if !is_valid_registry(&registry) {
            return Err(err("registry must be a host name or address with an optional port"));
        }
        if path.is_empty() || !path.split('/').all(is_valid_path_component) {
            return Err(err("repository must be lowercase path components of letters and digits separated by '.', '_', '__' or '-'"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// Registry host the credentials of `imageRegistryCredentials[].server` are matched against.
    pub fn registry_host(&self) -> &str {
        &self.registry
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase())
}

fn is_valid_registry(r: &str) -> bool {
    let (host, port) = if r.starts_with('[') {
        match r.find(']') {
            Some(end) if end + 1 == r.len() => (r, None),
            Some(end) if r[end + 1..].starts_with(':') => (&r[..=end], Some(&r[end + 2..])),
            _ => return false,
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host.len() > 2 && host[1..host.len() - 1].chars().all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)));
    host_ok && port_ok
}

fn is_valid_path_component(c: &str) -> bool {
    // alnum ( (. | _ | __ | -+) alnum )*
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
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn parse_digest(d: &str) -> Option<String> {
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())).then(|| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_defaults() {
        assert_eq!(p("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(p("user/app"), "docker.io/user/app:latest");
        assert_eq!(p("mcr.microsoft.com/azuredocs/aci-helloworld"), "mcr.microsoft.com/azuredocs/aci-helloworld:latest");
        assert_eq!(p("127.0.0.1:5000/busybox:latest"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(p("localhost/a/b/c:v1"), "localhost/a/b/c:v1");
        assert_eq!(p("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(p("[::1]/x"), "[::1]/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(p(&format!("127.0.0.1:5000/busybox@{d}")), format!("127.0.0.1:5000/busybox@{d}"));
        assert_eq!(p(&format!("busybox:1@{d}")), format!("docker.io/library/busybox:1@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "Busybox", "busybox:", "busybox:-x", "a b", "reg:99999/x", "x@sha256:abc", "a//b", "a/", "-a", "a..b", "127.0.0.1:5000/"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn display_round_trips(reg in "(127\\.0\\.0\\.1:5000|registry\\.example\\.com|localhost)", repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}") {
            let s = format!("{reg}/{repo}:{tag}");
            let r = ImageRef::parse(&s).unwrap();
            prop_assert_eq!(r.to_string(), s.clone());
            prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        }
    }
}
