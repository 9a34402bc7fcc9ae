//! Kubernetes Pod manifests (`apiVersion: v1`, `kind: Pod`) for `skiff container create
//! --file`: a pure conversion into the container group document the server accepts.
//!
//! What maps (docs/POD.md has the table): metadata.name and labels (→ tags), containers and
//! initContainers (image, command + args, env values, ports, resources, volumeMounts, exec/httpGet
//! probes, a securityContext subset), emptyDir and gitRepo volumes, restartPolicy, dnsConfig, and
//! two annotations: `skiff.io/ip-address: Public|Private` (expose every container port on the
//! group's IP) and `skiff.io/dns-name-label`. Everything else that would change behaviour is
//! collected and refused in ONE error that lists every field, so a user fixes the manifest once.
//! Read-only or purely informational fields (status, uid, imagePullPolicy, ...) are ignored.
//!
//! `args` without `command` is refused: an ACI `command` replaces the image's entrypoint, and the
//! CLI does not know that entrypoint, so it cannot build "entrypoint + args" faithfully.

use serde_json::{Map, Value};

use crate::quantity::parse_quantity;

/// The annotation that gives the group an IP address exposing every container port.
pub const IP_ADDRESS_ANNOTATION: &str = "skiff.io/ip-address";
/// The annotation that sets the IP address's DNS name label.
pub const DNS_LABEL_ANNOTATION: &str = "skiff.io/dns-name-label";

/// ACI's defaults (and az's) when a container states neither requests nor limits.
const DEFAULT_CPU: f64 = 1.0;
const DEFAULT_MEMORY_GB: f64 = 1.5;

/// Everything wrong with a manifest, reported at once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodError {
    /// Paths of fields Skiff cannot map (`spec.nodeSelector`, `spec.containers[0].env[1].valueFrom`).
    pub unsupported: Vec<String>,
    /// Mapped fields whose values are wrong (`path: reason`).
    pub invalid: Vec<String>,
}

impl std::fmt::Display for PodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the Pod manifest cannot be converted to a container group:")?;
        if !self.unsupported.is_empty() {
            write!(f, "\n  unsupported fields (remove them; see docs/POD.md): {}", self.unsupported.join(", "))?;
        }
        for i in &self.invalid {
            write!(f, "\n  {i}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PodError {}

/// True when the document is a Kubernetes Pod rather than an ACI deployment file.
pub fn is_pod(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("Pod") && doc.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Convert a Pod manifest into an ACI container group document (with `apiVersion` and, when the
/// manifest names the pod, `name`), ready for `prepare_file_document`.
pub fn pod_to_group(pod: &Value) -> Result<Value, PodError> {
    let mut w = Walker::default();
    let out = w.pod(pod);
    if w.err.unsupported.is_empty() && w.err.invalid.is_empty() {
        Ok(out)
    } else {
        Err(w.err)
    }
}

/// A value that counts as "set": Kubernetes treats null, "" and empty maps/lists as unset.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Scalars as strings (YAML turns `version: 2` into a number; Kubernetes means the string).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Default)]
struct Walker {
    err: PodError,
}

impl Walker {
    fn invalid(&mut self, path: &str, reason: impl std::fmt::Display) {
        self.err.invalid.push(format!("{path}: {reason}"));
    }

    /// The set fields of a mapping; every set key outside `known` and `ignored` is unsupported.
    fn fields<'a>(&mut self, v: &'a Value, path: &str, known: &[&str], ignored: &[&str]) -> Vec<(&'a str, &'a Value)> {
        let Some(map) = v.as_object() else {
            if is_set(v) {
                self.invalid(path, "must be a mapping");
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, val) in map {
            if !is_set(val) || ignored.contains(&k.as_str()) {
                continue;
            }
            if known.contains(&k.as_str()) {
                out.push((k.as_str(), val));
            } else {
                self.err.unsupported.push(format!("{path}.{k}"));
            }
        }
        out
    }

    fn list<'a>(&mut self, v: &'a Value, path: &str) -> &'a [Value] {
        match v.as_array() {
            Some(a) => a,
            None => {
                self.invalid(path, "must be a list");
                &[]
            }
        }
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = scalar_string(v);
        if s.is_none() {
            self.invalid(path, "must be a string");
        }
        s
    }

    fn strings(&mut self, v: &Value, path: &str) -> Vec<String> {
        let items = self.list(v, path);
        items.iter().enumerate().filter_map(|(i, s)| self.string(s, &format!("{path}[{i}]"))).collect()
    }

    fn int(&mut self, v: &Value, path: &str) -> Option<i64> {
        let n = v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        if n.is_none() {
            self.invalid(path, "must be an integer");
        }
        n
    }

    fn bool(&mut self, v: &Value, path: &str) -> Option<bool> {
        let b = v.as_bool();
        if b.is_none() {
            self.invalid(path, "must be true or false");
        }
        b
    }

    fn pod(&mut self, pod: &Value) -> Value {
        let mut doc = Map::new();
        doc.insert("apiVersion".into(), skiff_model::DEFAULT_API_VERSION.into());
        let (mut metadata, mut spec) = (&Value::Null, &Value::Null);
        for (k, v) in self.fields(pod, "", &["apiVersion", "kind", "metadata", "spec"], &["status"]) {
            match k {
                "metadata" => metadata = v,
                "spec" => spec = v,
                _ => {}
            }
        }
        // The top-level paths come out as ".foo"; drop the leading dot.
        for u in &mut self.err.unsupported {
            if let Some(rest) = u.strip_prefix('.') {
                *u = rest.to_string();
            }
        }
        let mut ip_type = None;
        let mut dns_label = None;
        for (k, v) in self.fields(
            metadata,
            "metadata",
            &["name", "labels", "annotations"],
            &["namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink"],
        ) {
            match k {
                "name" => {
                    if let Some(n) = self.string(v, "metadata.name") {
                        doc.insert("name".into(), n.into());
                    }
                }
                "labels" => {
                    let mut tags = Map::new();
                    for (lk, lv) in v.as_object().into_iter().flatten() {
                        if let Some(s) = self.string(lv, &format!("metadata.labels.{lk}")) {
                            tags.insert(lk.clone(), s.into());
                        }
                    }
                    doc.insert("tags".into(), tags.into());
                }
                "annotations" => {
                    for (ak, av) in v.as_object().into_iter().flatten() {
                        let at = format!("metadata.annotations.{ak}");
                        match ak.as_str() {
                            IP_ADDRESS_ANNOTATION => ip_type = self.string(av, &at),
                            DNS_LABEL_ANNOTATION => dns_label = self.string(av, &at),
                            // A misspelt Skiff annotation must not be silently ignored.
                            other if other.starts_with("skiff.io/") => self.err.unsupported.push(at),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if !is_set(spec) {
            self.invalid("spec", "is required");
        }
        let mut props = Map::new();
        props.insert("osType".into(), "Linux".into());
        let mut all_ports = Vec::new();
        for (k, v) in self.fields(
            spec,
            "spec",
            &["containers", "initContainers", "restartPolicy", "volumes", "dnsConfig"],
            &["terminationGracePeriodSeconds", "dnsPolicy", "enableServiceLinks", "schedulerName", "priority", "preemptionPolicy"],
        ) {
            match k {
                "containers" => {
                    let items = self.list(v, "spec.containers");
                    let cs: Vec<Value> = items.iter().enumerate().map(|(i, c)| self.container(c, &format!("spec.containers[{i}]"), false, &mut all_ports)).collect();
                    props.insert("containers".into(), cs.into());
                }
                "initContainers" => {
                    let items = self.list(v, "spec.initContainers");
                    let mut none = Vec::new();
                    let cs: Vec<Value> = items.iter().enumerate().map(|(i, c)| self.container(c, &format!("spec.initContainers[{i}]"), true, &mut none)).collect();
                    props.insert("initContainers".into(), cs.into());
                }
                "restartPolicy" => {
                    if let Some(p) = self.string(v, "spec.restartPolicy") {
                        if !["Always", "OnFailure", "Never"].contains(&p.as_str()) {
                            self.invalid("spec.restartPolicy", format!("'{p}' is not one of Always, OnFailure, Never"));
                        }
                        props.insert("restartPolicy".into(), p.into());
                    }
                }
                "volumes" => {
                    let items = self.list(v, "spec.volumes");
                    let vs: Vec<Value> = items.iter().enumerate().map(|(i, vol)| self.volume(vol, &format!("spec.volumes[{i}]"))).collect();
                    props.insert("volumes".into(), vs.into());
                }
                "dnsConfig" => {
                    let d = self.dns_config(v);
                    props.insert("dnsConfig".into(), d);
                }
                _ => {}
            }
        }
        if !props.contains_key("containers") && is_set(spec) {
            self.invalid("spec.containers", "a Pod needs at least one container");
        }
        if let Some(t) = ip_type {
            let mut ip = Map::new();
            ip.insert("type".into(), t.into());
            ip.insert("ports".into(), all_ports.into());
            if let Some(l) = dns_label {
                ip.insert("dnsNameLabel".into(), l.into());
            }
            props.insert("ipAddress".into(), ip.into());
        } else if dns_label.is_some() {
            self.invalid(&format!("metadata.annotations.{DNS_LABEL_ANNOTATION}"), format!("needs the {IP_ADDRESS_ANNOTATION} annotation as well"));
        }
        doc.insert("properties".into(), props.into());
        doc.into()
    }

    fn container(&mut self, c: &Value, at: &str, init: bool, all_ports: &mut Vec<Value>) -> Value {
        let main_only: &[&str] = &["ports", "resources", "livenessProbe", "readinessProbe", "stdin"];
        let mut known = vec!["name", "image", "command", "args", "env", "volumeMounts", "securityContext"];
        if !init {
            known.extend_from_slice(main_only);
        }
        let mut name = None;
        let mut props = Map::new();
        let (mut command, mut args) = (None, None);
        let mut port_names: Vec<(String, i64)> = Vec::new();
        let mut probes = Vec::new();
        let mut resources = None;
        for (k, v) in self.fields(c, at, &known, &["imagePullPolicy", "terminationMessagePath", "terminationMessagePolicy"]) {
            let path = format!("{at}.{k}");
            match k {
                "name" => name = self.string(v, &path),
                "image" => {
                    if let Some(i) = self.string(v, &path) {
                        props.insert("image".into(), i.into());
                    }
                }
                "command" => command = Some(self.strings(v, &path)),
                "args" => args = Some(self.strings(v, &path)),
                "env" => {
                    let items = self.list(v, &path);
                    let env: Vec<Value> = items.iter().enumerate().filter_map(|(i, e)| self.env(e, &format!("{path}[{i}]"))).collect();
                    props.insert("environmentVariables".into(), env.into());
                }
                "volumeMounts" => {
                    let items = self.list(v, &path);
                    let ms: Vec<Value> = items.iter().enumerate().filter_map(|(i, m)| self.mount(m, &format!("{path}[{i}]"))).collect();
                    props.insert("volumeMounts".into(), ms.into());
                }
                "securityContext" => {
                    let sc = self.security_context(v, &path);
                    props.insert("securityContext".into(), sc);
                }
                "ports" => {
                    let items = self.list(v, &path);
                    let mut ports = Vec::new();
                    for (i, p) in items.iter().enumerate() {
                        if let Some((port, pname)) = self.port(p, &format!("{path}[{i}]")) {
                            if let Some(n) = pname {
                                port_names.push((n, port["port"].as_i64().unwrap_or(0)));
                            }
                            all_ports.push(port.clone());
                            ports.push(port);
                        }
                    }
                    props.insert("ports".into(), ports.into());
                }
                "resources" => resources = Some((v, path)),
                "livenessProbe" | "readinessProbe" => probes.push((k, v, path)),
                "stdin" => match v.as_bool() {
                    Some(b) => {
                        props.insert("stdin".into(), b.into());
                    }
                    None => self.invalid(&path, "`stdin` must be true or false"),
                },
                _ => {}
            }
        }
        match (command, args) {
            (Some(mut cmd), args) => {
                cmd.extend(args.unwrap_or_default());
                props.insert("command".into(), cmd.into());
            }
            (None, Some(_)) => self.invalid(
                &format!("{at}.args"),
                "`args` without `command` cannot be mapped: a container group's command replaces the image's entrypoint, which the CLI does not know; write the whole command line in `command` (entrypoint first, then the arguments)",
            ),
            (None, None) => {}
        }
        if !props.contains_key("image") {
            self.invalid(&format!("{at}.image"), "is required");
        }
        if !init {
            let r = match resources {
                Some((v, path)) => self.resources(v, &path),
                None => serde_json::json!({"requests": {"cpu": DEFAULT_CPU, "memoryInGB": DEFAULT_MEMORY_GB}}),
            };
            props.insert("resources".into(), r);
        }
        for (k, v, path) in probes {
            let p = self.probe(v, &path, &port_names);
            props.insert(k.into(), p);
        }
        let name = name.unwrap_or_else(|| {
            self.invalid(&format!("{at}.name"), "is required");
            String::new()
        });
        serde_json::json!({"name": name, "properties": props})
    }

    fn env(&mut self, e: &Value, at: &str) -> Option<Value> {
        let mut name = None;
        let mut value = String::new();
        for (k, v) in self.fields(e, at, &["name", "value"], &[]) {
            match k {
                "name" => name = self.string(v, &format!("{at}.name")),
                _ => value = self.string(v, &format!("{at}.value")).unwrap_or_default(),
            }
        }
        match name {
            Some(n) => Some(serde_json::json!({"name": n, "value": value})),
            None => {
                self.invalid(&format!("{at}.name"), "is required");
                None
            }
        }
    }

    fn mount(&mut self, m: &Value, at: &str) -> Option<Value> {
        let mut out = Map::new();
        for (k, v) in self.fields(m, at, &["name", "mountPath", "readOnly"], &[]) {
            let path = format!("{at}.{k}");
            match k {
                "readOnly" => {
                    if let Some(b) = self.bool(v, &path) {
                        out.insert("readOnly".into(), b.into());
                    }
                }
                _ => {
                    if let Some(s) = self.string(v, &path) {
                        out.insert(k.into(), s.into());
                    }
                }
            }
        }
        for req in ["name", "mountPath"] {
            if !out.contains_key(req) {
                self.invalid(&format!("{at}.{req}"), "is required");
                return None;
            }
        }
        Some(out.into())
    }

    /// A container port and its Kubernetes name (for probes that name their port).
    fn port(&mut self, p: &Value, at: &str) -> Option<(Value, Option<String>)> {
        let mut out = Map::new();
        let mut name = None;
        for (k, v) in self.fields(p, at, &["containerPort", "protocol", "name"], &[]) {
            let path = format!("{at}.{k}");
            match k {
                "containerPort" => {
                    if let Some(n) = self.int(v, &path) {
                        out.insert("port".into(), n.into());
                    }
                }
                "protocol" => {
                    if let Some(s) = self.string(v, &path) {
                        out.insert("protocol".into(), s.into());
                    }
                }
                _ => name = self.string(v, &path),
            }
        }
        if !out.contains_key("port") {
            self.invalid(&format!("{at}.containerPort"), "is required");
            return None;
        }
        Some((out.into(), name))
    }

    fn resources(&mut self, r: &Value, at: &str) -> Value {
        let mut requests: (Option<f64>, Option<f64>) = (None, None);
        let mut limits: (Option<f64>, Option<f64>) = (None, None);
        for (k, v) in self.fields(r, at, &["requests", "limits"], &[]) {
            let path = format!("{at}.{k}");
            let slot = if k == "requests" { &mut requests } else { &mut limits };
            let mut got = (None, None);
            for (rk, rv) in self.fields(v, &path, &["cpu", "memory"], &[]) {
                let q = self.quantity(rv, &format!("{path}.{rk}"));
                if rk == "cpu" {
                    // Kubernetes' precision is a millicore.
                    got.0 = q.map(|c| (c * 1000.0).round() / 1000.0);
                } else {
                    got.1 = q.map(|b| (b / skiff_model::resources::BYTES_PER_GB * 1e6).round() / 1e6);
                }
            }
            *slot = got;
        }
        // As in Kubernetes, an unstated request defaults to the limit.
        let cpu = requests.0.or(limits.0).unwrap_or(DEFAULT_CPU);
        let mem = requests.1.or(limits.1).unwrap_or(DEFAULT_MEMORY_GB);
        let mut out = serde_json::json!({"requests": {"cpu": cpu, "memoryInGB": mem}});
        if limits.0.is_some() || limits.1.is_some() {
            let mut l = Map::new();
            if let Some(c) = limits.0 {
                l.insert("cpu".into(), c.into());
            }
            if let Some(m) = limits.1 {
                l.insert("memoryInGB".into(), m.into());
            }
            out["limits"] = l.into();
        }
        out
    }

    fn quantity(&mut self, v: &Value, at: &str) -> Option<f64> {
        let parsed = match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| "is not a number".to_string()),
            Value::String(s) => parse_quantity(s).map_err(|e| e.to_string()),
            _ => Err("must be a quantity such as 500m, 1, 512Mi or 1Gi".to_string()),
        };
        match parsed {
            Ok(q) if q > 0.0 => Some(q),
            Ok(_) => {
                self.invalid(at, "must be greater than zero");
                None
            }
            Err(e) => {
                self.invalid(at, e);
                None
            }
        }
    }

    fn probe(&mut self, p: &Value, at: &str, port_names: &[(String, i64)]) -> Value {
        let mut out = Map::new();
        let timings = ["initialDelaySeconds", "periodSeconds", "failureThreshold", "successThreshold", "timeoutSeconds"];
        let mut known = vec!["exec", "httpGet"];
        known.extend_from_slice(&timings);
        for (k, v) in self.fields(p, at, &known, &[]) {
            let path = format!("{at}.{k}");
            match k {
                "exec" => {
                    let mut cmd = None;
                    for (_, c) in self.fields(v, &path, &["command"], &[]) {
                        cmd = Some(self.strings(c, &format!("{path}.command")));
                    }
                    out.insert("exec".into(), serde_json::json!({"command": cmd.unwrap_or_default()}));
                }
                "httpGet" => {
                    let h = self.http_get(v, &path, port_names);
                    out.insert("httpGet".into(), h);
                }
                _ => {
                    if let Some(n) = self.int(v, &path) {
                        out.insert(k.into(), n.into());
                    }
                }
            }
        }
        out.into()
    }

    fn http_get(&mut self, v: &Value, at: &str, port_names: &[(String, i64)]) -> Value {
        let mut out = Map::new();
        for (k, f) in self.fields(v, at, &["path", "port", "scheme", "httpHeaders"], &[]) {
            let path = format!("{at}.{k}");
            match k {
                "port" => {
                    // A probe may name a container port instead of numbering it.
                    let named = f.as_str().filter(|s| s.parse::<i64>().is_err());
                    let n = match named {
                        Some(name) => match port_names.iter().find(|(n, _)| n == name) {
                            Some((_, p)) => Some(*p),
                            None => {
                                self.invalid(&path, format!("names no port of this container ('{name}')"));
                                None
                            }
                        },
                        None => self.int(f, &path),
                    };
                    if let Some(n) = n {
                        out.insert("port".into(), n.into());
                    }
                }
                "httpHeaders" => {
                    let items = self.list(f, &path);
                    let mut hs = Vec::new();
                    for (i, h) in items.iter().enumerate() {
                        let hat = format!("{path}[{i}]");
                        let mut hv = Map::new();
                        for (hk, x) in self.fields(h, &hat, &["name", "value"], &[]) {
                            if let Some(s) = self.string(x, &format!("{hat}.{hk}")) {
                                hv.insert(hk.into(), s.into());
                            }
                        }
                        hs.push(Value::from(hv));
                    }
                    out.insert("httpHeaders".into(), hs.into());
                }
                _ => {
                    if let Some(s) = self.string(f, &path) {
                        out.insert(k.into(), s.into());
                    }
                }
            }
        }
        if !out.contains_key("port") && !self.err.invalid.iter().any(|e| e.starts_with(&format!("{at}.port"))) {
            self.invalid(&format!("{at}.port"), "is required");
        }
        out.into()
    }

    fn security_context(&mut self, v: &Value, at: &str) -> Value {
        let mut out = Map::new();
        for (k, f) in self.fields(v, at, &["privileged", "allowPrivilegeEscalation", "runAsUser", "runAsGroup", "capabilities"], &[]) {
            let path = format!("{at}.{k}");
            match k {
                "privileged" | "allowPrivilegeEscalation" => {
                    if let Some(b) = self.bool(f, &path) {
                        out.insert(k.into(), b.into());
                    }
                }
                "runAsUser" | "runAsGroup" => {
                    if let Some(n) = self.int(f, &path) {
                        out.insert(k.into(), n.into());
                    }
                }
                _ => {
                    let mut caps = Map::new();
                    for (ck, cv) in self.fields(f, &path, &["add", "drop"], &[]) {
                        let list = self.strings(cv, &format!("{path}.{ck}"));
                        caps.insert(ck.into(), list.into());
                    }
                    out.insert("capabilities".into(), caps.into());
                }
            }
        }
        out.into()
    }

    fn volume(&mut self, v: &Value, at: &str) -> Value {
        let mut out = Map::new();
        for (k, f) in self.fields(v, at, &["name", "emptyDir", "gitRepo"], &[]) {
            let path = format!("{at}.{k}");
            match k {
                "name" => {
                    if let Some(n) = self.string(f, &path) {
                        out.insert("name".into(), n.into());
                    }
                }
                "emptyDir" => {
                    // Only a disk-backed, unbounded emptyDir is what ACI's emptyDir is.
                    self.fields(f, &path, &[], &[]);
                    out.insert("emptyDir".into(), Value::Object(Map::new()));
                }
                _ => {
                    let mut g = Map::new();
                    for (gk, gv) in self.fields(f, &path, &["repository", "revision", "directory"], &[]) {
                        if let Some(s) = self.string(gv, &format!("{path}.{gk}")) {
                            g.insert(gk.into(), s.into());
                        }
                    }
                    out.insert("gitRepo".into(), g.into());
                }
            }
        }
        // `emptyDir: {}` is "set" in Kubernetes even though it is an empty mapping.
        if v.get("emptyDir").is_some_and(|e| e.as_object().is_some_and(Map::is_empty)) {
            out.insert("emptyDir".into(), Value::Object(Map::new()));
        }
        if !out.contains_key("name") {
            self.invalid(&format!("{at}.name"), "is required");
        }
        out.into()
    }

    fn dns_config(&mut self, v: &Value) -> Value {
        let mut out = Map::new();
        for (k, f) in self.fields(v, "spec.dnsConfig", &["nameservers", "searches", "options"], &[]) {
            let path = format!("spec.dnsConfig.{k}");
            match k {
                "nameservers" => {
                    let s = self.strings(f, &path);
                    out.insert("nameServers".into(), s.into());
                }
                "searches" => {
                    let s = self.strings(f, &path);
                    out.insert("searchDomains".into(), s.join(" ").into());
                }
                _ => {
                    let items = self.list(f, &path);
                    let mut opts = Vec::new();
                    for (i, o) in items.iter().enumerate() {
                        let oat = format!("{path}[{i}]");
                        let (mut name, mut value) = (None, None);
                        for (ok, ov) in self.fields(o, &oat, &["name", "value"], &[]) {
                            let s = self.string(ov, &format!("{oat}.{ok}"));
                            if ok == "name" { name = s } else { value = s }
                        }
                        match (name, value) {
                            (Some(n), Some(v)) => opts.push(format!("{n}:{v}")),
                            (Some(n), None) => opts.push(n),
                            (None, _) => self.invalid(&format!("{oat}.name"), "is required"),
                        }
                    }
                    out.insert("options".into(), opts.join(" ").into());
                }
            }
        }
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(text: &str) -> Value {
        crate::build::parse_document(text).unwrap()
    }

    const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web, tier: 2}
  annotations:
    skiff.io/ip-address: Public
    skiff.io/dns-name-label: webby
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 30
  initContainers:
  - name: fetch
    image: busybox
    command: [sh, -c]
    args: ["echo init > /work/x"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: app
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: [httpd]
    args: [-f, -p, "8080"]
    env:
    - {name: MODE, value: prod}
    - {name: EMPTY}
    ports:
    - {containerPort: 8080, name: http}
    - {containerPort: 5353, protocol: UDP}
    resources:
      requests: {cpu: 250m, memory: 256Mi}
      limits: {cpu: "1", memory: 0.5Gi}
    livenessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 5
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
    securityContext: {runAsUser: 1000, capabilities: {drop: [NET_RAW]}}
    volumeMounts: [{name: work, mountPath: /work, readOnly: true}, {name: src, mountPath: /src}]
  - name: side
    image: busybox
    resources:
      limits: {cpu: 0.5, memory: 512Mi}
  volumes:
  - name: work
    emptyDir: {}
  - name: src
    gitRepo: {repository: "https://example.com/r.git", revision: main}
status:
  phase: Running
"#;

    #[test]
    fn maps_a_full_pod() {
        let pod = yaml(FULL);
        assert!(is_pod(&pod));
        let g = pod_to_group(&pod).unwrap();
        assert_eq!(g["apiVersion"], skiff_model::DEFAULT_API_VERSION);
        assert_eq!(g["name"], "web");
        assert_eq!(g["tags"], json!({"app": "web", "tier": "2"}));
        let p = &g["properties"];
        assert_eq!(p["osType"], "Linux");
        assert_eq!(p["restartPolicy"], "OnFailure");
        let app = &p["containers"][0];
        assert_eq!(app["name"], "app");
        assert_eq!(app["properties"]["command"], json!(["httpd", "-f", "-p", "8080"]));
        assert_eq!(app["properties"]["environmentVariables"], json!([{"name": "MODE", "value": "prod"}, {"name": "EMPTY", "value": ""}]));
        assert_eq!(app["properties"]["ports"], json!([{"port": 8080}, {"port": 5353, "protocol": "UDP"}]));
        assert_eq!(app["properties"]["resources"], json!({"requests": {"cpu": 0.25, "memoryInGB": 0.25}, "limits": {"cpu": 1.0, "memoryInGB": 0.5}}));
        assert_eq!(app["properties"]["livenessProbe"], json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}));
        assert_eq!(app["properties"]["readinessProbe"], json!({"exec": {"command": ["cat", "/tmp/ready"]}}));
        assert_eq!(app["properties"]["securityContext"], json!({"runAsUser": 1000, "capabilities": {"drop": ["NET_RAW"]}}));
        assert_eq!(app["properties"]["volumeMounts"][0], json!({"name": "work", "mountPath": "/work", "readOnly": true}));
        // Requests default to limits, as in Kubernetes.
        assert_eq!(p["containers"][1]["properties"]["resources"], json!({"requests": {"cpu": 0.5, "memoryInGB": 0.5}, "limits": {"cpu": 0.5, "memoryInGB": 0.5}}));
        assert_eq!(p["initContainers"][0]["properties"]["command"], json!(["sh", "-c", "echo init > /work/x"]));
        assert!(p["initContainers"][0]["properties"].get("resources").is_none());
        assert_eq!(p["volumes"], json!([{"name": "work", "emptyDir": {}}, {"name": "src", "gitRepo": {"repository": "https://example.com/r.git", "revision": "main"}}]));
        assert_eq!(p["ipAddress"], json!({"type": "Public", "ports": [{"port": 8080}, {"port": 5353, "protocol": "UDP"}], "dnsNameLabel": "webby"}));
    }

    /// A container's limit may not exceed the group (the sum of the requests), so the fixture's
    /// limits stay within it; a larger Kubernetes limit is refused by the server with
    /// InvalidContainerResourceLimits rather than silently raised or lowered here.
    #[test]
    fn the_mapped_document_passes_the_server_validator() {
        let g = pod_to_group(&yaml(FULL)).unwrap();
        let group: skiff_model::ContainerGroup = serde_json::from_value(g).unwrap();
        let ok = skiff_model::validate::validate_group(group, "web", &skiff_model::validate::Capacity::default()).unwrap();
        assert_eq!(ok.properties.containers.len(), 2);
    }

    #[test]
    fn a_minimal_pod_gets_acis_default_resources() {
        let g = pod_to_group(&yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec:\n  containers: [{name: c, image: busybox}]\n")).unwrap();
        let c = &g["properties"]["containers"][0]["properties"];
        assert_eq!(c["resources"], json!({"requests": {"cpu": 1.0, "memoryInGB": 1.5}}));
        assert!(c.get("command").is_none());
        assert!(g["properties"].get("restartPolicy").is_none());
    }

    #[test]
    fn one_error_lists_every_unsupported_field() {
        let pod = yaml(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: bad, generateName: x-, annotations: {skiff.io/ip-adress: Public}}
spec:
  nodeSelector: {disk: ssd}
  hostNetwork: true
  affinity: {}
  containers:
  - name: c
    image: busybox
    workingDir: /tmp
    env:
    - {name: A, value: "1"}
    - name: B
      valueFrom: {secretKeyRef: {name: s, key: k}}
    ports: [{containerPort: 80, hostPort: 8080}]
    resources: {limits: {nvidia.com/gpu: 1, cpu: 2x}}
    livenessProbe:
      tcpSocket: {port: 80}
    volumeMounts: [{name: cfg, mountPath: /cfg, subPath: a}]
  volumes:
  - name: cfg
    configMap: {name: cfg}
  - name: mem
    emptyDir: {medium: Memory}
"#,
        );
        let err = pod_to_group(&pod).unwrap_err();
        let expected = [
            "metadata.generateName",
            "metadata.annotations.skiff.io/ip-adress",
            "spec.nodeSelector",
            "spec.hostNetwork",
            "spec.containers[0].workingDir",
            "spec.containers[0].env[1].valueFrom",
            "spec.containers[0].ports[0].hostPort",
            "spec.containers[0].resources.limits.nvidia.com/gpu",
            "spec.containers[0].livenessProbe.tcpSocket",
            "spec.containers[0].volumeMounts[0].subPath",
            "spec.volumes[0].configMap",
            "spec.volumes[1].emptyDir.medium",
        ];
        for e in expected {
            assert!(err.unsupported.iter().any(|u| u == e), "{e} missing from {:?}", err.unsupported);
        }
        // `affinity: {}` is unset, as in Kubernetes.
        assert!(!err.unsupported.iter().any(|u| u.contains("affinity")));
        assert_eq!(err.invalid.len(), 1, "{:?}", err.invalid);
        assert!(err.invalid[0].starts_with("spec.containers[0].resources.limits.cpu: "), "{:?}", err.invalid);
        let text = err.to_string();
        assert!(text.contains("spec.nodeSelector") && text.contains("valueFrom") && text.contains("tcpSocket"), "{text}");
    }

    #[test]
    fn args_without_command_is_refused_with_the_reason() {
        let err = pod_to_group(&yaml("apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: c, image: busybox, args: [a]}]\n")).unwrap_err();
        assert!(err.unsupported.is_empty());
        assert_eq!(err.invalid.len(), 1);
        assert!(err.invalid[0].starts_with("spec.containers[0].args: ") && err.invalid[0].contains("entrypoint"), "{:?}", err.invalid);
    }

    #[test]
    fn invalid_values_are_reported_with_their_paths() {
        let err = pod_to_group(&yaml(
            "apiVersion: v1\nkind: Pod\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - {name: c, ports: [{protocol: TCP}], livenessProbe: {httpGet: {port: web}}}\n",
        ))
        .unwrap_err();
        for want in ["spec.restartPolicy: ", "spec.containers[0].image: ", "spec.containers[0].ports[0].containerPort: ", "spec.containers[0].livenessProbe.httpGet.port: "] {
            assert!(err.invalid.iter().any(|i| i.starts_with(want)), "{want} missing from {:?}", err.invalid);
        }
        assert!(pod_to_group(&yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")).unwrap_err().invalid.iter().any(|i| i.starts_with("spec: ")));
    }

    #[test]
    fn stdin_is_mapped_for_app_containers_only() {
        let g = pod_to_group(&yaml("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - {name: c, image: busybox, stdin: true}\n")).unwrap();
        assert_eq!(g["properties"]["containers"][0]["properties"]["stdin"], json!(true));
        let err = pod_to_group(&yaml("apiVersion: v1\nkind: Pod\nspec:\n  initContainers:\n  - {name: i, image: busybox, stdin: true}\n  containers:\n  - {name: c, image: busybox, stdin: maybe}\n")).unwrap_err();
        assert!(err.unsupported.iter().any(|u| u.contains("initContainers[0].stdin")), "{err:?}");
        assert!(err.invalid.iter().any(|i| i.starts_with("spec.containers[0].stdin: ")), "{err:?}");
    }

    #[test]
    fn only_v1_pods_are_pods() {
        assert!(!is_pod(&json!({"apiVersion": "2023-05-01", "properties": {}})));
        assert!(!is_pod(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})));
        assert!(is_pod(&json!({"apiVersion": "v1", "kind": "Pod"})));
    }
}
