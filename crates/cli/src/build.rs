//! Arguments → request documents, and deployment files in and out. Pure: no I/O except what
//! the caller passes in.

use serde_json::{Map, Value};
use skiff_model::arm::{
    Container, ContainerGroup, ContainerProperties, EnvironmentVariable, GroupProperties, ImageRegistryCredential, IpAddress,
    Port, ResourceRequests, ResourceRequirements,
};

use crate::error::CliError;
use crate::{CreateArgs, IpAddressType, OsType, Protocol, RestartPolicy};

/// `--command-line` → exec-form `command[]`, split like a POSIX shell (az uses `shlex.split`).
pub fn split_command_line(line: &str) -> Result<Vec<String>, CliError> {
    let parts = shlex::split(line)
        .ok_or_else(|| CliError::usage(format!("--command-line: cannot split {line:?} (unbalanced quotes or trailing backslash)")))?;
    if parts.is_empty() {
        return Err(CliError::usage("--command-line is empty"));
    }
    Ok(parts)
}

/// `NAME=VALUE` items (split at the first `=`; `NAME=` gives an empty value). `secure` puts
/// the value into `secureValue`.
pub fn parse_env(items: &[String], secure: bool) -> Result<Vec<EnvironmentVariable>, CliError> {
    let flag = if secure { "--secure-environment-variables" } else { "--environment-variables" };
    items
        .iter()
        .map(|item| {
            let Some((name, value)) = item.split_once('=') else {
                // Never echo a secure item: it may be a value typed in the wrong place.
                let shown = if secure { "<hidden>".to_string() } else { format!("'{item}'") };
                return Err(CliError::usage(format!("{flag}: {shown} is not in the form NAME=VALUE")));
            };
            if name.is_empty() {
                return Err(CliError::usage(format!("{flag}: a variable name is empty (expected NAME=VALUE)")));
            }
            let value = value.to_string();
            Ok(if secure {
                EnvironmentVariable { name: name.to_string(), value: None, secure_value: Some(value) }
            } else {
                EnvironmentVariable { name: name.to_string(), value: Some(value), secure_value: None }
            })
        })
        .collect()
}

/// The registry credential az builds from `--registry-*` flags. The login server is taken
/// from the flag, else inferred from the image's first path component when it is a host
/// (contains `.azurecr.io`, or, when username and password are given, a `.` or a `:`).
pub fn registry_credentials(
    image: &str,
    login_server: Option<&str>,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Option<ImageRegistryCredential>, CliError> {
    let first = image.split('/').next().unwrap_or("");
    let image_host = image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let server = match login_server {
        Some(s) => Some(s.to_string()),
        None if image_host && first.contains(".azurecr.io") => Some(first.to_string()),
        None if image_host && username.is_some() && password.is_some() => Some(first.to_string()),
        None => None,
    };
    let Some(server) = server else {
        if username.is_some() || password.is_some() {
            return Err(CliError::usage(
                "--registry-login-server is required: it cannot be inferred from the image (give a registry host in the image name or the flag)",
            ));
        }
        return Ok(None);
    };
    if username.is_none() && password.is_none() && login_server.is_none() {
        // Inferred from an ACR image name without credentials: nothing to send.
        return Ok(None);
    }
    let Some(username) = username else {
        return Err(CliError::usage("--registry-username is required with --registry-login-server"));
    };
    let Some(password) = password else {
        return Err(CliError::usage("--registry-password is required with --registry-username"));
    };
    let server = server.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_string();
    Ok(Some(ImageRegistryCredential {
        server,
        username: Some(username.to_string()),
        password: Some(password.to_string()),
        identity: None,
        identity_url: None,
    }))
}

fn os_type_str(o: OsType) -> &'static str {
    match o {
        OsType::Linux => "Linux",
        OsType::Windows => "Windows",
    }
}

fn restart_policy_str(r: RestartPolicy) -> &'static str {
    match r {
        RestartPolicy::Always => "Always",
        RestartPolicy::OnFailure => "OnFailure",
        RestartPolicy::Never => "Never",
    }
}

fn protocol_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// The container group `az container create` sends for these flags: one container named after
/// the group; ports on the container only when an IP address is requested (`--ip-address` or
/// `--dns-name-label`, which implies Public); default port 80.
pub fn build_group(args: &CreateArgs, name: &str, location: &str) -> Result<ContainerGroup, CliError> {
    let image = args.image.as_deref().filter(|i| !i.trim().is_empty()).ok_or_else(|| CliError::usage("--image is required"))?;
    if !args.cpu.is_finite() || args.cpu <= 0.0 {
        return Err(CliError::usage("--cpu must be a positive number"));
    }
    if !args.memory.is_finite() || args.memory <= 0.0 {
        return Err(CliError::usage("--memory must be a positive number (GB)"));
    }
    let command = args.command_line.as_deref().map(split_command_line).transpose()?;
    let mut env = parse_env(&args.environment_variables, false)?;
    env.extend(parse_env(&args.secure_environment_variables, true)?);

    let ip_type = match (args.ip_address, &args.dns_name_label) {
        (Some(IpAddressType::Private), Some(_)) => {
            return Err(CliError::usage("--dns-name-label requires a Public IP address"));
        }
        (Some(IpAddressType::Private), None) => Some("Private"),
        (Some(IpAddressType::Public), _) | (None, Some(_)) => Some("Public"),
        (None, None) => None,
    };
    let ports: Vec<Port> = if args.ports.is_empty() { vec![80] } else { args.ports.clone() }
        .into_iter()
        .map(|p| Port { protocol: Some(protocol_str(args.protocol).to_string()), port: i64::from(p) })
        .collect();
    let ip_address = ip_type.map(|t| IpAddress {
        ports: ports.clone(),
        address_type: t.to_string(),
        dns_name_label: args.dns_name_label.clone(),
        ..Default::default()
    });

    let (volumes, volume_mounts) = crate::volumes::volumes_from_args(args)?;
    let creds = registry_credentials(
        image,
        args.registry_login_server.as_deref(),
        args.registry_username.as_deref(),
        args.registry_password.as_deref(),
    )?;

    Ok(ContainerGroup {
        location: Some(location.to_string()),
        properties: GroupProperties {
            containers: vec![Container {
                name: name.to_string(),
                properties: ContainerProperties {
                    image: image.to_string(),
                    command,
                    ports: ip_address.is_some().then_some(ports),
                    environment_variables: Some(env),
                    volume_mounts: (!volume_mounts.is_empty()).then_some(volume_mounts),
                    resources: ResourceRequirements {
                        requests: ResourceRequests { memory_in_gb: args.memory, cpu: args.cpu, gpu: None },
                        limits: None,
                    },
                    ..Default::default()
                },
            }],
            image_registry_credentials: creds.map(|c| vec![c]),
            restart_policy: Some(restart_policy_str(args.restart_policy).to_string()),
            ip_address,
            os_type: os_type_str(args.os_type).to_string(),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Parse a deployment file: JSON when it looks like JSON, YAML otherwise. Must be a mapping.
pub fn parse_document(text: &str) -> Result<Value, CliError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let doc: Value = if trimmed.starts_with('{') {
        serde_json::from_str(trimmed).map_err(|e| CliError::usage(format!("invalid JSON: {e}")))?
    } else {
        serde_saphyr::from_str(trimmed).map_err(|e| CliError::usage(format!("invalid YAML: {e}")))?
    };
    if !doc.is_object() {
        return Err(CliError::usage("the deployment file must contain a mapping (apiVersion, name, properties, ...)"));
    }
    Ok(doc)
}

/// A deployment file ready to PUT.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDeployment {
    pub name: String,
    pub api_version: String,
    /// The whole document (apiVersion, type, ... included), as az sends it.
    pub body: Value,
}

/// Check `name` against `-n`, pick `apiVersion`, fill `location` when absent. No other
/// client-side validation (like az): the server validates.
pub fn prepare_file_document(mut doc: Value, cli_name: Option<&str>, location: Option<&str>) -> Result<FileDeployment, CliError> {
    let obj = doc.as_object_mut().ok_or_else(|| CliError::usage("the deployment file must contain a mapping"))?;
    let file_name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(CliError::usage("the deployment file's `name` must be a string")),
    };
    let name = match (file_name, cli_name) {
        (Some(f), Some(n)) if f != n => {
            return Err(CliError::usage(format!(
                "the name in the deployment file ('{f}') does not match --name ('{n}')"
            )))
        }
        (Some(f), _) => f,
        (None, Some(n)) => n.to_string(),
        (None, None) => return Err(CliError::usage("the container group name is required: give --name or `name` in the file")),
    };
    let api_version = match obj.get("apiVersion") {
        None | Some(Value::Null) => skiff_model::DEFAULT_API_VERSION.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(other) => return Err(CliError::usage(format!("the deployment file's `apiVersion` must be a string, got {other}"))),
    };
    let has_location = matches!(obj.get("location"), Some(Value::String(s)) if !s.is_empty());
    if !has_location {
        if let Some(l) = location {
            obj.insert("location".into(), Value::String(l.to_string()));
        }
    }
    Ok(FileDeployment { name, api_version, body: doc })
}

/// What `az container export` writes: the GET document without `id`, `instanceView`s,
/// `provisioningState` and `sku`, with `apiVersion` first.
pub fn export_document(group: &Value, api_version: &str) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.to_string()));
    if let Some(obj) = group.as_object() {
        for (k, v) in obj {
            if matches!(k.as_str(), "id" | "sku" | "apiVersion") {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(props) = out.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("instanceView");
        props.remove("provisioningState");
        props.remove("sku");
        for key in ["containers", "initContainers"] {
            for c in props.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(cp) = c.get_mut("properties").and_then(Value::as_object_mut) {
                    cp.remove("instanceView");
                }
            }
        }
    }
    Value::Object(out)
}

/// Serialize to YAML.
pub fn to_yaml(v: &Value) -> Result<String, CliError> {
    serde_saphyr::to_string(v).map_err(|e| CliError::usage(format!("cannot write YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command, ContainerCommand};
    use clap::Parser;
    use serde_json::json;

    fn create_args(extra: &[&str]) -> CreateArgs {
        let mut argv = vec!["skiff", "container", "create", "-g", "rg"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Container(ContainerCommand::Create(a)) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_line_is_split_like_a_shell() {
        assert_eq!(split_command_line("sh -c 'echo hi; sleep 1'").unwrap(), vec!["sh", "-c", "echo hi; sleep 1"]);
        assert_eq!(split_command_line(r#"/bin/echo "a b" c\ d"#).unwrap(), vec!["/bin/echo", "a b", "c d"]);
        assert!(split_command_line("sh -c 'unterminated").is_err());
        assert!(split_command_line("   ").is_err());
    }

    #[test]
    fn env_items() {
        let v = parse_env(&["A=1".into(), "B=".into(), "C=x=y".into()], false).unwrap();
        assert_eq!(v[0], EnvironmentVariable { name: "A".into(), value: Some("1".into()), secure_value: None });
        assert_eq!(v[1].value.as_deref(), Some(""));
        assert_eq!(v[2].value.as_deref(), Some("x=y"));
        let e = parse_env(&["A".into()], false).unwrap_err().to_string();
        assert!(e.contains("'A'") && e.contains("NAME=VALUE"), "{e}");
        assert!(parse_env(&["=1".into()], false).is_err());
        let s = parse_env(&["K=secret".into()], true).unwrap();
        assert_eq!(s[0], EnvironmentVariable { name: "K".into(), value: None, secure_value: Some("secret".into()) });
        let e = parse_env(&["topsecret".into()], true).unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn defaults_match_az() {
        let a = create_args(&["-n", "web", "--image", "nginx"]);
        let g = build_group(&a, "web", "westus").unwrap();
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(
            v,
            json!({
                "location": "westus",
                "properties": {
                    "containers": [{"name": "web", "properties": {
                        "image": "nginx",
                        "environmentVariables": [],
                        "resources": {"requests": {"memoryInGB": 1.5, "cpu": 1.0}}
                    }}],
                    "restartPolicy": "Always",
                    "osType": "Linux"
                }
            })
        );
    }

    #[test]
    fn ports_only_with_an_ip_address() {
        let a = create_args(&["-n", "web", "--image", "nginx", "--ports", "80", "443"]);
        let g = build_group(&a, "web", "westus").unwrap();
        assert!(g.properties.ip_address.is_none());
        assert!(g.properties.containers[0].properties.ports.is_none());

        let a = create_args(&["-n", "web", "--image", "nginx", "--ports", "53", "--protocol", "UDP", "--ip-address", "Public"]);
        let g = build_group(&a, "web", "westus").unwrap();
        let ip = g.properties.ip_address.unwrap();
        assert_eq!(ip.address_type, "Public");
        assert_eq!(ip.ports, vec![Port { protocol: Some("UDP".into()), port: 53 }]);
        assert_eq!(g.properties.containers[0].properties.ports.as_ref().unwrap(), &ip.ports);

        // --dns-name-label implies Public, default port 80/TCP.
        let a = create_args(&["-n", "web", "--image", "nginx", "--dns-name-label", "myapp"]);
        let ip = build_group(&a, "web", "westus").unwrap().properties.ip_address.unwrap();
        assert_eq!((ip.address_type.as_str(), ip.dns_name_label.as_deref()), ("Public", Some("myapp")));
        assert_eq!(ip.ports, vec![Port { protocol: Some("TCP".into()), port: 80 }]);

        let a = create_args(&["-n", "w", "--image", "i", "--dns-name-label", "x", "--ip-address", "Private"]);
        assert!(build_group(&a, "w", "westus").is_err());
        assert!(Cli::try_parse_from(["skiff", "container", "create", "-g", "r", "--image", "i", "--ports", "0"]).is_err());
    }

    #[test]
    fn full_flag_set() {
        let a = create_args(&[
            "-n", "job", "--image", "reg.example.com:5000/app:v1", "--cpu", "0.5", "--memory", "2", "--restart-policy", "Never",
            "--command-line", "sh -c 'echo hi'", "-e", "A=1", "B=", "--secure-environment-variables", "S=x",
            "--registry-username", "u", "--registry-password", "p", "--os-type", "Linux",
        ]);
        let g = build_group(&a, "job", "eastus").unwrap();
        let c = &g.properties.containers[0].properties;
        assert_eq!(c.command.as_ref().unwrap(), &vec!["sh".to_string(), "-c".into(), "echo hi".into()]);
        assert_eq!(c.resources.requests.cpu, 0.5);
        assert_eq!(c.resources.requests.memory_in_gb, 2.0);
        let env = c.environment_variables.as_ref().unwrap();
        assert_eq!(env.len(), 3);
        assert_eq!(env[2].secure_value.as_deref(), Some("x"));
        assert_eq!(g.properties.restart_policy.as_deref(), Some("Never"));
        let cred = &g.properties.image_registry_credentials.as_ref().unwrap()[0];
        assert_eq!(cred.server, "reg.example.com:5000");
        assert_eq!(cred.username.as_deref(), Some("u"));
        assert_eq!(cred.password.as_deref(), Some("p"));
    }

    #[test]
    fn registry_credential_rules() {
        assert_eq!(registry_credentials("nginx", None, None, None).unwrap(), None);
        assert_eq!(registry_credentials("myacr.azurecr.io/app", None, None, None).unwrap(), None);
        let c = registry_credentials("myacr.azurecr.io/app", None, Some("u"), Some("p")).unwrap().unwrap();
        assert_eq!(c.server, "myacr.azurecr.io");
        let c = registry_credentials("app", Some("https://r.example.com/"), Some("u"), Some("p")).unwrap().unwrap();
        assert_eq!(c.server, "r.example.com");
        // Docker Hub style image with credentials but no server: cannot infer.
        assert!(registry_credentials("library/app", None, Some("u"), Some("p")).is_err());
        assert!(registry_credentials("r.io/app", Some("r.io"), None, None).is_err());
        assert!(registry_credentials("r.io/app", Some("r.io"), Some("u"), None).is_err());
    }

    const YAML: &str = "\
apiVersion: '2021-10-01'
name: mygroup
type: Microsoft.ContainerInstance/containerGroups
tags: {}
properties:
  osType: Linux
  containers:
  - name: web
    properties:
      image: nginx
      ports: [{port: 80, protocol: TCP}]
      resources: {requests: {cpu: 1.0, memoryInGB: 1.5}}
      environmentVariables: [{name: A, value: 'b'}, {name: N, value: '0123'}]
  ipAddress: {type: Public, ports: [{port: 80}]}
";

    #[test]
    fn yaml_file_is_sent_verbatim() {
        let doc = parse_document(YAML).unwrap();
        assert_eq!(doc["properties"]["containers"][0]["properties"]["ports"][0]["port"], json!(80));
        assert_eq!(doc["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"], json!(1.0));
        assert_eq!(doc["properties"]["containers"][0]["properties"]["environmentVariables"][1]["value"], json!("0123"));
        let d = prepare_file_document(doc.clone(), None, Some("eastus")).unwrap();
        assert_eq!(d.name, "mygroup");
        assert_eq!(d.api_version, "2021-10-01");
        assert_eq!(d.body["type"], json!("Microsoft.ContainerInstance/containerGroups"));
        assert_eq!(d.body["apiVersion"], json!("2021-10-01"));
        assert_eq!(d.body["location"], json!("eastus"));
        assert_eq!(d.body["tags"], json!({}));
        // Matching -n is fine, a different one is not.
        assert!(prepare_file_document(doc.clone(), Some("mygroup"), None).is_ok());
        let e = prepare_file_document(doc, Some("other"), None).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn file_defaults_and_json() {
        let doc = parse_document(r#"{"location":"northeurope","properties":{"osType":"Linux","containers":[]}}"#).unwrap();
        let d = prepare_file_document(doc, Some("g"), Some("eastus")).unwrap();
        assert_eq!(d.name, "g");
        assert_eq!(d.api_version, "2023-05-01");
        assert_eq!(d.body["location"], json!("northeurope"));
        assert!(prepare_file_document(parse_document("properties: {}").unwrap(), None, None).is_err());
        assert!(parse_document("- a\n- b\n").is_err());
        assert!(parse_document("a: [unclosed").is_err());
    }

    #[test]
    fn export_drops_read_only_fields_and_round_trips() {
        let g = json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/web",
            "name": "web", "type": "Microsoft.ContainerInstance/containerGroups", "location": "westus",
            "properties": {
                "provisioningState": "Succeeded", "sku": "Standard", "osType": "Linux",
                "containers": [{"name": "web", "properties": {"image": "nginx", "instanceView": {"restartCount": 0},
                    "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}},
                    "environmentVariables": [{"name": "S"}]}}],
                "instanceView": {"state": "Running", "events": []}
            }
        });
        let e = export_document(&g, "2023-05-01");
        assert_eq!(e.as_object().unwrap().keys().next().unwrap(), "apiVersion");
        assert!(e.get("id").is_none());
        let p = &e["properties"];
        assert!(p.get("instanceView").is_none() && p.get("provisioningState").is_none() && p.get("sku").is_none());
        assert!(p["containers"][0]["properties"].get("instanceView").is_none());
        assert_eq!(e["name"], json!("web"));
        let yaml = to_yaml(&e).unwrap();
        let back = parse_document(&yaml).unwrap();
        assert_eq!(back, e, "{yaml}");
        let d = prepare_file_document(back, Some("web"), None).unwrap();
        assert_eq!(d.api_version, "2023-05-01");
    }
}
