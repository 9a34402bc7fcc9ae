//! Manifest, index and image-config documents (pure logic): parsing the
//! media types we accept, choosing linux/amd64 from an index, and mapping a
//! layer media type to its compression.

use serde::{Deserialize, Serialize};

use crate::ImageError;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Media types sent in `Accept` when fetching a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// Platform of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Either an image manifest or an index/manifest list (fields of both).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: i64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// A single-platform image.
    Image {
        /// Config blob.
        config: Descriptor,
        /// Layers, bottom first.
        layers: Vec<Descriptor>,
    },
    /// A multi-platform index.
    Index {
        /// Per-platform manifests.
        manifests: Vec<Descriptor>,
    },
}

/// Parse a manifest body. `content_type` is the HTTP Content-Type if known.
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ImageError> {
    let raw: RawManifest = serde_json::from_slice(body).map_err(|e| ImageError::Unsupported {
        media_type: format!("unparseable manifest ({e})"),
    })?;
    if raw.schema_version != 2 {
        return Err(ImageError::Unsupported {
            media_type: format!("manifest schema version {}", raw.schema_version),
        });
    }
    let mt = raw.media_type.as_deref().or(content_type).unwrap_or("");
    let is_index = match mt {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // OCI allows omitting mediaType: decide by shape.
        "" => raw.manifests.is_some(),
        other => {
            return Err(ImageError::Unsupported {
                media_type: other.to_string(),
            })
        }
    };
    if is_index {
        Ok(Manifest::Index {
            manifests: raw.manifests.unwrap_or_default(),
        })
    } else {
        let config = raw.config.ok_or_else(|| ImageError::Unsupported {
            media_type: format!("{mt} without config"),
        })?;
        Ok(Manifest::Image {
            config,
            layers: raw.layers.unwrap_or_default(),
        })
    }
}

/// Pick the linux/amd64 entry of an index (preferring no variant or `v1`..).
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    os: &str,
    arch: &str,
) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .min_by_key(|d| {
            // Prefer entries without variant, then lowest variant string.
            d.platform
                .as_ref()
                .and_then(|p| p.variant.clone())
                .unwrap_or_default()
        })
}

/// Layer compression, derived from the media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Map a layer media type to its compression, rejecting non-tar layers.
pub fn layer_compression(media_type: &str) -> Result<Compression, ImageError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(ImageError::Unsupported {
            media_type: other.to_string(),
        }),
    }
}

/// The runtime-relevant part of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageConfig {
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// ENV, `KEY=value`.
    pub env: Vec<String>,
    /// WORKDIR ("" = /).
    pub working_dir: String,
    /// USER ("" = root).
    pub user: String,
    /// EXPOSE, e.g. `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRuntimeConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawImageConfig {
    #[serde(default)]
    config: Option<RawRuntimeConfig>,
    #[serde(default)]
    os: Option<String>,
}

/// Parse the image config blob (OCI or Docker; same JSON shape).
pub fn parse_image_config(body: &[u8]) -> Result<ImageConfig, ImageError> {
    let raw: RawImageConfig =
        serde_json::from_slice(body).map_err(|e| ImageError::Unsupported {
            media_type: format!("unparseable image config ({e})"),
        })?;
    if let Some(os) = raw.os.as_deref() {
        if !os.is_empty() && os != "linux" {
            return Err(ImageError::Unsupported {
                media_type: format!("image for os {os:?} (only linux is supported)"),
            });
        }
    }
    let c = raw.config.unwrap_or_default();
    Ok(ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        exposed_ports: c
            .exposed_ports
            .map(|m| m.into_keys().collect())
            .unwrap_or_default(),
    })
}

/// Hex part of a `sha256:` digest, validated.
pub fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(ImageError::Unsupported {
            media_type: format!("digest {digest:?} (only sha256 is supported)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn picks_linux_amd64() {
        let m = vec![
            d("a", "linux", "arm64", Some("v8")),
            d("b", "windows", "amd64", None),
            d("c", "linux", "amd64", Some("v3")),
            d("e", "linux", "amd64", None),
        ];
        assert_eq!(select_platform(&m, "linux", "amd64").unwrap().digest, "e");
        assert!(select_platform(&m[..2], "linux", "amd64").is_none());
    }

    #[test]
    fn parses_docker_and_oci() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:00"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"digest":"sha256:11"}]}"#;
        match parse_manifest(docker, None).unwrap() {
            Manifest::Image { layers, .. } => assert_eq!(layers.len(), 1),
            m => panic!("{m:?}"),
        }
        let oci_index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:22","size":3,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert!(matches!(
            parse_manifest(oci_index, None).unwrap(),
            Manifest::Index { .. }
        ));
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(
            parse_manifest(v1, None),
            Err(ImageError::Unsupported { .. })
        ));
    }

    #[test]
    fn config_fields() {
        let c = br#"{"os":"linux","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/bin"],"WorkingDir":"/w","User":"1000","ExposedPorts":{"80/tcp":{},"53/udp":{}}}}"#;
        let c = parse_image_config(c).unwrap();
        assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.working_dir, "/w");
        let empty = parse_image_config(br#"{"config":{"Cmd":null}}"#).unwrap();
        assert_eq!(empty, ImageConfig::default());
    }

    #[test]
    fn compression() {
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        assert!(layer_compression("application/vnd.oci.image.layer.v1.tar+encrypted").is_err());
    }
}
