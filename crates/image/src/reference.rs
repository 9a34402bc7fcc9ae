//! Image references: parsing and Docker's defaults come from `skiff_model::image_ref` (the
//! same grammar the API validates with); this module adapts them to the image store's errors
//! and decides which registries may be reached over plain HTTP.
//!
//! `busybox` → `docker.io/library/busybox:latest`,
//! `127.0.0.1:5000/app` → `127.0.0.1:5000/app:latest`,
//! `repo@sha256:…` keeps the digest and gets no default tag.

pub use skiff_model::image_ref::{ImageRef as ParsedReference, DEFAULT_REGISTRY};

use crate::ImageError;

/// Normalize a user-supplied reference with docker-style defaults.
pub fn normalize_reference(s: &str) -> Result<String, ImageError> {
    parse_reference(s).map(|p| p.to_string())
}

/// Parse and validate a reference, applying docker-style defaults.
pub fn parse_reference(input: &str) -> Result<ParsedReference, ImageError> {
    ParsedReference::parse(input.trim()).map_err(|e| ImageError::InvalidReference { reference: e.reference, reason: e.reason.to_string() })
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
