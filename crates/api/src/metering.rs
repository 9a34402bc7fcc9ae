//! Skiff's metering extensions: usage records (per-second billing data) and the lifecycle
//! event log, read from the records the agent keeps in the store. Documented in
//! docs/METERING.md.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json as j, Value};
use skiff_model::usage::{events_prefix_sub, report, usage_prefix_sub, EventRecord, GroupBy, Quantities, UsageRecord};
use skiff_model::ArmError;
use skiff_store::WatchEvent;

use crate::error::ApiResult;
use crate::lro::json;
use crate::Ctx;

fn parse_time(name: &str, v: &str) -> Result<i64, ArmError> {
    let v = v.trim();
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = v.parse::<jiff::civil::Date>() {
        if let Ok(t) = d.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(t.timestamp().as_millisecond());
        }
    }
    Err(ArmError::bad_request("InvalidParameter", format!("The value '{v}' of '{name}' is invalid: give an RFC 3339 time (e.g. 2024-01-31T12:00:00Z) or a date.")).with_target(name))
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()).unwrap_or_default()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn quantities(q: &Quantities) -> Value {
    j!({"seconds": round3(q.seconds), "vcpuSeconds": round3(q.vcpu_seconds), "memoryGBSeconds": round3(q.gb_seconds), "gpuSeconds": round3(q.gpu_seconds)})
}

/// `GET …/usageRecords`.
pub(crate) async fn usage_records(ctx: &Ctx, subscription: &str, from: Option<String>, to: Option<String>, group_by: Option<String>, resource_group: Option<String>) -> ApiResult<Response> {
    let from_ms = from.as_deref().map(|v| parse_time("from", v)).transpose()?.unwrap_or(0);
    let to_ms = to.as_deref().map(|v| parse_time("to", v)).transpose()?.unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
    if to_ms < from_ms {
        return Err(ArmError::bad_request("InvalidParameter", "'to' is before 'from'.".to_string()).with_target("to").into());
    }
    let gb = match group_by.as_deref() {
        None => GroupBy::ContainerGroup,
        Some(v) => GroupBy::parse(v).ok_or_else(|| ArmError::bad_request("InvalidParameter", format!("The value '{v}' of 'groupBy' is invalid: give resourceGroup or containerGroup.")).with_target("groupBy"))?,
    };
    let (kvs, _) = ctx.api.store.list(&usage_prefix_sub(subscription), None, None).await?;
    let records: Vec<UsageRecord> = kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    let r = report(&records, from_ms, to_ms, resource_group.as_deref(), gb);
    let value: Vec<Value> = r
        .records
        .iter()
        .map(|u| {
            let mut v = j!({
                "subscriptionId": u.subscription, "resourceGroup": u.resource_group, "containerGroup": u.container_group, "groupUid": u.group_uid,
                "start": rfc3339(u.start_ms), "end": rfc3339(u.end_ms), "open": u.open, "vcpu": u.vcpu, "memoryInGB": round3(u.memory_gb), "gpu": u.gpu,
            });
            if let (Value::Object(m), Value::Object(q)) = (&mut v, quantities(&u.quantities())) {
                m.extend(q);
            }
            v
        })
        .collect();
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|(rg, name, q)| {
            let mut v = j!({"resourceGroup": rg});
            if let Some(n) = name {
                v["containerGroup"] = n.clone().into();
            }
            if let (Value::Object(m), Value::Object(q)) = (&mut v, quantities(q)) {
                m.extend(q);
            }
            v
        })
        .collect();
    let group_by = match gb {
        GroupBy::ResourceGroup => "resourceGroup",
        GroupBy::ContainerGroup => "containerGroup",
    };
    Ok(json(StatusCode::OK, &j!({"from": rfc3339(from_ms), "to": rfc3339(to_ms), "groupBy": group_by, "value": value, "summary": rows, "total": quantities(&r.total)})))
}

fn matches(e: &EventRecord, rg: Option<&str>) -> bool {
    rg.is_none_or(|rg| e.resource_group.eq_ignore_ascii_case(rg))
}

/// `GET …/events`: the log as JSON, or with `follow=true` the log then live events as
/// server-sent events (`event: lifecycle`, data = one JSON event).
pub(crate) async fn events(ctx: &Ctx, subscription: &str, resource_group: Option<String>, follow: bool, since: Option<String>) -> ApiResult<Response> {
    let since_ms = since.as_deref().map(|v| parse_time("since", v)).transpose()?.unwrap_or(0);
    let prefix = events_prefix_sub(subscription);
    let (kvs, rev) = ctx.api.store.list(&prefix, None, None).await?;
    let past: Vec<EventRecord> = kvs.iter().filter_map(|kv| serde_json::from_slice::<EventRecord>(&kv.value).ok()).filter(|e| e.time_ms >= since_ms && matches(e, resource_group.as_deref())).collect();
    if !follow {
        return Ok(json(StatusCode::OK, &j!({ "value": past })));
    }
    let to_sse = |e: &EventRecord| Ok::<_, Infallible>(Event::default().event("lifecycle").data(serde_json::to_string(e).unwrap_or_default()));
    let head = futures::stream::iter(past.iter().map(to_sse).collect::<Vec<_>>());
    let rg = resource_group.clone();
    let live = ctx.api.store.watch(&prefix, rev).filter_map(move |ev| {
        let out = match ev {
            Ok(WatchEvent::Put(kv)) => serde_json::from_slice::<EventRecord>(&kv.value).ok().filter(|e| matches(e, rg.as_deref())).map(|e| to_sse(&e)),
            _ => None,
        };
        futures::future::ready(out)
    });
    Ok(Sse::new(head.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
