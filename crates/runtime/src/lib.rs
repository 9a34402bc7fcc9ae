//! skiff-runtime: turns a planned container group into running containers.
//!
//! - [`bundle`] renders OCI bundles (pure);
//! - [`oci_runtime`] is the only place that runs crun, from the sealed copy of [`sealed`];
//! - [`cgroup`] is the only place that writes cgroupfs;
//! - [`sys`] holds the raw system calls; [`netns`] the group's network namespace;
//! - [`supervisor`] is the per-group process (`skiff supervisor --group-dir DIR`),
//!   started with [`spawn_supervisor`] and driven with [`SupervisorClient`];
//! - [`logs`] writes and reads CRI-format container logs; [`restart`] is the
//!   restart policy and back-off; [`status`] the status model; [`host`] the preflight.
//!
//! Group directory layout: `plan.json`, `status.json`, `ctl.sock`,
//! `supervisor.log`, `bundles/<name>/config.json`, `logs/<name>.log[.1]`.

pub mod bundle;
pub mod cleanup;
pub mod cgroup;
pub mod client;
pub mod exec;
pub mod follow;
pub mod frame;
pub mod host;
pub mod logs;
pub mod netns;
pub mod oci_runtime;
pub mod plan;
pub mod probe;
pub mod protocol;
pub mod pty;
pub mod restart;
pub mod seccomp;
pub mod sealed;
pub mod spawn;
pub mod status;
pub mod supervisor;
pub mod sys;
mod util;

pub use cleanup::cleanup_group;
pub use client::{is_alive, read_status_file, ClientError, Session, SupervisorClient};
pub use host::{preflight, HostError, HostReport};
pub use netns::{ensure_netns, remove_netns};
pub use plan::{ContainerPlan, GroupLimits, GroupPlan, IdRange, MountPlan, RestartPolicy, RuntimeConfig};
pub use spawn::{spawn_supervisor, SpawnError};
pub use status::{ContainerStatus, GroupState, GroupStatus, State};
pub use supervisor::supervisor_main;
