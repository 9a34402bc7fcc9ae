//! The one error type of the crate. Each variant's message is written for an
//! end user: the agent prefixes it with `Failed to pull image "x": ` and shows
//! it as an event.

use std::io;

/// Errors from pulling, unpacking, mounting and collecting images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference string is not a valid image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// What the user gave.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Missing or wrong credentials for the registry.
    #[error("unauthorized: authentication required for {registry}")]
    Unauthorized {
        /// Registry host[:port].
        registry: String,
    },
    /// The repository, tag or manifest does not exist in the registry.
    #[error("not found: manifest unknown for {reference}")]
    NotFound {
        /// Normalized reference.
        reference: String,
    },
    /// Any other registry or network failure.
    #[error("registry {registry} error: {message}")]
    Registry {
        /// Registry host[:port].
        registry: String,
        /// Short description of the failure (the source has the details).
        message: String,
        /// Underlying client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Downloaded content does not hash to the digest the manifest promised.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Digest from the manifest.
        expected: String,
        /// Digest of what was received.
        actual: String,
    },
    /// A layer archive tried something unsafe (path traversal, escaping links...).
    #[error("unsafe layer content: {reason}")]
    UnsafeLayer {
        /// What was rejected and in which layer.
        reason: String,
    },
    /// A manifest, layer or digest kind this crate cannot handle.
    #[error("unsupported media type {media_type}")]
    Unsupported {
        /// The media type (or digest algorithm / platform) that is not supported.
        media_type: String,
    },
    /// A local filesystem or syscall failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// Wrap an io::Error with a context string.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }

    /// Map an oci-client error to the user-facing variants.
    pub(crate) fn from_oci(
        err: oci_client::errors::OciDistributionError,
        registry: &str,
        reference: &str,
    ) -> Self {
        use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
        let unauthorized = || ImageError::Unauthorized {
            registry: registry.to_string(),
        };
        let not_found = || ImageError::NotFound {
            reference: reference.to_string(),
        };
        match &err {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => return unauthorized(),
            E::ImageManifestNotFoundError(_) => return not_found(),
            E::RegistryError { envelope, .. } => {
                if let Some(e) = envelope.errors.first() {
                    match e.code {
                        C::Unauthorized | C::Denied => return unauthorized(),
                        C::ManifestUnknown
                        | C::NameUnknown
                        | C::BlobUnknown
                        | C::NotFound
                        | C::ManifestBlobUnknown => return not_found(),
                        _ => {}
                    }
                }
            }
            E::ServerError { code, .. } => match code {
                401 | 403 => return unauthorized(),
                404 => return not_found(),
                _ => {}
            },
            E::DigestError(oci_client::errors::DigestError::VerificationError {
                expected,
                actual,
            }) => {
                return ImageError::DigestMismatch {
                    expected: expected.clone(),
                    actual: actual.clone(),
                }
            }
            E::UnsupportedMediaTypeError(m) => {
                return ImageError::Unsupported {
                    media_type: m.clone(),
                }
            }
            E::UnsupportedSchemaVersionError(v) => {
                return ImageError::Unsupported {
                    media_type: format!("manifest schema version {v}"),
                }
            }
            _ => {}
        }
        ImageError::Registry {
            registry: registry.to_string(),
            message: chain_message(&err),
            source: Box::new(err),
        }
    }
}

/// `err: cause: cause…`, skipping causes already contained in the text (so
/// "error sending request" also says "Connection refused").
pub(crate) fn chain_message(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    msg
}
