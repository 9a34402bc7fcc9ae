//! The API's metrics: an axum middleware counting requests and timing them by route kind and
//! status, the Prometheus endpoint `GET /metrics`, and the Azure Monitor-shaped view of a
//! group's resource samples (`…/containerGroups/{g}/providers/Microsoft.Insights/metrics`).
//! Documented in docs/METERING.md.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use skiff_model::ArmError;
use skiff_telemetry::{azure, rates, Telemetry};

use crate::error::ApiResult;
use crate::lro::json;
use crate::route::{self, GroupRef};
use crate::{Api, Ctx};

/// Content type of the OpenMetrics text format, which Prometheus scrapes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of a request: its [`route::Route`] variant's name (e.g. `GetGroup`), `Metrics`
/// for `/metrics`, `Unrouted` for a path no route matches. Names come from the variant's
/// `Debug` form, so variants added later are labelled without touching this file.
pub fn route_kind(method: &axum::http::Method, path: &str, query: Option<&str>) -> String {
    if path == "/metrics" {
        return "Metrics".to_string();
    }
    match route::parse(method, path, query) {
        Ok(r) => {
            let dbg = format!("{:?}", r.route);
            dbg.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or("Unrouted").to_string()
        }
        Err(_) => "Unrouted".to_string(),
    }
}

/// Middleware: count and time every request.
pub async fn track(State(tel): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let kind = route_kind(req.method(), req.uri().path(), req.uri().query());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    tel.api_request(&kind, resp.status().as_u16(), t0.elapsed());
    resp
}

/// `GET /metrics`: every metric in the Prometheus (OpenMetrics) text format.
pub(crate) async fn prometheus(State(api): State<Arc<Api>>) -> Response {
    let mut resp = api.cfg.telemetry.encode().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    resp
}

/// `GET …/containerGroups/{g}/providers/Microsoft.Insights/metrics?metricnames=&interval=`.
pub(crate) async fn group_metrics(ctx: &Ctx, g: &GroupRef, metric_names: Option<String>, interval: Option<String>) -> ApiResult<Response> {
    let names = azure::metric_names(metric_names.as_deref()).map_err(|bad| {
        let known: Vec<&str> = azure::METRICS.iter().map(|m| m.0).collect();
        ArmError::bad_request("BadRequest", format!("Failed to find metric configuration for provider: Microsoft.ContainerInstance, resource Type: containerGroups, metric: {bad}, Valid metrics: {}", known.join(","))).with_target("metricnames")
    })?;
    let interval = interval.unwrap_or_else(|| "PT1M".to_string());
    let Some(secs) = rates::iso8601_seconds(&interval) else {
        return Err(ArmError::bad_request("BadRequest", format!("The value '{interval}' of 'interval' is invalid: give an ISO 8601 duration such as PT1M.")).with_target("interval").into());
    };
    let Some((rec, _)) = crate::groups::load(ctx, g).await? else { return Err(crate::groups::not_found(ctx, g).await) };
    let samples = ctx.api.cfg.telemetry.samples(&rec.uid);
    let region = rec.spec.location.clone().unwrap_or_else(|| ctx.api.cfg.location.clone());
    Ok(json(StatusCode::OK, &azure::view(&rec.resource_id(), &region, &samples, &names, secs, &interval)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn kinds() {
        let p = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g";
        assert_eq!(route_kind(&Method::GET, p, Some("api-version=2023-05-01")), "GetGroup");
        assert_eq!(route_kind(&Method::GET, &format!("{p}/containers/c/logs"), Some("api-version=2023-05-01")), "ContainerLogs");
        assert_eq!(route_kind(&Method::GET, "/providers/Microsoft.ContainerInstance/operations", Some("api-version=2023-05-01")), "ListProviderOperations");
        assert_eq!(route_kind(&Method::GET, "/nope", None), "Unrouted");
        assert_eq!(route_kind(&Method::GET, "/metrics", None), "Metrics");
    }
}
