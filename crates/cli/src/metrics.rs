//! `skiff container metrics`: the Azure Monitor-shaped metrics of a group (CpuUsage,
//! MemoryUsage, NetworkBytesReceivedPerSecond, NetworkBytesTransmittedPerSecond), a Skiff
//! extension documented in docs/METERING.md.

use std::io::Write;

use clap::Args;
use serde_json::Value;

use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::{table, to_json, to_yaml, tsv};
use crate::OutputFormat;

/// The api-version sent to the metrics view (Azure Monitor's).
pub const INSIGHTS_API_VERSION: &str = "2018-01-01";

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub group: crate::GroupRef,
    /// Comma-separated metric names (default: all four).
    #[arg(long, default_value = "CpuUsage,MemoryUsage,NetworkBytesReceivedPerSecond,NetworkBytesTransmittedPerSecond")]
    pub metrics: String,
    /// Aggregation interval (ISO 8601 duration).
    #[arg(long, default_value = "PT1M")]
    pub interval: String,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One row per (metric, series): name, unit, container, and the latest data point.
pub fn rows(body: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for m in body["value"].as_array().into_iter().flatten() {
        for ts in m["timeseries"].as_array().into_iter().flatten() {
            let container = ts["metadatavalues"].as_array().into_iter().flatten().find(|mv| mv["name"]["value"] == "containerName").map(|mv| text(&mv["value"])).unwrap_or_default();
            let last = ts["data"].as_array().and_then(|d| d.last()).cloned().unwrap_or(Value::Null);
            out.push(vec![text(&m["name"]["value"]), container, text(&m["unit"]), text(&last["timeStamp"]), text(&last["average"])]);
        }
    }
    out
}

pub fn render(body: &Value, format: OutputFormat) -> Result<String, CliError> {
    Ok(match format {
        OutputFormat::Json => to_json(body),
        OutputFormat::Yaml => to_yaml(body)?,
        OutputFormat::Tsv | OutputFormat::Csv => tsv(&rows(body)),
        OutputFormat::Table => table(&["Metric", "Container", "Unit", "Time", "Average"], &rows(body)),
    })
}

pub async fn container_metrics(ctx: &Ctx, a: &MetricsArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("api-version", INSIGHTS_API_VERSION).append_pair("metricnames", &a.metrics).append_pair("interval", &a.interval);
    let url = format!("{}/providers/Microsoft.Insights/metrics?{}", c.group_path(&a.group.resource_group, &a.group.name), q.finish());
    let body = c.get_json(&url).await?;
    out.write_all(render(&body, ctx.format)?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn latest_point_per_series() {
        let body = json!({"value": [
            {"name": {"value": "CpuUsage"}, "unit": "Count", "timeseries": [
                {"metadatavalues": [{"name": {"value": "containerName"}, "value": "web"}], "data": [{"timeStamp": "t1", "average": 1.0}, {"timeStamp": "t2", "average": 480.5}]}]},
            {"name": {"value": "NetworkBytesReceivedPerSecond"}, "unit": "BytesPerSecond", "timeseries": [{"metadatavalues": [], "data": []}]}
        ]});
        assert_eq!(rows(&body), vec![vec!["CpuUsage", "web", "Count", "t2", "480.5"], vec!["NetworkBytesReceivedPerSecond", "", "BytesPerSecond", "", ""]]);
    }
}
