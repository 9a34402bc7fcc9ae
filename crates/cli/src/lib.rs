//! The `skiff` command line. Every subcommand except the daemon (`skiff server`) and the hidden
//! per-group supervisor is an HTTP client of Skiff's ARM API and mirrors `az container` /
//! `az group` (see `spec/CLI.md`).
//!
//! The binary parses [`Cli`]; [`Command::Server`] and [`Command::Supervisor`] are handled by the
//! binary itself, everything else goes to [`run`] (synchronous: it builds its own
//! current-thread tokio runtime) or [`run_async`] (when the caller already has a runtime).
//!
//! Layout: [`client`] is the HTTP client (URLs, api-versions, CloudError decoding, long-running
//! operation polling, paging); [`build`] turns arguments into request documents (pure);
//! [`output`] formats resources as table/json/yaml/tsv (pure); [`commands`] glues them together;
//! [`bench`] is `skiff bench create`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod bench;
pub mod bench_suite;
pub mod build;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod exec;
pub mod metering;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod shares;
pub mod terminal;
pub mod volumes;
pub mod wss;
pub mod tokens;
pub mod pod;
pub mod quantity;
pub mod network;

pub use error::CliError;

#[derive(Debug, Parser)]
#[command(name = "skiff", version, about = "Skiff: a self-hosted Azure Container Instances", propagate_version = true)]
pub struct Cli {
    /// Base URL of the Skiff server [env SKIFF_SERVER; config file `server`; default http://127.0.0.1:8080].
    #[arg(long, global = true, env = "SKIFF_SERVER")]
    pub server: Option<String>,

    /// Subscription id [env SKIFF_SUBSCRIPTION; config file `subscription`; default 00000000-0000-0000-0000-000000000000].
    #[arg(long, global = true, env = "SKIFF_SUBSCRIPTION")]
    pub subscription: Option<String>,

    /// Output format (default: table).
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<OutputFormat>,

    /// JMESPath query over the resources a command prints (as az: `--query ipAddress`,
    /// `--query "containers[].image"`). The resource is seen as az shows it, with each
    /// `properties` lifted to its object's top level (`properties.x` works too). The result
    /// prints as JSON, or YAML/TSV with `-o`.
    #[arg(long, global = true)]
    pub query: Option<String>,

    /// Print the HTTP requests made (method, URL, status; never bodies) to stderr.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Bearer token [env SKIFF_TOKEN; config file `token`; default: the local server's <data-dir>/admin.token].
    #[arg(long, global = true, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) to trust for the server [env SKIFF_CA_CERT; config file `caCert`; default: the local server's <data-dir>/tls/ca.pem].
    #[arg(long, global = true, env = "SKIFF_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Table,
    Yaml,
    Tsv,
    /// Comma-separated values with a header (usage records; other commands print TSV).
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Skiff daemon (ARM API + agent).
    Server(ServerArgs),
    /// Per-group supervisor (internal).
    #[command(hide = true)]
    Supervisor(SupervisorArgs),
    /// Manage container groups (like `az container`).
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage resource groups (like `az group`).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Billable usage records (vCPU-seconds, GB-seconds) of a time window (Skiff extension).
    Usage(metering::UsageArgs),
    /// The lifecycle event log of container groups; `--follow` streams new events (Skiff extension).
    Events(metering::EventsArgs),
    /// Manage API tokens (admin token only).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Virtual networks and subnets for private groups (like `az network vnet`).
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage Skiff-managed file shares (for `azureFile` volumes).
    #[command(subcommand)]
    Share(ShareCommand),
}

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// Create a share; prints it with its key (generated unless --key is given).
    Create {
        #[arg(long)]
        account_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a share (without its key).
    Show {
        #[arg(long)]
        account_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List shares.
    List,
    /// Delete a share and its data.
    Delete {
        #[arg(long)]
        account_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Directory holding the store, images and group state.
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address the ARM API listens on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SKIFF_LISTEN")]
    pub listen: String,
    /// The location (region) this server reports.
    #[arg(long, default_value = "westus")]
    pub location: String,
    /// OCI runtime binary.
    #[arg(long, default_value = "crun")]
    pub runtime: String,
    /// Registry host[:port] that may be reached over plain http / without TLS verification (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `skiff=debug`.
    #[arg(long, env = "SKIFF_LOG", default_value = "info")]
    pub log_level: String,
    /// Directory for runtime state that must not outlive a reboot (network namespaces, OCI runtime state).
    #[arg(long, default_value = "/run/skiff")]
    pub run_dir: PathBuf,
    /// Cgroup parent of every group, in each cgroup hierarchy.
    #[arg(long, default_value = "skiff")]
    pub cgroup_parent: String,
    /// How long containers get between SIGTERM and SIGKILL when stopped or deleted.
    #[arg(long, default_value_t = 10_000)]
    pub stop_grace_ms: u64,
    /// First back-off before a crashed container is restarted (doubles up to 5 minutes).
    #[arg(long, default_value_t = 1_000)]
    pub restart_backoff_ms: u64,
    /// Container groups per page in list responses (clients follow `nextLink`).
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// Default sandbox tier of groups (a group may ask with the tag `skiff-sandbox`); see
    /// docs/ISOLATION.md. Only `container` can run on this host.
    #[arg(long, default_value = "container")]
    pub sandbox: String,
    /// Run each group in its own user namespace with a host id range of its own (root in a
    /// container is an unprivileged id on the host). Turning it off runs containers as real root.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SKIFF_USERNS")]
    pub userns: bool,
    /// Apply the seccomp profile to every container. `false` exists to measure what the
    /// profile costs (bench/run.sh sandbox) and to debug a workload; it removes a layer of the
    /// sandbox (docs/ISOLATION.md).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub seccomp: bool,
    /// Most processes one group may have at once (its pids cgroup limit).
    #[arg(long, default_value_t = 4096)]
    pub group_pids_max: i64,
    /// Size limit, in MiB, of one group's writable layers (all its containers together). They
    /// live in a tmpfs of the group's own, so a group can never fill the host's disk; what it
    /// writes there counts toward its memory, as on Cloud Run. Writes past it fail with ENOSPC.
    #[arg(long, default_value_t = 1024)]
    pub writable_layer_mb: u64,
    /// Size limit, in MiB, of each emptyDir volume (a tmpfs of its own, counted like the
    /// writable layers).
    #[arg(long, default_value_t = 1024)]
    pub empty_dir_mb: u64,
    /// Per-subscription quota: container groups per location.
    #[arg(long, env = "SKIFF_QUOTA_CONTAINER_GROUPS", default_value_t = 1000)]
    pub quota_container_groups: u64,
    /// Per-subscription quota: cores (whole cores allocated to groups) per location.
    #[arg(long, env = "SKIFF_QUOTA_CORES", default_value_t = 1000)]
    pub quota_cores: u64,
    /// Per-subscription quota: memory (GB) allocated to groups per location.
    #[arg(long, env = "SKIFF_QUOTA_MEMORY_GB", default_value_t = 4000.0)]
    pub quota_memory_gb: f64,
    /// How often the running time of groups is written to their usage records (at most this
    /// much billable time is lost when the daemon is killed).
    #[arg(long, env = "SKIFF_USAGE_FLUSH_MS", default_value_t = 60_000)]
    pub usage_flush_ms: u64,
    /// Days closed usage records are kept.
    #[arg(long, env = "SKIFF_USAGE_RETENTION_DAYS", default_value_t = 90.0)]
    pub usage_retention_days: f64,
    /// Days lifecycle events are kept.
    #[arg(long, env = "SKIFF_EVENT_RETENTION_DAYS", default_value_t = 7.0)]
    pub event_retention_days: f64,
    /// Give groups networking (bridge, private and public addresses, DNS); `false` leaves each group a namespace with only `lo`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SKIFF_NETWORK")]
    pub network: bool,
    /// Private addresses of groups outside named subnets.
    #[arg(long, default_value = "10.77.0.0/16")]
    pub private_cidr: String,
    /// Pool of public addresses (`ipAddress.type: Public`); a loopback range needs no uplink.
    #[arg(long, default_value = "127.77.0.0/16")]
    pub public_pool: String,
    /// Interface the public addresses are bound on.
    #[arg(long, default_value = "lo")]
    pub public_interface: String,
    /// Bridge of groups outside named subnets.
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// Where the embedded DNS server listens (empty: no DNS server).
    #[arg(long, default_value = "127.0.0.1:53")]
    pub dns_listen: String,
    /// DNS zone of group FQDNs (`<label>.<location>.<zone>`).
    #[arg(long, default_value = "skiff.local")]
    pub dns_zone: String,
    /// Masquerade group traffic out of this interface (unset: groups reach nothing outside).
    #[arg(long)]
    pub egress_interface: Option<String>,
    /// Let groups open connections to the host's own addresses (API, registry, bridge
    /// gateways); off by default.
    #[arg(long)]
    pub allow_host_access: bool,
    /// Serve plain HTTP instead of TLS (only accepted for a loopback --listen address).
    #[arg(long)]
    pub insecure_http: bool,
    /// PEM certificate chain to serve (default: one issued by the local CA in <data-dir>/tls).
    #[arg(long, requires = "tls_key", conflicts_with = "insecure_http")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS name or IP address for the local CA's server certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Requests per second a token may make unless the token sets its own limit.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
    /// Longest time a request may take before the server answers 408.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,
    /// How often the resource sampler reads the groups' CPU, memory and network counters.
    #[arg(long, env = "SKIFF_METRICS_INTERVAL_MS", default_value_t = 10_000)]
    pub metrics_interval_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SupervisorArgs {
    /// The group's state directory.
    #[arg(long)]
    pub group_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create (or update) a resource group.
    Create {
        #[arg(short = 'n', long = "name", visible_alias = "resource-group", short_alias = 'g')]
        name: String,
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Show a resource group.
    Show {
        #[arg(short = 'n', long = "name", visible_alias = "resource-group", short_alias = 'g')]
        name: String,
    },
    /// List resource groups.
    List,
    /// Delete a resource group.
    Delete {
        #[arg(short = 'n', long = "name", visible_alias = "resource-group", short_alias = 'g')]
        name: String,
        /// Do not prompt for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OsType {
    #[default]
    #[value(name = "Linux", alias = "linux")]
    Linux,
    #[value(name = "Windows", alias = "windows")]
    Windows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RestartPolicy {
    #[default]
    #[value(name = "Always", alias = "always")]
    Always,
    #[value(name = "OnFailure", alias = "onfailure")]
    OnFailure,
    #[value(name = "Never", alias = "never")]
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Protocol {
    #[default]
    #[value(name = "TCP", alias = "tcp")]
    Tcp,
    #[value(name = "UDP", alias = "udp")]
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpAddressType {
    #[value(name = "Public", alias = "public")]
    Public,
    #[value(name = "Private", alias = "private")]
    Private,
}

/// `skiff container create` arguments (the subset of `az container create` Skiff supports).
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// Container group name (required unless --file names it).
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Container image (required unless --file).
    #[arg(long, required_unless_present = "file")]
    pub image: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub cpu: f64,
    /// Memory in GB.
    #[arg(long, default_value_t = 1.5)]
    pub memory: f64,
    #[arg(long, value_enum, default_value = "Linux")]
    pub os_type: OsType,
    #[arg(long, value_enum, default_value = "Always")]
    pub restart_policy: RestartPolicy,
    /// Command line to run (split like a POSIX shell), e.g. "sh -c 'echo hi'".
    #[arg(long, allow_hyphen_values = true)]
    pub command_line: Option<String>,
    /// Environment variables NAME=VALUE (space separated).
    #[arg(short = 'e', long = "environment-variables", num_args = 1.., value_name = "NAME=VALUE")]
    pub environment_variables: Vec<String>,
    /// Secure environment variables NAME=VALUE (never returned by the server).
    #[arg(long = "secure-environment-variables", num_args = 1.., value_name = "NAME=VALUE")]
    pub secure_environment_variables: Vec<String>,
    /// Ports to open (only used with --ip-address/--dns-name-label, as in az). Default 80.
    #[arg(long, num_args = 1.., value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    #[arg(long, value_enum, default_value = "TCP")]
    pub protocol: Protocol,
    #[arg(long, value_enum)]
    pub ip_address: Option<IpAddressType>,
    /// DNS name label (implies --ip-address Public).
    #[arg(long)]
    pub dns_name_label: Option<String>,
    #[arg(long)]
    pub registry_login_server: Option<String>,
    #[arg(long)]
    pub registry_username: Option<String>,
    #[arg(long)]
    pub registry_password: Option<String>,
    /// Location (default: the resource group's).
    #[arg(short = 'l', long)]
    pub location: Option<String>,
    /// YAML (or JSON) deployment file; sent verbatim as the request body.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// Azure File volume (a Skiff-managed share, `skiff share create`): share name.
    #[arg(long)]
    pub azure_file_volume_share_name: Option<String>,
    #[arg(long)]
    pub azure_file_volume_account_name: Option<String>,
    #[arg(long)]
    pub azure_file_volume_account_key: Option<String>,
    #[arg(long)]
    pub azure_file_volume_mount_path: Option<String>,
    /// Git repository volume: URL to clone before the container starts.
    #[arg(long)]
    pub gitrepo_url: Option<String>,
    /// Directory in the volume to clone into (default ".").
    #[arg(long)]
    pub gitrepo_dir: Option<String>,
    #[arg(long)]
    pub gitrepo_revision: Option<String>,
    #[arg(long)]
    pub gitrepo_mount_path: Option<String>,
    /// Secret volume files NAME=VALUE (space separated; stored as files, never returned).
    #[arg(long, num_args = 1.., value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    #[arg(long)]
    pub secrets_mount_path: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GroupRef {
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    #[arg(short = 'n', long)]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create (or update) a container group.
    Create(Box<CreateArgs>),
    /// Show a container group.
    Show(GroupRef),
    /// List container groups (of a resource group or the subscription).
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
    },
    /// Print a container's logs.
    Logs {
        #[command(flatten)]
        group: GroupRef,
        /// Container (default: the first container of the group).
        #[arg(long)]
        container_name: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
        /// Prefix lines with timestamps.
        #[arg(long)]
        timestamps: bool,
        /// Keep printing new output until the container/group terminates.
        #[arg(long)]
        follow: bool,
    },
    /// Start a stopped container group.
    Start {
        #[command(flatten)]
        group: GroupRef,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a container group.
    Stop {
        #[command(flatten)]
        group: GroupRef,
    },
    /// Restart all containers of a group.
    Restart {
        #[command(flatten)]
        group: GroupRef,
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a container group.
    Delete {
        #[command(flatten)]
        group: GroupRef,
        /// Do not prompt for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Export a container group to a YAML deployment file.
    Export {
        #[command(flatten)]
        group: GroupRef,
        /// Output file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Run a command in a running container: an interactive terminal when stdin is one,
    /// otherwise stdin is piped to the command. Exits with the command's exit code.
    Exec {
        #[command(flatten)]
        group: GroupRef,
        /// Container (required if the group has more than one).
        #[arg(long)]
        container_name: Option<String>,
        /// The command; unlike az, it may carry arguments (split like a shell would).
        #[arg(long)]
        exec_command: String,
    },
    /// Stream a running container's output until it ends.
    Attach {
        #[command(flatten)]
        group: GroupRef,
        /// Container (required if the group has more than one).
        #[arg(long)]
        container_name: Option<String>,
        /// Do not send this terminal's input to the container (containers created with
        /// `stdin: true` read it; others ignore it).
        #[arg(long)]
        no_stdin: bool,
    },
    /// Resource metrics of a group, shaped like Azure Monitor's (Skiff extension).
    Metrics(metrics::MetricsArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// API create → Running latency of a cached image, against `podman run`.
    Create(BenchArgs),
    /// Sequential creates of a group with a public IP and a port: create→Running and
    /// create→first byte, against `podman run -d -p`.
    ColdStart(ScenarioArgs),
    /// N groups created at once: time until all are Running, against N concurrent `podman run -d`.
    Burst(ScenarioArgs),
    /// N idle groups: daemon RSS and per-group supervisor memory, against conmon per container.
    Density(ScenarioArgs),
    /// GET and list latency/throughput while N groups exist.
    Api(ScenarioArgs),
    /// After a daemon restart: time until the API answers and the groups of `density --keep` are Running.
    WaitAll(ScenarioArgs),
    /// One sample of the pull scenario: a group of `--image` on a server whose image cache is
    /// empty (bench/run.sh restarts it so), then one of `--second-image` (which shares layers
    /// with the first); prints the pull+unpack time and bytes of each as one JSON line.
    Pull(PullArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// An image sharing layers with `--image`, pulled after it.
    #[arg(long)]
    pub second_image: Option<String>,
}

/// Arguments of the benchmark suite's scenarios (bench/run.sh).
#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    #[arg(long, default_value = "127.0.0.1:5000/busybox-httpd:latest")]
    pub image: String,
    /// Number of groups (sequential creates for cold-start, concurrent for burst).
    #[arg(short = 'n', long = "count", default_value_t = 50)]
    pub count: usize,
    /// Peer to compare with (`podman`, or `none`).
    #[arg(long, default_value = "podman")]
    pub peer: String,
    /// Name prefix of the peer's containers (removed afterwards).
    #[arg(long, default_value = "skiff-bench-peer")]
    pub peer_prefix: String,
    #[arg(short = 'g', long = "resource-group", default_value = "skiff-bench")]
    pub resource_group: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Give up waiting for one group after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// PID of the skiff server (density).
    #[arg(long)]
    pub daemon_pid: Option<u32>,
    /// The server's data dir, to recognise its supervisors (density).
    #[arg(long = "bench-data-dir", env = "SKIFF_DATA_DIR", default_value = "/var/lib/skiff")]
    pub data_dir: String,
    /// Leave the groups in place (density, for a following restart measurement).
    #[arg(long)]
    pub keep: bool,
    /// Seconds each api measurement runs.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Concurrent clients of the api scenario.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Wall-clock time (ns since the epoch) the daemon was restarted (wait-all).
    #[arg(long)]
    pub since_unix_ns: Option<u128>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "127.0.0.1:5000/busybox:latest")]
    pub image: String,
    /// Number of sequential creates.
    #[arg(short = 'n', long = "count", default_value_t = 20)]
    pub count: usize,
    /// Peer to compare with (`podman`, or `none`).
    #[arg(long, default_value = "podman")]
    pub peer: String,
    /// Resource group used for the benchmark groups.
    #[arg(short = 'g', long = "resource-group", default_value = "skiff-bench")]
    pub resource_group: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Give up waiting for Running after this many seconds (per create).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Give each benchmark group a public IP forwarding one port (measures network setup).
    #[arg(long)]
    pub public_ip: bool,
}

/// Run a client subcommand with a fresh current-thread tokio runtime; prints errors as
/// `error: ...` on stderr and returns exit code 1 on failure. Must not be called from inside a
/// tokio runtime (use [`run_async`] there). `Server`/`Supervisor` are not handled here.
pub fn run(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run_async(cli))
}

/// [`run`] for callers that already are in a tokio runtime. Output goes to stdout.
pub async fn run_async(cli: Cli) -> ExitCode {
    let mut stdout = std::io::stdout();
    let res = execute(cli, &mut stdout).await;
    let _ = stdout.flush();
    report(res)
}

/// Turn a result into an exit code, printing the error on stderr.
pub fn report(res: Result<(), CliError>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Silent) => ExitCode::FAILURE,
        Err(CliError::ExitStatus(code)) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run a client subcommand writing its (stdout) output to `out`. Diagnostics and progress go
/// to stderr. This is what the tests drive.
pub async fn execute(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    commands::dispatch(cli, out).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_args_defaults_and_globals() {
        let cli = Cli::try_parse_from(["skiff", "server", "--insecure-registry", "127.0.0.1:5000", "--insecure-registry", "r:1"]).unwrap();
        let Command::Server(a) = cli.command else { panic!() };
        assert_eq!(a.data_dir, PathBuf::from("/var/lib/skiff"));
        assert_eq!(a.listen, "127.0.0.1:8080");
        assert_eq!((a.location.as_str(), a.runtime.as_str()), ("westus", "crun"));
        assert_eq!(a.insecure_registry, vec!["127.0.0.1:5000", "r:1"]);

        let cli = Cli::try_parse_from(["skiff", "supervisor", "--group-dir", "/x"]).unwrap();
        assert!(matches!(cli.command, Command::Supervisor(SupervisorArgs { ref group_dir }) if group_dir == &PathBuf::from("/x")));

        // Global options after the subcommand, az style.
        let cli = Cli::try_parse_from(["skiff", "container", "list", "-g", "rg", "-o", "json", "--server", "h:1", "--debug"]).unwrap();
        assert_eq!(cli.output, Some(OutputFormat::Json));
        assert_eq!(cli.server.as_deref(), Some("h:1"));
        assert!(cli.debug);

        // az's `group` spelling: -n or -g.
        let cli = Cli::try_parse_from(["skiff", "group", "delete", "-g", "rg", "--yes"]).unwrap();
        assert!(matches!(cli.command, Command::Group(GroupCommand::Delete { ref name, yes: true, .. }) if name == "rg"));

        // create needs --image unless --file.
        assert!(Cli::try_parse_from(["skiff", "container", "create", "-g", "rg", "-n", "x"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "container", "create", "-g", "rg", "-f", "x.yaml"]).is_ok());
        // Env lists stop at the next flag.
        let cli = Cli::try_parse_from(["skiff", "container", "create", "-g", "rg", "-n", "x", "-e", "A=1", "B=2", "--image", "i"]).unwrap();
        let Command::Container(ContainerCommand::Create(a)) = cli.command else { panic!() };
        assert_eq!(a.environment_variables, vec!["A=1", "B=2"]);
        assert_eq!(a.image.as_deref(), Some("i"));
    }
}
