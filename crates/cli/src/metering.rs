//! `skiff usage` and `skiff events`: Skiff's metering extensions (docs/METERING.md).

use std::io::Write;

use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use crate::client::ACI_API_VERSION;
use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::{table, to_json, to_yaml, tsv};
use crate::OutputFormat;

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// Start of the window (RFC 3339 or a date; default: the beginning).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window (RFC 3339 or a date; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    /// Sum by `resourceGroup` or `containerGroup` (table output).
    #[arg(long, default_value = "containerGroup")]
    pub group_by: String,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    /// Keep streaming new events.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("api-version", ACI_API_VERSION);
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

const USAGE_COLUMNS: &[&str] = &["ResourceGroup", "ContainerGroup", "Start", "End", "Open", "vCPU", "MemoryGB", "Seconds", "vCPUSeconds", "MemoryGBSeconds"];

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One row per usage record (the CSV an operator feeds to a billing system).
pub fn usage_rows(body: &Value) -> Vec<Vec<String>> {
    body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| ["resourceGroup", "containerGroup", "start", "end", "open", "vcpu", "memoryInGB", "seconds", "vcpuSeconds", "memoryGBSeconds"].iter().map(|k| s(&r[*k])).collect())
        .collect()
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = headers.join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

pub fn render_usage(body: &Value, format: OutputFormat) -> Result<String, CliError> {
    let rows = usage_rows(body);
    Ok(match format {
        OutputFormat::Json => to_json(body),
        OutputFormat::Yaml => to_yaml(body)?,
        OutputFormat::Csv => csv(USAGE_COLUMNS, &rows),
        OutputFormat::Tsv => tsv(&rows),
        OutputFormat::Table => {
            let mut summary: Vec<Vec<String>> = body["summary"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| vec![s(&r["resourceGroup"]), s(&r["containerGroup"]), s(&r["seconds"]), s(&r["vcpuSeconds"]), s(&r["memoryGBSeconds"])])
                .collect();
            let t = &body["total"];
            summary.push(vec!["TOTAL".into(), String::new(), s(&t["seconds"]), s(&t["vcpuSeconds"]), s(&t["memoryGBSeconds"])]);
            table(&["ResourceGroup", "ContainerGroup", "Seconds", "vCPUSeconds", "MemoryGBSeconds"], &summary)
        }
    })
}

pub async fn usage(ctx: &Ctx, a: &UsageArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    let url = format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/usageRecords?{}",
        c.base,
        c.subscription,
        query(&[("from", a.from.as_deref()), ("to", a.to.as_deref()), ("groupBy", Some(&a.group_by)), ("resourceGroup", a.resource_group.as_deref())])
    );
    let body = c.get_json(&url).await?;
    let text = render_usage(&body, ctx.format)?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// One line per event: time, kind, resource group/group[/container], exit code and reason.
pub fn event_line(e: &Value, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json | OutputFormat::Yaml => serde_json::to_string(e).unwrap_or_default(),
        _ => {
            let mut target = format!("{}/{}", s(&e["resourceGroup"]), s(&e["containerGroup"]));
            if let Some(c) = e["container"].as_str() {
                target.push('/');
                target.push_str(c);
            }
            let mut line = format!("{}  {:<10}  {target}", s(&e["time"]), s(&e["kind"]));
            if !e["exitCode"].is_null() {
                line.push_str(&format!("  exitCode={}", s(&e["exitCode"])));
            }
            if let Some(r) = e["reason"].as_str() {
                line.push_str(&format!("  reason={r}"));
            }
            if let Some(m) = e["message"].as_str().filter(|m| !m.is_empty()) {
                line.push_str(&format!("  {m}"));
            }
            line
        }
    }
}

pub async fn events(ctx: &Ctx, a: &EventsArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    let follow = a.follow.then_some("true");
    let url = format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/events?{}",
        c.base,
        c.subscription,
        query(&[("resourceGroup", a.resource_group.as_deref()), ("since", a.since.as_deref()), ("follow", follow)])
    );
    if !a.follow {
        let body = c.get_json(&url).await?;
        for e in body["value"].as_array().into_iter().flatten() {
            writeln!(out, "{}", event_line(e, ctx.format))?;
        }
        return Ok(());
    }
    // Server-sent events: `data:` lines carry one JSON event each.
    let resp = c.open_stream(&url, "text/event-stream").await?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CliError::Http(format!("the event stream broke: {e}")))?;
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                if let Ok(e) = serde_json::from_str::<Value>(data.trim_start()) {
                    writeln!(out, "{}", event_line(&e, ctx.format))?;
                    out.flush()?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_csv_has_one_row_per_record() {
        let body = json!({"value": [{"resourceGroup": "rg", "containerGroup": "a,b", "start": "t0", "end": "t1", "open": false, "vcpu": 1, "memoryInGB": 0.5, "seconds": 2.0, "vcpuSeconds": 2.0, "memoryGBSeconds": 1.0}], "summary": [], "total": {}});
        let out = render_usage(&body, OutputFormat::Csv).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ResourceGroup,ContainerGroup,Start"));
        assert_eq!(lines[1], "rg,\"a,b\",t0,t1,false,1,0.5,2.0,2.0,1.0");
    }

    #[test]
    fn event_lines_name_the_container_and_exit() {
        let e = json!({"time": "t", "kind": "Terminated", "resourceGroup": "rg", "containerGroup": "g", "container": "c", "exitCode": 137, "reason": "OOMKilled", "message": ""});
        assert_eq!(event_line(&e, OutputFormat::Table), "t  Terminated  rg/g/c  exitCode=137  reason=OOMKilled");
    }
}
