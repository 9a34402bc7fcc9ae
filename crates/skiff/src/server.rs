//! `skiff server`: the store, the node agent and the ARM API in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skiff_agent::{Agent, AgentConfig};
use skiff_api::{ApiConfig, Node};
use skiff_cli::ServerArgs;
use skiff_model::records::GroupRecord;
use skiff_model::ArmError;
use skiff_store::{SqliteStore, Store};

/// Host-local reads the API needs, served by this node's agent.
struct AgentNode(Agent);

#[async_trait::async_trait]
impl Node for AgentNode {
    async fn logs(&self, group: &GroupRecord, container: &str, tail: Option<usize>, timestamps: bool) -> Result<String, ArmError> {
        let agent = self.0.clone();
        let group = group.clone();
        let container = container.to_string();
        tokio::task::spawn_blocking(move || agent.logs(&group, &container, tail, timestamps))
            .await
            .map_err(|e| ArmError::internal(format!("reading logs failed: {e}")))?
            .map_err(|e| ArmError::internal(format!("reading logs failed: {e}")))
    }

    async fn cached_images(&self) -> Vec<String> {
        self.0.cached_images()
    }

    async fn open_session(&self, group: &GroupRecord, container: &str, kind: skiff_api::streams::SessionKind) -> Result<skiff_api::streams::SessionIo, ArmError> {
        crate::streams::open(&self.0, group, container, kind).await
    }

    async fn follow_logs(&self, group: &GroupRecord, container: &str, tail: Option<usize>, timestamps: bool) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, ArmError> {
        Ok(self.0.follow_logs(group, container, tail, timestamps))
    }

    async fn remove_share_data(&self, account: &str, share: &str) -> Result<(), ArmError> {
        let dir = skiff_agent::volumes::share_dir(self.0.data_dir(), account, share);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ArmError::internal(format!("removing the share data failed: {e}"))),
        }
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    skiff_model::validate::check_sandbox(&args.sandbox).map_err(|e| anyhow::anyhow!("--sandbox {}: {}", args.sandbox, e.message))?;
    // Flags are checked before anything is created on the host.
    let addr: SocketAddr = args.listen.parse().with_context(|| format!("invalid --listen address '{}'", args.listen))?;
    if args.insecure_http && !addr.ip().is_loopback() {
        anyhow::bail!("--insecure-http is only accepted for a loopback --listen address (got {addr}); serve TLS elsewhere");
    }
    let data_dir = args.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("resolving {}", data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data_dir.join("skiff.db")).context("opening the store")?);

    let secrets = Arc::new(skiff_secrets::SecretKey::load_or_create(&data_dir.join("secret.key")).context("loading the secret key")?);

    let exe = std::env::current_exe().context("finding the skiff executable")?;
    let mut cfg = AgentConfig::with_defaults(data_dir.clone(), exe);
    cfg.runtime.binary = which(&args.runtime).with_context(|| format!("finding the OCI runtime '{}'", args.runtime))?;
    if let Err(e) = skiff_runtime::sealed::install(&cfg.runtime.binary) {
        tracing::warn!(runtime = %cfg.runtime.binary.display(), error = %e, "no sealed copy of the OCI runtime: it copies itself on every call");
    }
    cfg.insecure_registries = args.insecure_registry.clone();
    cfg.stop_grace = Duration::from_millis(args.stop_grace_ms);
    cfg.cgroup_parent = args.cgroup_parent.clone();
    cfg.netns_dir = args.run_dir.clone().join("netns");
    cfg.runtime.root = args.run_dir.clone().join("crun");
    cfg.backoff_initial_ms = args.restart_backoff_ms;
    cfg.secrets = Some(Arc::clone(&secrets));
    cfg.pids_max = Some(args.group_pids_max);
    cfg.seccomp = args.seccomp;
    if !args.seccomp {
        tracing::warn!("--seccomp false: containers run without a seccomp profile");
    }
    cfg.writable_layer_bytes = args.writable_layer_mb.max(1) << 20;
    cfg.empty_dir_bytes = args.empty_dir_mb.max(1) << 20;
    if !args.userns {
        cfg.userns = None;
    }
    cfg.meter.flush = Duration::from_millis(args.usage_flush_ms.max(10));
    cfg.meter.usage_retention = Duration::from_secs_f64(args.usage_retention_days.max(0.0) * 86_400.0);
    cfg.meter.event_retention = Duration::from_secs_f64(args.event_retention_days.max(0.0) * 86_400.0);
    if args.network {
        cfg.network = Some(net_config(&args)?);
    }
    let metrics_interval = Duration::from_millis(args.metrics_interval_ms.max(100));
    let telemetry = Arc::new(skiff_telemetry::Telemetry::new(metrics_interval, Duration::from_secs(3600)));
    cfg.metrics_interval = metrics_interval;
    cfg.telemetry = Arc::clone(&telemetry);
    let agent = Agent::start(Arc::clone(&store), cfg).await.context("starting the agent")?;

    crate::admin_token::ensure(&*store, &data_dir).await?;
    let auth = skiff_api::auth::AuthConfig { default_rate: args.rate_limit };
    let api_cfg = ApiConfig {
        location: args.location.clone(),
        page_size: args.page_size,
        quota_groups: args.quota_container_groups,
        quota_cores: args.quota_cores,
        quota_memory_gb: args.quota_memory_gb,
        auth: Some(auth),
        tls: !args.insecure_http,
        secrets: Some(secrets),
        telemetry,
        network_reserved: vec![args.private_cidr.clone()],
        dns_zone: args.network.then(|| args.dns_zone.clone()),
        ..ApiConfig::default()
    };
    let app = skiff_api::router(Arc::clone(&store), Arc::new(AgentNode(agent)), api_cfg)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(args.request_timeout_secs)));
    if args.insecure_http {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, data_dir = %data_dir.display(), "skiff server ready (plain HTTP on loopback)");
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("serving the API")?;
    } else {
        let files = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => crate::tls::TlsFiles { cert: cert.clone(), key: key.clone(), ca: None },
            _ => {
                let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
                let names = crate::tls::server_names(addr.ip(), hostname.as_deref(), &args.tls_san);
                crate::tls::ensure_local(&data_dir.join("tls"), &names).context("preparing the local CA and server certificate")?
            }
        };
        // One crypto library for rustls (aws-lc-rs); ignore "already installed".
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
            .await
            .with_context(|| format!("loading the TLS certificate {} and key {}", files.cert.display(), files.key.display()))?;
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            h.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        tracing::info!(%addr, data_dir = %data_dir.display(), ca = ?files.ca, "skiff server ready (HTTPS)");
        axum_server::bind_rustls(addr, tls).handle(handle).serve(app.into_make_service()).await.with_context(|| format!("serving the API on {addr}"))?;
    }
    tracing::info!("skiff server stopped; container groups keep running under their supervisors");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).with_context(|| format!("'{name}' is not on PATH (install it, e.g. apt-get install {name})"))
}

fn net_config(args: &ServerArgs) -> anyhow::Result<skiff_net::NetConfig> {
    Ok(skiff_net::NetConfig {
        private_cidr: args.private_cidr.parse().context("--private-cidr")?,
        public_pool: args.public_pool.parse().context("--public-pool")?,
        public_interface: args.public_interface.clone(),
        bridge: args.bridge.clone(),
        dns_listen: if args.dns_listen.is_empty() { None } else { Some(args.dns_listen.parse().with_context(|| format!("invalid --dns-listen '{}'", args.dns_listen))?) },
        dns_zone: args.dns_zone.clone(),
        egress_interface: args.egress_interface.clone(),
        host_access: args.allow_host_access,
    })
}
