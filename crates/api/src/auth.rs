//! Bearer-token authentication, tenant scoping and per-token rate limits.
//!
//! Tokens are random secrets (`skf_` + 64 hex digits) handed out once; the store keeps only
//! their SHA-256 (`tokens/<hex>`), so a copy of the database does not grant access. A token is
//! either an **admin** token (every subscription, plus the token API under `/skiff/tokens`) or
//! scoped to one subscription, optionally one resource group, optionally read-only.
//!
//! The [`layer`] authenticates every request (401 with an ARM body and `WWW-Authenticate`) and
//! rate-limits per token (429 with `Retry-After`); [`authorize`] — pure — then checks the parsed
//! [`Route`] against the token's scope. Outside its scope a token gets the same 404 a missing
//! resource gets (as ARM does), so it cannot learn what exists elsewhere; subscription-wide
//! lists are narrowed to the token's resource group.
//!
//! Websocket upgrades on paths outside the ARM namespace (exec/attach streams) carry no bearer
//! token: they authenticate with their own one-time password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skiff_model::ArmError;
use skiff_store::{Expect, Store};

use crate::error::error_response;
use crate::route::{GroupRef, Route};

/// Key prefix of token records in the store.
pub const TOKEN_PREFIX: &str = "tokens/";
/// Path prefix of the token administration API (admin tokens only).
pub const TOKENS_PATH: &str = "/skiff/tokens";

/// Settings of authentication.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Requests per second a token may make when its record sets no limit.
    pub default_rate: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { default_rate: 100 }
    }
}

/// A token as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Public identifier (12 hex digits), used to list and revoke.
    pub id: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub resource_group: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    /// Requests per second; `None`: the server's default.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub description: String,
    pub created: String,
}

/// What a new token may do (the body of `POST /skiff/tokens`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TokenSpec {
    pub admin: bool,
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
    pub read_only: bool,
    pub rate_limit: Option<u32>,
    pub description: String,
}

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token request: {0}")]
    Invalid(String),
    #[error("token store")]
    Store(#[from] skiff_store::StoreError),
    #[error("token record does not encode")]
    Encode(#[from] serde_json::Error),
}

/// Hex SHA-256 of a token secret: the store key of its record.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// Check a spec: non-admin tokens need a subscription; names must be plausible ARM names.
pub fn validate_spec(spec: &TokenSpec) -> Result<(), TokenError> {
    let bad = |s: &str| s.is_empty() || s.len() > 90 || s.chars().any(|c| c == '/' || c.is_control() || c.is_whitespace());
    if !spec.admin {
        match &spec.subscription {
            None => return Err(TokenError::Invalid("a token needs a subscription (or admin)".into())),
            Some(s) if bad(s) => return Err(TokenError::Invalid(format!("invalid subscription '{s}'"))),
            _ => {}
        }
    }
    if let Some(rg) = &spec.resource_group {
        if bad(rg) {
            return Err(TokenError::Invalid(format!("invalid resource group '{rg}'")));
        }
        if spec.subscription.is_none() {
            return Err(TokenError::Invalid("a resource group scope needs a subscription".into()));
        }
    }
    if spec.admin && (spec.subscription.is_some() || spec.resource_group.is_some() || spec.read_only) {
        return Err(TokenError::Invalid("an admin token cannot be scoped or read-only".into()));
    }
    if spec.rate_limit == Some(0) {
        return Err(TokenError::Invalid("rateLimit must be at least 1 request per second".into()));
    }
    Ok(())
}

/// Create a token: returns the secret (shown once) and the stored record.
pub async fn create_token(store: &dyn Store, spec: &TokenSpec) -> Result<(String, TokenRecord), TokenError> {
    validate_spec(spec)?;
    let secret = format!("skf_{}", random_hex(32));
    let rec = TokenRecord {
        id: random_hex(6),
        admin: spec.admin,
        subscription: spec.subscription.clone(),
        resource_group: spec.resource_group.clone(),
        read_only: spec.read_only,
        rate_limit: spec.rate_limit,
        description: spec.description.clone(),
        created: jiff::Timestamp::now().to_string(),
    };
    store.put(&format!("{TOKEN_PREFIX}{}", hash_token(&secret)), serde_json::to_vec(&rec)?, Expect::Absent).await?;
    Ok((secret, rec))
}

/// Make sure `secret` is a valid admin token (the server's admin token file survives a store
/// reset this way).
pub async fn ensure_admin(store: &dyn Store, secret: &str) -> Result<(), TokenError> {
    let key = format!("{TOKEN_PREFIX}{}", hash_token(secret));
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let rec = TokenRecord { id: random_hex(6), admin: true, subscription: None, resource_group: None, read_only: false, rate_limit: None, description: "admin".into(), created: jiff::Timestamp::now().to_string() };
    store.put(&key, serde_json::to_vec(&rec)?, Expect::Any).await?;
    Ok(())
}

/// A fresh admin token secret (the caller stores it with [`ensure_admin`]).
pub fn new_secret() -> String {
    format!("skf_{}", random_hex(32))
}

/// Every token record with its store key.
pub async fn list_tokens(store: &dyn Store) -> Result<Vec<(String, TokenRecord)>, TokenError> {
    let (kvs, _) = store.list(TOKEN_PREFIX, None, None).await?;
    Ok(kvs.into_iter().filter_map(|kv| serde_json::from_slice::<TokenRecord>(&kv.value).ok().map(|r| (kv.key, r))).collect())
}

/// Revoke the token with this id; `false` if there is none.
pub async fn revoke_token(store: &dyn Store, id: &str) -> Result<bool, TokenError> {
    for (key, rec) in list_tokens(store).await? {
        if rec.id.eq_ignore_ascii_case(id) {
            store.delete(&key, Expect::Any).await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The authenticated caller, put into the request's extensions by [`layer`].
#[derive(Debug, Clone, PartialEq)]
pub struct Principal(pub TokenRecord);

/// What [`authorize`] allows: the (possibly narrowed) route, and for resource-group lists of a
/// resource-group-scoped token the one resource group the answer may show.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorized {
    pub route: Route,
    pub only_resource_group: Option<String>,
}

fn hidden(path: &str) -> ArmError {
    ArmError::new(404, "NotFound", format!("The requested resource '{path}' was not found."))
}

/// What a caller gets for a subscription or resource group outside its scope: the answer ARM
/// gives when that subscription or resource group does not exist, so existence does not leak.
fn out_of_scope(scope_subscription: &str, subscription: &str, resource_group: Option<&str>) -> ArmError {
    match resource_group {
        Some(rg) if eq(scope_subscription, subscription) => ArmError::resource_group_not_found(rg),
        _ => ArmError::new(404, "SubscriptionNotFound", format!("The subscription '{subscription}' could not be found.")),
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Check `route` against the caller's scope. Pure.
pub fn authorize(who: &TokenRecord, method: &Method, path: &str, route: Route) -> Result<Authorized, ArmError> {
    if who.admin {
        return Ok(Authorized { route, only_resource_group: None });
    }
    let Some(sub) = who.subscription.as_deref() else { return Err(hidden(path)) };
    let rg = who.resource_group.as_deref();
    let in_sub = |s: &str| eq(s, sub);
    let in_rg = |s: &str, r: &str| in_sub(s) && rg.is_none_or(|rg| eq(rg, r));
    let group_ok = |g: &GroupRef| in_rg(&g.subscription, &g.resource_group);
    let mut only_resource_group = None;
    let route = match route {
        Route::ListProviderOperations => route,
        Route::ListResourceGroups { ref subscription, .. } => {
            if !in_sub(subscription) {
                return Err(out_of_scope(sub, subscription, None));
            }
            only_resource_group = rg.map(str::to_string);
            route
        }
        Route::PutResourceGroup { ref subscription, ref resource_group }
        | Route::GetResourceGroup { ref subscription, ref resource_group }
        | Route::HeadResourceGroup { ref subscription, ref resource_group }
        | Route::DeleteResourceGroup { ref subscription, ref resource_group }
        | Route::ListGroupsByResourceGroup { ref subscription, ref resource_group, .. } => {
            if !in_rg(subscription, resource_group) {
                return Err(out_of_scope(sub, subscription, Some(resource_group)));
            }
            route
        }
        Route::ListGroups { subscription, page } => {
            if !in_sub(&subscription) {
                return Err(out_of_scope(sub, &subscription, None));
            }
            // A resource-group token sees the subscription list as its group's list.
            match rg {
                Some(rg) => Route::ListGroupsByResourceGroup { subscription, resource_group: rg.to_string(), page },
                None => Route::ListGroups { subscription, page },
            }
        }
        Route::GetGroup(ref g)
        | Route::PutGroup(ref g)
        | Route::PatchGroup(ref g)
        | Route::DeleteGroup(ref g)
        | Route::StartGroup(ref g)
        | Route::StopGroup(ref g)
        | Route::RestartGroup(ref g)
        | Route::OutboundDependencies(ref g)
        | Route::ContainerLogs { group: ref g, .. }
        | Route::ContainerExec { group: ref g, .. }
        | Route::ContainerAttach { group: ref g, .. }
        | Route::GroupMetrics { group: ref g, .. }
        | Route::ContainerLogStream { group: ref g, .. } => {
            if !group_ok(g) {
                return Err(out_of_scope(sub, &g.subscription, Some(&g.resource_group)));
            }
            route
        }
        // Usage and events of a resource-group token are narrowed to its resource group; a
        // request naming another one sees nothing, as if it did not exist.
        Route::UsageRecords { subscription, from, to, group_by, resource_group } => {
            if !in_sub(&subscription) || resource_group.as_deref().is_some_and(|r| rg.is_some_and(|rg| !eq(rg, r))) {
                return Err(out_of_scope(sub, &subscription, resource_group.as_deref()));
            }
            Route::UsageRecords { subscription, from, to, group_by, resource_group: rg.map(str::to_string).or(resource_group) }
        }
        Route::Events { subscription, resource_group, follow, since } => {
            if !in_sub(&subscription) || resource_group.as_deref().is_some_and(|r| rg.is_some_and(|rg| !eq(rg, r))) {
                return Err(out_of_scope(sub, &subscription, resource_group.as_deref()));
            }
            Route::Events { subscription, resource_group: rg.map(str::to_string).or(resource_group), follow, since }
        }
        // Virtual networks are resource-group scoped, like container groups.
        Route::PutVirtualNetwork(ref v)
        | Route::GetVirtualNetwork(ref v)
        | Route::DeleteVirtualNetwork(ref v)
        | Route::PutSubnet { vnet: ref v, .. }
        | Route::GetSubnet { vnet: ref v, .. }
        | Route::DeleteSubnet { vnet: ref v, .. } => {
            if !in_rg(&v.subscription, &v.resource_group) {
                return Err(out_of_scope(sub, &v.subscription, Some(&v.resource_group)));
            }
            route
        }
        Route::GetOperation { ref subscription, .. }
        | Route::GetOperationResult { ref subscription, .. }
        | Route::ListUsages { ref subscription, .. }
        | Route::ListCapabilities { ref subscription, .. }
        | Route::ListCachedImages { ref subscription, .. } => {
            if !in_sub(subscription) {
                return Err(out_of_scope(sub, subscription, None));
            }
            route
        }
    };
    if who.read_only && !(method == Method::GET || method == Method::HEAD) {
        return Err(ArmError::new(
            403,
            "AuthorizationFailed",
            format!("The token '{}' is read-only and does not have authorization to perform '{method}' over '{path}'.", who.id),
        ));
    }
    Ok(Authorized { route, only_resource_group })
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(now: Instant, burst: f64) -> Bucket {
        Bucket { tokens: burst, last: now }
    }

    /// Take one token, or say how long until one is available.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Shared state of the authentication layer.
pub struct AuthState {
    pub store: Arc<dyn Store>,
    pub cfg: AuthConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl AuthState {
    pub fn new(store: Arc<dyn Store>, cfg: AuthConfig) -> Arc<AuthState> {
        Arc::new(AuthState { store, cfg, buckets: Mutex::new(HashMap::new()) })
    }

    fn limit(&self, rec: &TokenRecord) -> Result<(), Duration> {
        let rate = f64::from(rec.rate_limit.unwrap_or(self.cfg.default_rate).max(1));
        // A burst of two seconds' worth absorbs a client's polling bursts.
        let burst = (rate * 2.0).max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.entry(rec.id.clone()).or_insert_with(|| Bucket::new(now, burst)).take(now, rate, burst)
    }
}

/// 401 with an ARM body and a `WWW-Authenticate` challenge.
pub fn unauthorized(code: &str, message: &str) -> Response {
    let mut resp = error_response(&ArmError::new(401, code, message));
    let challenge = if code == "AuthenticationFailed" { "Bearer realm=\"skiff\"" } else { "Bearer realm=\"skiff\", error=\"invalid_token\"" };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

/// Whether a path is an exec/attach session socket (`/execstream/sessionId/{id}`).
fn is_session_socket(path: &str) -> bool {
    let prefix = crate::streams::WS_ROUTE.trim_end_matches("{id}");
    path.strip_prefix(prefix).is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Paths that only an admin token may read: they are host-wide and name every tenant's groups.
const ADMIN_PATHS: &[&str] = &["/metrics"];

/// Paths served without a token: the public contract.
pub const PUBLIC_PATHS: &[&str] = &["/openapi.json"];

/// The authentication middleware (see the module docs).
pub async fn layer(State(st): State<Arc<AuthState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if PUBLIC_PATHS.contains(&path.as_str()) && req.method() == Method::GET {
        return next.run(req).await;
    }
    // Exec and attach sessions authenticate with their one-time password inside the socket
    // (the ARM contract); nothing else gets past without a token.
    let is_ws = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_ws && is_session_socket(&path) {
        return next.run(req).await;
    }
    let Some(auth) = req.headers().get(header::AUTHORIZATION) else {
        return unauthorized("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.");
    };
    let secret = match auth.to_str().ok().and_then(|v| v.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")) {
        Some((_, t)) if !t.trim().is_empty() => t.trim().to_string(),
        _ => return unauthorized("InvalidAuthenticationToken", "The access token is invalid: the 'Authorization' header must be 'Bearer <token>'."),
    };
    let rec = match st.store.get(&format!("{TOKEN_PREFIX}{}", hash_token(&secret))).await {
        Ok(Some(kv)) => match serde_json::from_slice::<TokenRecord>(&kv.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "a token record does not decode");
                return unauthorized("InvalidAuthenticationToken", "The access token is invalid.");
            }
        },
        Ok(None) => return unauthorized("InvalidAuthenticationToken", "The access token is invalid or has been revoked."),
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    if let Err(wait) = st.limit(&rec) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = error_response(&ArmError::new(429, "TooManyRequests", format!("The token '{}' exceeded its request rate. Retry after {secs} seconds.", rec.id)));
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    if path.to_ascii_lowercase().starts_with(TOKENS_PATH) {
        return tokens_api(&st, &rec, req).await;
    }
    if ADMIN_PATHS.contains(&path.as_str()) && !rec.admin {
        return error_response(&ArmError::new(403, "AuthorizationFailed", format!("Only an admin token may read {path}: it covers every tenant on this host.")));
    }
    req.extensions_mut().insert(Principal(rec));
    next.run(req).await
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut resp = (status, v.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}

fn public(rec: &TokenRecord) -> serde_json::Value {
    serde_json::to_value(rec).unwrap_or_default()
}

/// `GET|POST /skiff/tokens`, `DELETE /skiff/tokens/{id}` (admin tokens only).
async fn tokens_api(st: &AuthState, who: &TokenRecord, req: Request) -> Response {
    if !who.admin {
        return error_response(&ArmError::new(403, "AuthorizationFailed", "Only an admin token may manage tokens."));
    }
    let (parts, body) = req.into_parts();
    let rest = parts.uri.path()[TOKENS_PATH.len()..].trim_matches('/').to_string();
    let store = &*st.store;
    let internal = |e: TokenError| {
        tracing::error!(error = %e, "token API");
        error_response(&ArmError::internal("An internal error occurred while processing the request."))
    };
    match (parts.method.clone(), rest.as_str()) {
        (Method::GET, "") => match list_tokens(store).await {
            Ok(v) => json(StatusCode::OK, &serde_json::json!({"value": v.iter().map(|(_, r)| public(r)).collect::<Vec<_>>()})),
            Err(e) => internal(e),
        },
        (Method::POST, "") => {
            let bytes = match axum::body::to_bytes(Body::new(body), 64 * 1024).await {
                Ok(b) => b,
                Err(e) => return error_response(&ArmError::invalid_content(format!("The request body could not be read: {e}"))),
            };
            let spec: TokenSpec = match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => return error_response(&ArmError::invalid_content(format!("Invalid token request: {e}"))),
            };
            match create_token(store, &spec).await {
                Ok((secret, rec)) => {
                    let mut v = public(&rec);
                    v["token"] = serde_json::Value::String(secret);
                    json(StatusCode::CREATED, &v)
                }
                Err(TokenError::Invalid(m)) => error_response(&ArmError::bad_request("InvalidRequestContent", m)),
                Err(e) => internal(e),
            }
        }
        (Method::DELETE, id) if !id.is_empty() && !id.contains('/') => {
            if id.eq_ignore_ascii_case(&who.id) {
                return error_response(&ArmError::bad_request("InvalidRequest", "A token cannot revoke itself."));
            }
            match revoke_token(store, id).await {
                Ok(true) => StatusCode::NO_CONTENT.into_response(),
                Ok(false) => error_response(&ArmError::new(404, "NotFound", format!("There is no token '{id}'."))),
                Err(e) => internal(e),
            }
        }
        _ => error_response(&ArmError::new(405, "MethodNotAllowed", format!("The HTTP method '{}' is not supported for '{}'.", parts.method, parts.uri.path()))),
    }
}

/// Keep only the items named `rg` in a list body (resource-group lists of a scoped token).
pub fn filter_list_body(body: &[u8], rg: &str) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items = v.get_mut("value")?.as_array_mut()?;
    items.retain(|i| i.get("name").and_then(|n| n.as_str()).is_some_and(|n| eq(n, rg)));
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Page;
    use proptest::prelude::*;

    fn tok(sub: Option<&str>, rg: Option<&str>, read_only: bool) -> TokenRecord {
        TokenRecord { id: "abc".into(), admin: false, subscription: sub.map(Into::into), resource_group: rg.map(Into::into), read_only, rate_limit: None, description: String::new(), created: String::new() }
    }

    fn g(sub: &str, rg: &str, name: &str) -> GroupRef {
        GroupRef { subscription: sub.into(), resource_group: rg.into(), name: name.into() }
    }

    #[test]
    fn subscription_scope_hides_other_subscriptions_as_404() {
        let t = tok(Some("s1"), None, false);
        assert!(authorize(&t, &Method::GET, "/", Route::GetGroup(g("S1", "rg", "x"))).is_ok());
        let e = authorize(&t, &Method::GET, "/p", Route::GetGroup(g("s2", "rg", "x"))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (404, "SubscriptionNotFound"));
        let rg_token = tok(Some("s1"), Some("rg1"), false);
        let e = authorize(&rg_token, &Method::GET, "/p", Route::GetGroup(g("s1", "rg2", "x"))).unwrap_err();
        assert_eq!(e, ArmError::resource_group_not_found("rg2"), "exactly what a missing resource group answers");
        assert!(authorize(&t, &Method::GET, "/", Route::ListGroups { subscription: "s2".into(), page: Page::default() }).is_err());
        assert!(authorize(&t, &Method::GET, "/", Route::ListUsages { subscription: "s2".into(), location: "westus".into() }).is_err());
        assert!(authorize(&t, &Method::GET, "/", Route::ListProviderOperations).is_ok());
    }

    #[test]
    fn usage_and_events_are_narrowed_to_the_token_scope() {
        let t = tok(Some("s1"), Some("rg1"), true);
        let usage = |rg: Option<&str>| Route::UsageRecords { subscription: "s1".into(), from: None, to: None, group_by: None, resource_group: rg.map(Into::into) };
        let a = authorize(&t, &Method::GET, "/p", usage(None)).unwrap();
        assert_eq!(a.route, usage(Some("rg1")));
        assert_eq!(authorize(&t, &Method::GET, "/p", usage(Some("RG1"))).unwrap().route, usage(Some("rg1")));
        assert_eq!(authorize(&t, &Method::GET, "/p", usage(Some("rg2"))).unwrap_err().status, 404);
        let events = |sub: &str, rg: Option<&str>| Route::Events { subscription: sub.into(), resource_group: rg.map(Into::into), follow: true, since: None };
        assert_eq!(authorize(&t, &Method::GET, "/p", events("s1", None)).unwrap().route, events("s1", Some("rg1")));
        assert_eq!(authorize(&t, &Method::GET, "/p", events("s2", None)).unwrap_err().status, 404);
        assert_eq!(authorize(&t, &Method::GET, "/p", events("s1", Some("other"))).unwrap_err().status, 404);
    }

    #[test]
    fn virtual_networks_are_resource_group_scoped() {
        let t = tok(Some("s1"), Some("rg1"), false);
        let v = |sub: &str, rg: &str| crate::route::VnetRef { subscription: sub.into(), resource_group: rg.into(), name: "v".into() };
        assert!(authorize(&t, &Method::PUT, "/", Route::PutVirtualNetwork(v("s1", "RG1"))).is_ok());
        assert!(authorize(&t, &Method::GET, "/", Route::GetSubnet { vnet: v("s1", "rg1"), subnet: "s".into() }).is_ok());
        assert_eq!(authorize(&t, &Method::GET, "/", Route::GetVirtualNetwork(v("s1", "rg2"))).unwrap_err().status, 404);
        assert_eq!(authorize(&t, &Method::DELETE, "/", Route::DeleteSubnet { vnet: v("s2", "rg1"), subnet: "s".into() }).unwrap_err().status, 404);
        let ro = tok(Some("s1"), None, true);
        assert_eq!(authorize(&ro, &Method::PUT, "/", Route::PutSubnet { vnet: v("s1", "rg9"), subnet: "s".into() }).unwrap_err().status, 403);
    }

    #[test]
    fn resource_group_scope_narrows_lists() {
        let t = tok(Some("s1"), Some("rg1"), false);
        let a = authorize(&t, &Method::GET, "/", Route::ListGroups { subscription: "s1".into(), page: Page::default() }).unwrap();
        assert_eq!(a.route, Route::ListGroupsByResourceGroup { subscription: "s1".into(), resource_group: "rg1".into(), page: Page::default() });
        let a = authorize(&t, &Method::GET, "/", Route::ListResourceGroups { subscription: "s1".into(), page: Page::default() }).unwrap();
        assert_eq!(a.only_resource_group.as_deref(), Some("rg1"));
        assert!(authorize(&t, &Method::POST, "/", Route::StartGroup(g("s1", "RG1", "x"))).is_ok());
        assert_eq!(authorize(&t, &Method::GET, "/", Route::ContainerLogs { group: g("s1", "rg2", "x"), container: "c".into(), tail: None, timestamps: false }).unwrap_err().status, 404);
        assert_eq!(authorize(&t, &Method::PUT, "/", Route::PutResourceGroup { subscription: "s1".into(), resource_group: "rg2".into() }).unwrap_err().status, 404);
    }

    #[test]
    fn read_only_allows_reads_only() {
        let t = tok(Some("s1"), None, true);
        assert!(authorize(&t, &Method::GET, "/", Route::GetGroup(g("s1", "rg", "x"))).is_ok());
        let e = authorize(&t, &Method::DELETE, "/", Route::DeleteGroup(g("s1", "rg", "x"))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (403, "AuthorizationFailed"));
        // Out of scope stays 404 even for writes: existence must not leak through 403s.
        assert_eq!(authorize(&t, &Method::DELETE, "/", Route::DeleteGroup(g("s2", "rg", "x"))).unwrap_err().status, 404);
    }

    #[test]
    fn specs_are_checked() {
        assert!(validate_spec(&TokenSpec { subscription: Some("s".into()), ..Default::default() }).is_ok());
        assert!(validate_spec(&TokenSpec::default()).is_err());
        assert!(validate_spec(&TokenSpec { resource_group: Some("rg".into()), ..Default::default() }).is_err());
        assert!(validate_spec(&TokenSpec { subscription: Some("a/b".into()), ..Default::default() }).is_err());
        assert!(validate_spec(&TokenSpec { admin: true, read_only: true, ..Default::default() }).is_err());
        assert!(validate_spec(&TokenSpec { subscription: Some("s".into()), rate_limit: Some(0), ..Default::default() }).is_err());
    }

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0, 2.0);
        assert!(b.take(t0, 1.0, 2.0).is_ok());
        assert!(b.take(t0, 1.0, 2.0).is_ok());
        let wait = b.take(t0, 1.0, 2.0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(1100), 1.0, 2.0).is_ok());
    }

    #[test]
    fn list_filter_keeps_the_scope() {
        let body = br#"{"value":[{"name":"RG1"},{"name":"rg2"}],"nextLink":null}"#;
        let out: serde_json::Value = serde_json::from_slice(&filter_list_body(body, "rg1").unwrap()).unwrap();
        assert_eq!(out["value"].as_array().unwrap().len(), 1);
    }

    proptest! {
        /// Whatever the path names, a scoped token is let through only within its scope.
        #[test]
        fn never_escapes_scope(sub in "[a-c]{1,2}", rg in "[a-c]{1,2}", name in "[a-z]{1,3}", scoped_rg in proptest::option::of("[a-c]{1,2}")) {
            let t = tok(Some("a"), scoped_rg.as_deref(), false);
            let ok = authorize(&t, &Method::GET, "/", Route::GetGroup(g(&sub, &rg, &name))).is_ok();
            let inside = sub.eq_ignore_ascii_case("a") && scoped_rg.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(&rg));
            prop_assert_eq!(ok, inside);
        }
    }
}
