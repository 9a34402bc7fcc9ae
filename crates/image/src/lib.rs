//! Pulls OCI/Docker images from any registry speaking the distribution API,
//! keeps a content-addressed blob and unpacked-layer cache shared by all groups,
//! assembles an overlayfs rootfs per container, and garbage-collects unused images.
//!
//! On-disk layout under the store root:
//! - `blobs/sha256/<hex>`: verified blobs (manifests and configs);
//! - `layers/<16 hex>/`: unpacked layers, used directly as overlay lower dirs. A layer is
//!   decompressed and unpacked while it downloads (its digest checked over the whole stream
//!   before the directory takes its name) and its compressed blob is not kept, so each layer
//!   is written to disk once. Each new layer is named as soon as it is unpacked (under its
//!   own lock only), marked unsynced with the boot it was written in, and the pull's layers
//!   are synced in the background; a later boot removes the layers an
//!   earlier one never synced (and the images that need them are pulled again);
//! - `images/<sha256(reference)>.json`: one small record per pulled reference,
//!   so [`ImageStore::lookup`] is a single file read.

mod error;
pub mod layer_path;
pub mod manifest;
pub mod reference;
mod store;
mod sys;
pub mod unpack;

pub use error::ImageError;
pub use sys::is_mounted_at;
pub use manifest::ImageConfig;
pub use reference::{normalize_reference, parse_reference, ParsedReference};
pub use store::{
    unmount_all_at, GcReport, IdMap, IdMapper, ImageStore, ImageStoreConfig, PullProgress, RegistryAuth, ResolvedImage,
};
