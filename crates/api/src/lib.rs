//! Skiff's ARM front end: the `Microsoft.ContainerInstance` HTTP API (api-version 2023-05-01)
//! plus a minimal `Microsoft.Resources/resourceGroups`.
//!
//! Requests are parsed into one [`Route`] ([`route::parse`]), validated with `skiff-model` and
//! turned into writes of desired state and operation records in the [`Store`]. The agent does
//! the work and completes the operations; this crate never touches the host. Host-local reads
//! (logs, cached images) go through the [`Node`] trait, which the agent implements.
//!
//! One fallback handler serves every path, because ARM paths are case-insensitive and may
//! contain empty segments, which a pattern router cannot express.

pub mod auth;
mod error;
mod groups;
mod handlers;
mod lro;
mod metering;
pub mod openapi;
mod resource_groups;
mod shares;
pub mod route;
pub mod streams;
pub mod telemetry;
mod vnets;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use skiff_model::records::GroupRecord;
use skiff_model::validate::Capacity;
use skiff_model::ArmError;
use skiff_store::Store;

pub use error::{error_response, ApiError, ApiResult};
pub use route::{GroupRef, Page, Route, Routed};

/// Largest request body accepted (ARM's own limit is 4 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The api-version put on operation URLs the API hands out.
pub const OPERATION_API_VERSION: &str = skiff_model::DEFAULT_API_VERSION;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Location given to resource groups and container groups created without one (e.g. "westus").
    pub location: String,
    /// What one group may use on this host (validation and the capabilities API).
    pub capacity: Capacity,
    /// Default page size of list calls (`$top` overrides it).
    pub page_size: usize,
    /// Base of the absolute URLs handed out (`nextLink`, `Azure-AsyncOperation`, `Location`),
    /// e.g. "https://skiff.example:8443". `None`: derived from the `Host` header, with the scheme
    /// from `X-Forwarded-Proto` or else `http`. Set it when serving TLS directly.
    pub public_base_url: Option<String>,
    /// Container groups a subscription may have in a location (reported by `usages`).
    pub quota_groups: u64,
    /// Cores a subscription's groups may use in a location (reported by `usages`).
    pub quota_cores: u64,
    /// Seals the groups' write-only values before they are stored (`None`: stored as given).
    pub secrets: Option<Arc<skiff_secrets::SecretKey>>,
    /// Memory (GB) a subscription's groups may use in a location (reported by `usages`).
    pub quota_memory_gb: f64,
    /// Bearer-token authentication (see [`auth`]); `None` serves without (in-process tests only:
    /// `skiff server` always sets it).
    pub auth: Option<auth::AuthConfig>,
    /// Whether the listener is TLS: absolute URLs handed out then default to `https`.
    pub tls: bool,
    /// Metrics shared with the agent: served at `/metrics` and by the metrics view.
    pub telemetry: Arc<skiff_telemetry::Telemetry>,
    /// Address blocks virtual networks may not use (the host's default private CIDR).
    pub network_reserved: Vec<String>,
    /// The DNS zone of group FQDNs when the host serves group networking (`None`: no DNS
    /// names, so no label conflicts to refuse).
    pub dns_zone: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { location: "westus".to_string(), capacity: Capacity::default(), page_size: 100, public_base_url: None, quota_groups: 1000, quota_cores: 1000, secrets: None, quota_memory_gb: 4000.0, auth: None, tls: false, telemetry: Default::default(), network_reserved: Vec::new(), dns_zone: None }
    }
}

/// Host-local reads the API cannot answer from the store; implemented by the agent.
#[async_trait]
pub trait Node: Send + Sync + 'static {
    /// The logs of one container of `group` (last `tail` lines if given; each line prefixed with
    /// its RFC 3339 timestamp if `timestamps`).
    async fn logs(&self, group: &GroupRecord, container: &str, tail: Option<usize>, timestamps: bool) -> Result<String, ArmError>;
    /// Image references cached on this host.
    async fn cached_images(&self) -> Vec<String>;
    /// Open an exec or attach session on one container of `group` (see [`streams`]).
    async fn open_session(&self, group: &GroupRecord, container: &str, kind: streams::SessionKind) -> Result<streams::SessionIo, ArmError> {
        let _ = (group, container, kind);
        Err(ArmError::new(501, "NotImplemented", "Container exec and attach are not available on this host."))
    }
    /// Follow one container's log: chunks of rendered log lines until the container terminates.
    async fn follow_logs(&self, group: &GroupRecord, container: &str, tail: Option<usize>, timestamps: bool) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, ArmError> {
        let _ = (group, container, tail, timestamps);
        Err(ArmError::new(501, "NotImplemented", "Log streaming is not available on this host."))
    }
    /// Remove the data of a deleted file share.
    async fn remove_share_data(&self, account: &str, share: &str) -> Result<(), ArmError> {
        let _ = (account, share);
        Ok(())
    }
}

/// Shared state of the handlers.
pub(crate) struct Api {
    pub store: Arc<dyn Store>,
    pub node: Arc<dyn Node>,
    pub cfg: ApiConfig,
    /// Exec/attach sessions handed out and not yet connected.
    pub sessions: streams::Sessions,
}

impl Api {
    /// The copy of a validated document that goes into the store (secrets sealed).
    pub(crate) fn seal_spec(&self, spec: &skiff_model::ContainerGroup) -> Result<skiff_model::ContainerGroup, ArmError> {
        match &self.cfg.secrets {
            Some(k) => skiff_secrets::seal_group(k, spec).map_err(|e| ArmError::internal(format!("sealing the group's secrets failed: {e}"))),
            None => Ok(spec.clone()),
        }
    }

    /// A stored document with its secrets opened (to compare it with a new one).
    pub(crate) fn open_spec(&self, spec: &skiff_model::ContainerGroup) -> Result<skiff_model::ContainerGroup, ArmError> {
        match &self.cfg.secrets {
            Some(k) => skiff_secrets::open_group(k, spec).map_err(|e| ArmError::internal(format!("opening the group's secrets failed: {e}"))),
            None => Ok(spec.clone()),
        }
    }
}

/// Per-request context handed to the handlers.
pub(crate) struct Ctx {
    pub api: Arc<Api>,
    /// Absolute base URL, without trailing slash.
    pub base: String,
    pub api_version: String,
    pub body: axum::body::Bytes,
    /// Path and query of the request, for `nextLink`.
    pub path: String,
}

/// The ARM API as an axum router.
pub fn router(store: Arc<dyn Store>, node: Arc<dyn Node>, cfg: ApiConfig) -> Router {
    let auth_cfg = cfg.auth.clone();
    let tel = Arc::clone(&cfg.telemetry);
    let api = Arc::new(Api { store: Arc::clone(&store), node, cfg, sessions: Default::default() });
    let app = Router::new()
        .route(openapi::OPENAPI_PATH, axum::routing::get(|| async { axum::Json(openapi::document()) }))
        // Prometheus text, outside the ARM dispatch; it sits behind the bearer-token layer.
        .route("/metrics", axum::routing::get(telemetry::prometheus))
        .route(streams::WS_ROUTE, axum::routing::get(streams::websocket))
        .merge(shares::routes())
        .fallback(dispatch)
        .with_state(api)
        .layer(axum::middleware::map_response(arm_body_for_bare_errors))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // A bug in a handler answers 500 with an ARM body instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
    let app = match auth_cfg {
        Some(a) => app.layer(axum::middleware::from_fn_with_state(auth::AuthState::new(store, a), auth::layer)),
        None => app,
    };
    app.layer(axum::middleware::from_fn_with_state(tel, telemetry::track))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(&ArmError::internal("The server hit an internal error while handling the request."))
}

fn too_large() -> ArmError {
    ArmError::new(413, "RequestEntityTooLarge", format!("The request body is larger than the maximum of {MAX_BODY_BYTES} bytes."))
}

/// Errors produced by layers (e.g. the body limit's 413) carry no ARM body; give them one.
async fn arm_body_for_bare_errors(resp: Response) -> Response {
    let is_json = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error_response(&too_large());
    }
    let status = resp.status();
    let err = ArmError::new(status.as_u16(), status.canonical_reason().unwrap_or("Error").replace(' ', ""), status.canonical_reason().unwrap_or("error").to_string());
    error_response(&err)
}

fn base_url(cfg: &ApiConfig, headers: &HeaderMap) -> String {
    if let Some(b) = &cfg.public_base_url {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty() && !h.contains(['/', ' ', '\\'])).unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| s == "http" || s == "https")
        .unwrap_or_else(|| if cfg.tls { "https" } else { "http" }.to_string());
    format!("{scheme}://{host}")
}

async fn dispatch(State(api): State<Arc<Api>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = parts.headers.get("x-ms-client-request-id").cloned();
    let is_head = parts.method == Method::HEAD;
    let resp = match route::parse(&parts.method, parts.uri.path(), parts.uri.query()) {
        Err(e) => error_response(&e),
        Ok(Routed { route, api_version }) => {
            // Scope check of the authenticated token (see `auth`); resource-group lists of a
            // resource-group token are filtered below.
            let (route, only_rg) = match (parts.extensions.get::<auth::Principal>(), api.cfg.auth.is_some()) {
                (Some(p), _) => match auth::authorize(&p.0, &parts.method, parts.uri.path(), route) {
                    Ok(a) => (Ok(a.route), a.only_resource_group),
                    Err(e) => (Err(e), None),
                },
                (None, true) => (Err(ArmError::new(401, "AuthenticationFailed", "Authentication failed.")), None),
                (None, false) => (Ok(route), None),
            };
            let route = match route {
                Ok(r) => r,
                Err(e) => return finish(error_response(&e), is_head, &parts, request_id, client_request_id),
            };
            let body = if matches!(parts.method, Method::PUT | Method::PATCH | Method::POST) {
                match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
                    Ok(b) => Ok(b),
                    Err(e) => {
                        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                        let mut limit = false;
                        while let Some(s) = src {
                            limit |= s.is::<http_body_util::LengthLimitError>();
                            src = s.source();
                        }
                        if limit || e.to_string().contains("length limit") {
                            Err(too_large())
                        } else {
                            Err(ArmError::invalid_content(format!("The request body could not be read: {e}")))
                        }
                    }
                }
            } else {
                Ok(Default::default())
            };
            match body {
                Err(e) => error_response(&e),
                Ok(body) => {
                    let path = parts.uri.path().to_string();
                    let base = base_url(&api.cfg, &parts.headers);
                    let ctx = Ctx { api, base, api_version, body, path };
                    match handlers::handle(&ctx, route).await {
                        Ok(r) => match only_rg {
                            Some(rg) => narrow_list(r, &rg).await,
                            None => r,
                        },
                        Err(e) => e.into_response(),
                    }
                }
            }
        }
    };
    finish(resp, is_head, &parts, request_id, client_request_id)
}

/// Keep only the token's resource group in a resource-group list.
async fn narrow_list(resp: Response, rg: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let bytes = auth::filter_list_body(&bytes, rg).map(axum::body::Bytes::from).unwrap_or(bytes);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

fn finish(mut resp: Response, is_head: bool, parts: &axum::http::request::Parts, request_id: String, client_request_id: Option<HeaderValue>) -> Response {
    if is_head {
        *resp.body_mut() = Body::empty();
    }
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = resp.status().as_u16(), request_id, "arm request");
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-ms-request-id", v.clone());
        h.insert("x-ms-correlation-request-id", v);
    }
    if let Some(v) = client_request_id {
        h.insert("x-ms-client-request-id", v);
    }
    resp
}
