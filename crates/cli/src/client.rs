//! HTTP client of Skiff's ARM API: URLs and api-versions, CloudError decoding, long-running
//! operation polling (the ARM algorithm of API.md, but polling every [`POLL_INTERVAL`] instead
//! of `Retry-After`: the CLI is ours) and `nextLink` paging.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use skiff_model::CloudError;

use crate::config::Settings;
use crate::error::CliError;

/// api-version of `Microsoft.Resources/resourceGroups`.
pub const RG_API_VERSION: &str = "2021-04-01";
/// api-version of `Microsoft.ContainerInstance` calls.
pub const ACI_API_VERSION: &str = skiff_model::DEFAULT_API_VERSION;
pub const PROVIDER: &str = skiff_model::arm::PROVIDER;
/// Interval between polls of a long-running operation.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    pub subscription: String,
    pub debug: bool,
    pub poll_interval: Duration,
}

/// A successful (status < 400) response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; an empty body is `null`.
    pub fn json(&self) -> Result<Value, CliError> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| CliError::Http(format!("the server sent an invalid JSON body (HTTP {}): {e}", self.status)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
    }
}

/// How a long-running operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LroOutcome {
    Succeeded,
    /// Failed or Canceled, with the operation's error when it carried one.
    Failed { status: String, code: Option<String>, message: Option<String> },
}

impl LroOutcome {
    pub fn into_error(self, what: &str) -> CliError {
        match self {
            LroOutcome::Succeeded => CliError::Silent,
            LroOutcome::Failed { status, code, message } => CliError::OperationFailed {
                code: code.unwrap_or_else(|| format!("Operation{status}")),
                message: message.unwrap_or_else(|| format!("{what} ended with status {status}")),
            },
        }
    }
}

/// Lower-cased terminal status, if `s` is terminal.
pub fn terminal_status(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "succeeded" => Some("Succeeded"),
        "failed" => Some("Failed"),
        "canceled" | "cancelled" => Some("Canceled"),
        _ => None,
    }
}

/// Decode an error response into a one-line [`CliError::Arm`].
pub fn decode_error(status: u16, body: &[u8]) -> CliError {
    if let Ok(ce) = serde_json::from_slice::<CloudError>(body) {
        return CliError::Arm { status, code: ce.error.code, message: ce.error.message };
    }
    // Some servers send the error object without the envelope.
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let (Some(code), Some(message)) = (v.get("code").and_then(Value::as_str), v.get("message").and_then(Value::as_str)) {
            return CliError::Arm { status, code: code.to_string(), message: message.to_string() };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("error");
    let message = if text.is_empty() { reason.to_string() } else { text.chars().take(500).collect() };
    CliError::Arm { status, code: format!("HTTP{status}"), message }
}

/// Append `api-version` to a URL unless it already has one.
pub fn with_api_version(url: &str, api_version: &str) -> String {
    if url.contains("api-version=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&api-version={api_version}")
    } else {
        format!("{url}?api-version={api_version}")
    }
}

impl Client {
    pub fn new(settings: &Settings) -> Result<Self, CliError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("skiff-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &settings.token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| CliError::usage("the token contains characters not allowed in a header"))?;
            v.set_sensitive(true);
            builder = builder.default_headers(HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, v)]));
        }
        if let Some(ca) = &settings.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| CliError::usage(format!("cannot read the CA certificate {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| CliError::usage(format!("invalid CA certificate {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| CliError::Http(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: settings.server.trim_end_matches('/').to_string(),
            subscription: settings.subscription.clone(),
            debug: settings.debug,
            poll_interval: POLL_INTERVAL,
        })
    }

    /// An absolute URL for a path (starting with `/`) or an absolute URL returned by the server.
    pub fn absolute(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    pub fn rg_url(&self, rg: &str) -> String {
        format!("{}/subscriptions/{}/resourcegroups/{rg}?api-version={RG_API_VERSION}", self.base, self.subscription)
    }

    pub fn rg_list_url(&self) -> String {
        format!("{}/subscriptions/{}/resourcegroups?api-version={RG_API_VERSION}", self.base, self.subscription)
    }

    /// `…/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}` (no query).
    pub fn group_path(&self, rg: &str, name: &str) -> String {
        format!("{}/subscriptions/{}/resourceGroups/{rg}/providers/{PROVIDER}/containerGroups/{name}", self.base, self.subscription)
    }

    pub fn group_url(&self, rg: &str, name: &str) -> String {
        format!("{}?api-version={ACI_API_VERSION}", self.group_path(rg, name))
    }

    /// The URL az's generic resource client uses for `create --file` / `export`: lowercase
    /// `resourcegroups` and the double slash before `containerGroups` (the server normalises).
    pub fn generic_group_url(&self, rg: &str, name: &str, api_version: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourcegroups/{rg}/providers/{PROVIDER}//containerGroups/{name}?api-version={api_version}",
            self.base, self.subscription
        )
    }

    /// `…/{name}/{action}` e.g. `start`, `containers/web/logs`.
    pub fn group_action_url(&self, rg: &str, name: &str, action: &str) -> String {
        format!("{}/{action}?api-version={ACI_API_VERSION}", self.group_path(rg, name))
    }

    pub fn list_url(&self, rg: Option<&str>) -> String {
        match rg {
            Some(rg) => format!(
                "{}/subscriptions/{}/resourceGroups/{rg}/providers/{PROVIDER}/containerGroups?api-version={ACI_API_VERSION}",
                self.base, self.subscription
            ),
            None => format!(
                "{}/subscriptions/{}/providers/{PROVIDER}/containerGroups?api-version={ACI_API_VERSION}",
                self.base, self.subscription
            ),
        }
    }

    /// Send a request; statuses >= 400 become [`CliError::Arm`].
    /// Open a long-lived streaming GET (server-sent events, log follow) with this client's
    /// credentials and CA; the response body is read as it arrives, with no overall timeout.
    pub async fn open_stream(&self, url: &str, accept: &str) -> Result<reqwest::Response, CliError> {
        let url = self.absolute(url);
        let resp = self
            .http
            .get(&url)
            .header("Accept", accept)
            .timeout(Duration::from_secs(10 * 365 * 86_400))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(decode_error(status, &body));
        }
        Ok(resp)
    }

    pub async fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Response, CliError> {
        let url = self.absolute(url);
        let mut req = self.http.request(method.clone(), &url).header("Accept", "application/json");
        match body {
            Some(b) => req = req.json(b),
            None if method == Method::POST => req = req.header("Content-Length", "0"),
            None => {}
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if self.debug {
                    eprintln!("DEBUG: {method} {url} -> {e}");
                }
                return Err(self.transport_error(e));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?.to_vec();
        if self.debug {
            eprintln!("DEBUG: {method} {url} -> {status}");
        }
        if status >= 400 {
            return Err(decode_error(status, &body));
        }
        Ok(Response { status, headers, body })
    }

    fn transport_error(&self, e: reqwest::Error) -> CliError {
        let chain = {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        };
        if chain.contains("certificate") || chain.contains("InvalidCertificate") || chain.contains("UnknownIssuer") {
            CliError::Http(format!(
                "TLS with {} failed ({chain}); trust the server's CA with --ca-cert or SKIFF_CA_CERT (a local server's is <data-dir>/tls/ca.pem)",
                self.base
            ))
        } else if e.is_connect() {
            CliError::Unreachable { url: self.base.clone() }
        } else if e.is_timeout() {
            CliError::Http(format!("request to the Skiff server at {} timed out", self.base))
        } else {
            CliError::Http(chain)
        }
    }

    pub async fn get_json(&self, url: &str) -> Result<Value, CliError> {
        self.send(Method::GET, url, None).await?.json()
    }

    /// GET a pageable list, following `nextLink` until it is absent or null.
    pub async fn list_all(&self, url: &str, api_version: &str) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut next = Some(url.to_string());
        let mut pages = 0usize;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(CliError::Http("too many pages (nextLink loop?)".into()));
            }
            let page = self.get_json(&url).await?;
            match page.get("value") {
                Some(Value::Array(v)) => items.extend(v.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => return Err(CliError::Http("list response: `value` is not an array".into())),
            }
            next = page
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| with_api_version(&self.absolute(s), api_version));
        }
        Ok(items)
    }

    /// Wait for the long-running operation started by `initial` (ARM's algorithm, first match
    /// wins: `Azure-AsyncOperation`, `Location`, then for PUT the resource's
    /// `provisioningState`). `on_poll` sees every operation body (for pull progress).
    pub async fn wait(
        &self,
        method: &Method,
        initial: &Response,
        resource_url: Option<&str>,
        on_poll: &mut (dyn FnMut(&Value) + Send),
    ) -> Result<LroOutcome, CliError> {
        if let Some(op_url) = initial.header("azure-asyncoperation") {
            let op_url = self.absolute(op_url);
            loop {
                let body = self.get_json(&op_url).await?;
                on_poll(&body);
                let status = body
                    .get("status")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CliError::Http("operation status response has no `status`".into()))?;
                if let Some(t) = terminal_status(status) {
                    if t == "Succeeded" {
                        return Ok(LroOutcome::Succeeded);
                    }
                    let err = body.get("error");
                    let field = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_string);
                    return Ok(LroOutcome::Failed { status: t.to_string(), code: field("code"), message: field("message") });
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        }
        if let Some(loc) = initial.header("location") {
            let loc = self.absolute(loc);
            loop {
                let r = self.send(Method::GET, &loc, None).await?;
                if r.status != 202 {
                    return Ok(LroOutcome::Succeeded);
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        }
        if (*method == Method::PUT || *method == Method::PATCH) && (initial.status == 200 || initial.status == 201) {
            let Some(resource_url) = resource_url else { return Ok(LroOutcome::Succeeded) };
            let mut state = provisioning_state(&initial.json()?)
                .unwrap_or(if initial.status == 201 { "InProgress" } else { "Succeeded" }.to_string());
            loop {
                if let Some(t) = terminal_status(&state) {
                    return Ok(if t == "Succeeded" {
                        LroOutcome::Succeeded
                    } else {
                        LroOutcome::Failed { status: t.to_string(), code: None, message: None }
                    });
                }
                tokio::time::sleep(self.poll_interval).await;
                state = provisioning_state(&self.get_json(resource_url).await?).unwrap_or_else(|| "Succeeded".to_string());
            }
        }
        Ok(LroOutcome::Succeeded)
    }
}

pub fn provisioning_state(v: &Value) -> Option<String> {
    v.pointer("/properties/provisioningState").and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cloud_errors_and_plain_bodies() {
        let e = decode_error(404, br#"{"error":{"code":"ResourceNotFound","message":"nope"}}"#);
        assert_eq!(e.to_string(), "ResourceNotFound: nope");
        assert!(e.is_not_found());
        let e = decode_error(400, br#"{"code":"BadRequest","message":"bad"}"#);
        assert_eq!(e.to_string(), "BadRequest: bad");
        let e = decode_error(502, b"upstream broke\n");
        assert_eq!(e.to_string(), "HTTP502: upstream broke");
        let e = decode_error(503, b"");
        assert_eq!(e.to_string(), "HTTP503: Service Unavailable");
    }

    #[test]
    fn api_version_is_added_once() {
        assert_eq!(with_api_version("http://h/x", "v1"), "http://h/x?api-version=v1");
        assert_eq!(with_api_version("http://h/x?skip=2", "v1"), "http://h/x?skip=2&api-version=v1");
        assert_eq!(with_api_version("http://h/x?api-version=v2&skip=2", "v1"), "http://h/x?api-version=v2&skip=2");
    }

    #[test]
    fn urls() {
        let s = Settings { server: "http://h:1".into(), subscription: "sub".into(), location: "westus".into(), debug: false, token: None, ca_cert: None };
        let c = Client::new(&s).unwrap();
        assert_eq!(c.rg_url("rg"), "http://h:1/subscriptions/sub/resourcegroups/rg?api-version=2021-04-01");
        assert_eq!(
            c.group_url("rg", "web"),
            "http://h:1/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/web?api-version=2023-05-01"
        );
        assert_eq!(
            c.generic_group_url("rg", "web", "2021-10-01"),
            "http://h:1/subscriptions/sub/resourcegroups/rg/providers/Microsoft.ContainerInstance//containerGroups/web?api-version=2021-10-01"
        );
        assert_eq!(
            c.group_action_url("rg", "web", "containers/c1/logs"),
            "http://h:1/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/web/containers/c1/logs?api-version=2023-05-01"
        );
        assert_eq!(c.absolute("/x"), "http://h:1/x");
        assert_eq!(c.absolute("https://o/x"), "https://o/x");
        assert!(terminal_status("succeeded").is_some() && terminal_status("InProgress").is_none());
    }
}
