//! Skiff's model of the `Microsoft.ContainerInstance/containerGroups` ARM resource: the wire
//! types (api-version 2023-05-01), validation and normalisation of user documents, the seeds'
//! resource arithmetic, group state derivation, ARM errors and the records kept in the store.
//! Everything here is pure: no I/O, no clocks, no randomness.

pub mod arm;
pub mod error;
pub mod image_ref;
pub mod names;
pub mod records;
pub mod resources;
pub mod shares;
pub mod state;
pub mod usage;
pub mod validate;

pub use arm::ContainerGroup;
pub use error::{ArmError, CloudError};

/// The api-versions Skiff accepts. The body shapes of these versions are compatible for what
/// Skiff implements; older ACI YAML files carry them in `apiVersion`.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["2023-05-01", "2022-10-01-preview", "2022-09-01", "2021-10-01", "2021-09-01", "2021-07-01", "2021-03-01", "2020-11-01", "2019-12-01", "2018-10-01"];
pub const DEFAULT_API_VERSION: &str = "2023-05-01";
