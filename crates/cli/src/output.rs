//! Rendering resources as `table` (default), `json`, `yaml` or `tsv`. Pure.
//! Works on `serde_json::Value` so fields a newer server adds survive `-o json`.

use serde_json::Value;

use crate::error::CliError;
use crate::OutputFormat;

pub const GROUP_COLUMNS: &[&str] =
    &["Name", "ResourceGroup", "Status", "ProvisioningState", "Image", "IP:ports", "Restarts", "CPU/Memory", "OsType", "Location"];
pub const RG_COLUMNS: &[&str] = &["Name", "Location", "Status"];

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// The resource group named in an ARM id (`…/resourceGroups/{rg}/…`, any casing).
pub fn resource_group_of(id: &str) -> Option<&str> {
    let mut parts = id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourcegroups") {
            return parts.next().filter(|s| !s.is_empty());
        }
    }
    None
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn containers(g: &Value) -> &[Value] {
    g.pointer("/properties/containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// One table row for a container group.
pub fn group_row(g: &Value) -> Vec<String> {
    let dash = || "-".to_string();
    let name = s(g, "/name").map(str::to_string).unwrap_or_else(dash);
    let rg = s(g, "/id").and_then(resource_group_of).map(str::to_string).unwrap_or_else(dash);
    let state = s(g, "/properties/instanceView/state").map(str::to_string).unwrap_or_else(dash);
    let prov = s(g, "/properties/provisioningState").map(str::to_string).unwrap_or_else(dash);
    let cs = containers(g);
    let images: Vec<&str> = cs.iter().filter_map(|c| s(c, "/properties/image")).collect();
    let images = if images.is_empty() { dash() } else { images.join(",") };
    let ip = match g.pointer("/properties/ipAddress") {
        Some(ip) if ip.is_object() => {
            let addr = s(ip, "/ip").or_else(|| s(ip, "/fqdn")).unwrap_or("");
            let ports: Vec<String> = ip
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let port = p.get("port").and_then(Value::as_i64)?;
                    Some(match p.get("protocol").and_then(Value::as_str) {
                        Some(proto) if proto.eq_ignore_ascii_case("udp") => format!("{port}/udp"),
                        _ => port.to_string(),
                    })
                })
                .collect();
            format!("{addr}:{}", ports.join(","))
        }
        _ => dash(),
    };
    let restarts: Vec<i64> = cs.iter().filter_map(|c| c.pointer("/properties/instanceView/restartCount").and_then(Value::as_i64)).collect();
    let restarts = if restarts.is_empty() { dash() } else { restarts.iter().sum::<i64>().to_string() };
    let (mut cpu, mut mem) = (0.0, 0.0);
    for c in cs {
        cpu += c.pointer("/properties/resources/requests/cpu").and_then(Value::as_f64).unwrap_or(0.0);
        mem += c.pointer("/properties/resources/requests/memoryInGB").and_then(Value::as_f64).unwrap_or(0.0);
    }
    let cpu_mem = if cs.is_empty() { dash() } else { format!("{} core/{} gb", num(cpu), num(mem)) };
    let os = s(g, "/properties/osType").map(str::to_string).unwrap_or_else(dash);
    let loc = s(g, "/location").map(str::to_string).unwrap_or_else(dash);
    vec![name, rg, state, prov, images, ip, restarts, cpu_mem, os, loc]
}

pub fn rg_row(rg: &Value) -> Vec<String> {
    vec![
        s(rg, "/name").unwrap_or("-").to_string(),
        s(rg, "/location").unwrap_or("-").to_string(),
        s(rg, "/properties/provisioningState").unwrap_or("-").to_string(),
    ]
}

/// A left-aligned table with a dashed rule under the header, like az's table output.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn tsv(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| r.join("\t") + "\n").collect()
}

/// Events of the group and its containers, oldest first, one line each.
pub fn event_lines(g: &Value) -> Vec<String> {
    let mut evs: Vec<(String, String)> = Vec::new();
    let mut push = |who: &str, e: &Value| {
        let ts = s(e, "/lastTimestamp").or_else(|| s(e, "/firstTimestamp")).unwrap_or("").to_string();
        let count = e.get("count").and_then(Value::as_i64).filter(|c| *c > 1).map(|c| format!(" (x{c})")).unwrap_or_default();
        let line = format!(
            "{:<20}  {:<7}  {:<10}  {}{}{}",
            ts,
            s(e, "/type").unwrap_or("Normal"),
            s(e, "/name").unwrap_or(""),
            who,
            s(e, "/message").unwrap_or(""),
            count
        );
        evs.push((ts, line.trim_end().to_string()));
    };
    for e in g.pointer("/properties/instanceView/events").and_then(Value::as_array).into_iter().flatten() {
        push("", e);
    }
    for key in ["initContainers", "containers"] {
        for c in g.pointer(&format!("/properties/{key}")).and_then(Value::as_array).into_iter().flatten() {
            let who = format!("[{}] ", s(c, "/name").unwrap_or("?"));
            for e in c.pointer("/properties/instanceView/events").and_then(Value::as_array).into_iter().flatten() {
                push(&who, e);
            }
        }
    }
    evs.sort_by(|a, b| a.0.cmp(&b.0));
    evs.into_iter().map(|(_, l)| l).collect()
}

/// Per-container state lines for `show`: `name  state (detail)  exit code  restarts`.
pub fn container_lines(g: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for c in containers(g) {
        let name = s(c, "/name").unwrap_or("?");
        let Some(iv) = c.pointer("/properties/instanceView") else { continue };
        let state = s(iv, "/currentState/state").unwrap_or("-");
        let detail = s(iv, "/currentState/detailStatus").filter(|d| !d.is_empty()).map(|d| format!(" ({d})")).unwrap_or_default();
        let exit = iv.pointer("/currentState/exitCode").and_then(Value::as_i64).map(|c| format!(", exit code {c}")).unwrap_or_default();
        let restarts = iv.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        out.push(format!("{name}: {state}{detail}{exit}, restarts {restarts}"));
    }
    out
}

/// The resource as az shows it: every object's `properties` lifted to that object's top
/// level (keys already there win), `properties` itself kept, recursively. Pure.
pub fn az_view(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(az_view).collect()),
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), az_view(v))).collect();
            if let Some(Value::Object(props)) = out.get("properties").cloned() {
                for (k, v) in props {
                    out.entry(k).or_insert(v);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Whether `expr` is a valid JMESPath expression (checked before any request is made).
pub fn check_query(expr: &str) -> Result<(), CliError> {
    jmespath::compile(expr).map(|_| ()).map_err(|e| CliError::usage(format!("invalid --query '{expr}': {e}")))
}

/// `expr` applied to the az view of `v`.
pub fn apply_query(v: &Value, expr: &str) -> Result<Value, CliError> {
    let compiled = jmespath::compile(expr).map_err(|e| CliError::usage(format!("invalid --query '{expr}': {e}")))?;
    let data = jmespath::Variable::from_serializable(az_view(v)).map_err(|e| CliError::usage(format!("--query: {e}")))?;
    let found = compiled.search(data).map_err(|e| CliError::usage(format!("--query '{expr}': {e}")))?;
    serde_json::to_value(&*found).map_err(|e| CliError::usage(format!("--query: {e}")))
}

/// The result of `--query`: JSON by default (also for `-o table`, as az prints objects),
/// YAML with `-o yaml`, and for `-o tsv` scalars one per line (arrays of them tab-separated).
pub fn render_query(v: &Value, expr: &str, format: OutputFormat) -> Result<String, CliError> {
    let found = apply_query(v, expr)?;
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(match format {
        OutputFormat::Yaml => to_yaml(&found)?,
        OutputFormat::Tsv | OutputFormat::Csv => match &found {
            Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => format!("{}\n", items.iter().map(scalar).collect::<Vec<_>>().join("\t")),
            Value::Object(_) | Value::Array(_) => to_json(&found),
            other => format!("{}\n", scalar(other)),
        },
        OutputFormat::Json | OutputFormat::Table => to_json(&found),
    })
}

pub fn to_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()) + "\n"
}

pub fn to_yaml(v: &Value) -> Result<String, CliError> {
    crate::build::to_yaml(v)
}

/// Render one container group. `detail` adds containers and events to the table (show/create).
pub fn render_group(g: &Value, format: OutputFormat, detail: bool) -> Result<String, CliError> {
    Ok(match format {
        OutputFormat::Json => to_json(g),
        OutputFormat::Yaml => to_yaml(g)?,
        OutputFormat::Tsv | OutputFormat::Csv => tsv(&[group_row(g)]),
        OutputFormat::Table => {
            let mut out = table(GROUP_COLUMNS, &[group_row(g)]);
            if detail {
                let cl = container_lines(g);
                if !cl.is_empty() {
                    out.push_str("\nContainers:\n");
                    for l in cl {
                        out.push_str(&format!("  {l}\n"));
                    }
                }
                let ev = event_lines(g);
                if !ev.is_empty() {
                    out.push_str("\nEvents:\n");
                    for l in ev {
                        out.push_str(&format!("  {l}\n"));
                    }
                }
            }
            out
        }
    })
}

pub fn render_group_list(items: &[Value], format: OutputFormat) -> Result<String, CliError> {
    let rows: Vec<Vec<String>> = items.iter().map(group_row).collect();
    Ok(match format {
        OutputFormat::Json => to_json(&Value::Array(items.to_vec())),
        OutputFormat::Yaml => to_yaml(&Value::Array(items.to_vec()))?,
        OutputFormat::Tsv | OutputFormat::Csv => tsv(&rows),
        OutputFormat::Table => table(GROUP_COLUMNS, &rows),
    })
}

pub fn render_rg(rg: &Value, format: OutputFormat) -> Result<String, CliError> {
    Ok(match format {
        OutputFormat::Json => to_json(rg),
        OutputFormat::Yaml => to_yaml(rg)?,
        OutputFormat::Tsv | OutputFormat::Csv => tsv(&[rg_row(rg)]),
        OutputFormat::Table => table(RG_COLUMNS, &[rg_row(rg)]),
    })
}

pub fn render_rg_list(items: &[Value], format: OutputFormat) -> Result<String, CliError> {
    let rows: Vec<Vec<String>> = items.iter().map(rg_row).collect();
    Ok(match format {
        OutputFormat::Json => to_json(&Value::Array(items.to_vec())),
        OutputFormat::Yaml => to_yaml(&Value::Array(items.to_vec()))?,
        OutputFormat::Tsv | OutputFormat::Csv => tsv(&rows),
        OutputFormat::Table => table(RG_COLUMNS, &rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_see_the_az_view() {
        let g = serde_json::json!({"name": "web", "properties": {
            "provisioningState": "Succeeded",
            "ipAddress": {"ip": "127.77.0.5", "ports": [{"port": 80, "protocol": "TCP"}], "fqdn": "shop.westus.skiff.local"},
            "containers": [{"name": "a", "properties": {"image": "busybox", "instanceView": {"restartCount": 2}}}, {"name": "b", "properties": {"image": "httpd"}}]
        }});
        assert_eq!(apply_query(&g, "ipAddress").unwrap(), g["properties"]["ipAddress"]);
        assert_eq!(apply_query(&g, "ipAddress.ip").unwrap(), "127.77.0.5");
        assert_eq!(apply_query(&g, "properties.ipAddress.fqdn").unwrap(), "shop.westus.skiff.local");
        assert_eq!(apply_query(&g, "containers[].image").unwrap(), serde_json::json!(["busybox", "httpd"]));
        assert_eq!(apply_query(&g, "containers[0].instanceView.restartCount").unwrap(), 2);
        assert_eq!(apply_query(&g, "nothing").unwrap(), Value::Null);
        assert_eq!(render_query(&g, "ipAddress.ip", OutputFormat::Tsv).unwrap(), "127.77.0.5\n");
        assert_eq!(render_query(&g, "containers[].name", OutputFormat::Tsv).unwrap(), "a\tb\n");
        assert_eq!(render_query(&serde_json::json!([g.clone(), g]), "[].name", OutputFormat::Json).unwrap(), "[\n  \"web\",\n  \"web\"\n]\n");
        assert!(check_query("containers[").is_err());
        // A key already at the top level is not overwritten by one lifted from properties.
        let v = serde_json::json!({"name": "outer", "properties": {"name": "inner"}});
        assert_eq!(apply_query(&v, "name").unwrap(), "outer");
    }
    use serde_json::json;

    pub fn sample() -> Value {
        json!({
            "id": "/subscriptions/s/resourceGroups/Demo/providers/Microsoft.ContainerInstance/containerGroups/web",
            "name": "web", "type": "Microsoft.ContainerInstance/containerGroups", "location": "westus",
            "properties": {
                "provisioningState": "Succeeded", "osType": "Linux", "restartPolicy": "Always",
                "ipAddress": {"type": "Public", "ip": "10.88.0.5", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
                "containers": [
                    {"name": "web", "properties": {"image": "nginx", "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}},
                        "environmentVariables": [{"name": "SECRET"}],
                        "instanceView": {"restartCount": 2, "currentState": {"state": "Running", "detailStatus": ""},
                            "events": [{"count": 1, "lastTimestamp": "2024-01-01T00:00:02Z", "name": "Started", "message": "Started container", "type": "Normal"}]}}},
                    {"name": "side", "properties": {"image": "busybox", "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}},
                        "instanceView": {"restartCount": 1, "currentState": {"state": "Terminated", "exitCode": 1, "detailStatus": "Error"}, "events": []}}}
                ],
                "instanceView": {"state": "Running", "events": [
                    {"count": 3, "lastTimestamp": "2024-01-01T00:00:01Z", "name": "Pulling", "message": "pulling image \"nginx\"", "type": "Normal"}
                ]}
            }
        })
    }

    #[test]
    fn group_row_summarises() {
        assert_eq!(
            group_row(&sample()),
            vec!["web", "Demo", "Running", "Succeeded", "nginx,busybox", "10.88.0.5:80,53/udp", "3", "1.5 core/2.0 gb", "Linux", "westus"]
        );
        // A list item: no instance views, no IP.
        let mut g = sample();
        g["properties"].as_object_mut().unwrap().remove("instanceView");
        g["properties"].as_object_mut().unwrap().remove("ipAddress");
        for c in g["properties"]["containers"].as_array_mut().unwrap() {
            c["properties"].as_object_mut().unwrap().remove("instanceView");
        }
        let r = group_row(&g);
        assert_eq!((r[2].as_str(), r[5].as_str(), r[6].as_str()), ("-", "-", "-"));
    }

    #[test]
    fn table_layout() {
        let t = table(&["A", "Long"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]]);
        assert_eq!(t, "A    Long\n---  ----\nxyz  1\nq\n");
    }

    #[test]
    fn show_table_has_containers_and_events_in_time_order() {
        let out = render_group(&sample(), OutputFormat::Table, true).unwrap();
        assert!(out.starts_with("Name"), "{out}");
        assert!(out.contains("side: Terminated (Error), exit code 1, restarts 1"), "{out}");
        let pulling = out.find("Pulling").unwrap();
        let started = out.find("[web] Started container").unwrap();
        assert!(pulling < started, "{out}");
        assert!(out.contains("(x3)"));
        // Summary only without detail.
        let short = render_group(&sample(), OutputFormat::Table, false).unwrap();
        assert_eq!(short.lines().count(), 3);
    }

    #[test]
    fn other_formats() {
        let g = sample();
        let j: Value = serde_json::from_str(&render_group(&g, OutputFormat::Json, true).unwrap()).unwrap();
        assert_eq!(j, g);
        let y = render_group(&g, OutputFormat::Yaml, true).unwrap();
        assert_eq!(crate::build::parse_document(&y).unwrap(), g);
        let t = render_group_list(&[g.clone(), g], OutputFormat::Tsv).unwrap();
        assert_eq!(t.lines().count(), 2);
        assert!(t.starts_with("web\tDemo\tRunning"));
        let rg = json!({"name": "Demo", "location": "westus", "properties": {"provisioningState": "Succeeded"}});
        assert_eq!(render_rg(&rg, OutputFormat::Tsv).unwrap(), "Demo\twestus\tSucceeded\n");
        assert_eq!(serde_json::from_str::<Value>(&render_rg(&rg, OutputFormat::Json).unwrap()).unwrap(), rg);
    }

    #[test]
    fn resource_group_from_id() {
        assert_eq!(resource_group_of("/subscriptions/s/resourcegroups/RG/providers/x"), Some("RG"));
        assert_eq!(resource_group_of("/subscriptions/s"), None);
    }
}
