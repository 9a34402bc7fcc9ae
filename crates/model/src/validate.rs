//! Validation and normalisation of a container group document. Pure: the same input always
//! gives the same answer, so the API can reject bad input before anything is stored.

use std::collections::{BTreeSet, HashSet};

use crate::arm::*;
use crate::error::ArmError;
use crate::image_ref::ImageRef;
use crate::names;

/// What this host can give one group (the `capabilities` API reports the same numbers).
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub max_cpu_per_group: f64,
    pub max_memory_gb_per_group: f64,
    pub max_containers_per_group: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity { max_cpu_per_group: 4.0, max_memory_gb_per_group: 16.0, max_containers_per_group: 60 }
    }
}

pub const MIN_CPU: f64 = 0.01;
pub const MIN_MEMORY_GB: f64 = 0.1;

fn canonical(value: &str, allowed: &[&'static str]) -> Option<&'static str> {
    allowed.iter().copied().find(|a| a.eq_ignore_ascii_case(value))
}

fn enum_error(field: &str, value: &str, allowed: &[&str]) -> ArmError {
    ArmError::invalid_content(format!("The value '{value}' of '{field}' is invalid. Allowed values are: {}.", allowed.join(", "))).with_target(field)
}

fn normalize_enum(field: &str, value: &mut String, allowed: &[&'static str]) -> Result<(), ArmError> {
    match canonical(value, allowed) {
        Some(c) => {
            *value = c.to_string();
            Ok(())
        }
        None => Err(enum_error(field, value, allowed)),
    }
}

/// Parse a request body into a group, with a message that names the offending field.
pub fn parse_group(body: &[u8]) -> Result<ContainerGroup, ArmError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path.is_empty() || path == "." { format!("The request content was invalid and could not be deserialized: {inner}") } else { format!("The request content was invalid and could not be deserialized: '{path}': {inner}") };
        ArmError::invalid_content(msg)
    })
}

/// Check a group that is about to be created or replaced, fill ARM's defaults and canonical
/// casing, and return the normalised document. `name` is the name from the request path.
pub fn validate_group(mut g: ContainerGroup, name: &str, cap: &Capacity) -> Result<ContainerGroup, ArmError> {
    names::validate_group_name(name)?;
    g.strip_read_only();
    validate_tags(g.tags.as_ref())?;
    validate_sandbox(g.tags.as_ref())?;
    let p = &mut g.properties;

    if p.os_type.is_empty() {
        return Err(ArmError::invalid_content("The 'properties.osType' field is required.").with_target("properties.osType"));
    }
    normalize_enum("properties.osType", &mut p.os_type, &["Linux", "Windows"])?;
    if p.os_type == "Windows" {
        return Err(ArmError::bad_request(
            "OsTypeNotSupported",
            "The container group has osType 'Windows', which is not supported on this host. Skiff runs Linux containers only.",
        )
        .with_target("properties.osType"));
    }
    let restart = p.restart_policy.get_or_insert_with(|| "Always".to_string());
    normalize_enum("properties.restartPolicy", restart, &["Always", "OnFailure", "Never"])?;
    let sku = p.sku.get_or_insert_with(|| "Standard".to_string());
    normalize_enum("properties.sku", sku, &["Standard", "Dedicated", "Confidential"])?;
    if sku != "Standard" {
        return Err(ArmError::bad_request("UnsupportedSku", format!("The sku '{sku}' is not supported on this host; use 'Standard'.")).with_target("properties.sku"));
    }
    if let Some(prio) = p.priority.as_mut() {
        normalize_enum("properties.priority", prio, &["Regular", "Spot"])?;
    }

    if p.containers.is_empty() {
        return Err(ArmError::invalid_content("The container group must have at least one container in 'properties.containers'.").with_target("properties.containers"));
    }
    let n_init = p.init_containers.as_ref().map_or(0, Vec::len);
    if p.containers.len() + n_init > cap.max_containers_per_group {
        return Err(ArmError::bad_request("TooManyContainers", format!("A container group can have at most {} containers.", cap.max_containers_per_group)));
    }

    let volumes = validate_volumes(p.volumes.as_mut())?;
    let mut seen_names = HashSet::new();
    let mut seen_ports: BTreeSet<(i64, String)> = BTreeSet::new();
    let (mut cpu_sum, mut mem_sum) = (0.0, 0.0);
    for (i, c) in p.containers.iter_mut().enumerate() {
        let at = format!("properties.containers[{i}]");
        names::validate_container_name(&c.name).map_err(|e| e.with_target(format!("{at}.name")))?;
        if !seen_names.insert(c.name.clone()) {
            return Err(ArmError::bad_request("DuplicateContainerName", format!("The container name '{}' is used more than once in the container group.", c.name)).with_target(format!("{at}.name")));
        }
        let cp = &mut c.properties;
        validate_image(&cp.image, &format!("{at}.properties.image"))?;
        validate_env(cp.environment_variables.as_ref(), &at)?;
        validate_mounts(cp.volume_mounts.as_ref(), &volumes, &at)?;
        let (cpu, mem) = validate_resources(&cp.resources, &c.name, &at, cap)?;
        cpu_sum += cpu;
        mem_sum += mem;
        for (j, port) in cp.ports.iter_mut().flatten().enumerate() {
            let pat = format!("{at}.properties.ports[{j}]");
            validate_port(port, &pat)?;
            let key = (port.port, port.protocol_or_default());
            if !seen_ports.insert(key.clone()) {
                return Err(ArmError::bad_request(
                    "DuplicateContainerPorts",
                    format!("The port {} ({}) is used by more than one container in the group. Containers in a group share one network namespace, so each port may be used once.", key.0, key.1),
                )
                .with_target(pat));
            }
        }
        if let Some(sc) = &cp.security_context {
            validate_security_context(sc, &at)?;
        }
        for (field, probe) in [("livenessProbe", &cp.liveness_probe), ("readinessProbe", &cp.readiness_probe)] {
            if let Some(probe) = probe {
                validate_probe(probe, &format!("{at}.properties.{field}"))?;
            }
        }
    }
    for (i, c) in p.init_containers.iter_mut().flatten().enumerate() {
        let at = format!("properties.initContainers[{i}]");
        names::validate_container_name(&c.name).map_err(|e| e.with_target(format!("{at}.name")))?;
        if !seen_names.insert(c.name.clone()) {
            return Err(ArmError::bad_request("DuplicateContainerName", format!("The container name '{}' is used more than once in the container group.", c.name)).with_target(format!("{at}.name")));
        }
        let image = c.properties.image.as_deref().unwrap_or("");
        validate_image(image, &format!("{at}.properties.image"))?;
        validate_env(c.properties.environment_variables.as_ref(), &at)?;
        validate_mounts(c.properties.volume_mounts.as_ref(), &volumes, &at)?;
    }
    let cores = crate::resources::group_cores(p.containers.iter().map(|c| c.properties.resources.requests.cpu));
    if cores as f64 > cap.max_cpu_per_group + 1e-9 || cpu_sum > cap.max_cpu_per_group + 1e-9 {
        return Err(ArmError::bad_request(
            "ResourceRequestsExceedCapacity",
            format!("The container group requests {cpu_sum} CPU ({cores} cores after rounding up), more than the {} cores a group may have on this host.", cap.max_cpu_per_group),
        ));
    }
    if mem_sum > cap.max_memory_gb_per_group + 1e-9 {
        return Err(ArmError::bad_request(
            "ResourceRequestsExceedCapacity",
            format!("The container group requests {mem_sum} GB of memory, more than the {} GB a group may have on this host.", cap.max_memory_gb_per_group),
        ));
    }
    for c in &p.containers {
        if let Some(l) = &c.properties.resources.limits {
            if l.memory_in_gb.is_some_and(|m| m > mem_sum + 1e-9) || l.cpu.is_some_and(|x| x > cores as f64 + 1e-9) {
                return Err(ArmError::bad_request(
                    "InvalidContainerResourceLimits",
                    format!("The resource limits of container '{}' exceed the resources of the container group ({cores} CPU, {mem_sum} GB).", c.name),
                ));
            }
        }
    }
    if let Some(ip) = p.ip_address.as_mut() {
        let container_ports: BTreeSet<(i64, String)> = seen_ports;
        validate_ip_address(ip, &container_ports)?;
    }
    for (i, cred) in p.image_registry_credentials.iter().flatten().enumerate() {
        let at = format!("properties.imageRegistryCredentials[{i}].server");
        if cred.server.is_empty() || cred.server.contains("://") || cred.server.contains('/') || cred.server.chars().any(char::is_whitespace) {
            return Err(ArmError::invalid_content(format!("The image registry server '{}' is invalid. Give a host name with an optional port and no scheme, e.g. 'myregistry.example.com:5000'.", cred.server)).with_target(at));
        }
    }
    if let Some(dns) = &p.dns_config {
        if dns.name_servers.is_empty() || dns.name_servers.iter().any(|s| s.parse::<std::net::IpAddr>().is_err()) {
            return Err(ArmError::invalid_content("'properties.dnsConfig.nameServers' must list one or more IP addresses.").with_target("properties.dnsConfig.nameServers"));
        }
    }
    Ok(g)
}

fn validate_tags(tags: Option<&std::collections::BTreeMap<String, String>>) -> Result<(), ArmError> {
    let Some(tags) = tags else { return Ok(()) };
    if tags.len() > 50 {
        return Err(ArmError::bad_request("InvalidTag", "A resource can have at most 50 tags."));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 512 || v.chars().count() > 256 || k.contains(['<', '>', '%', '&', '\\', '?', '/']) {
            return Err(ArmError::bad_request("InvalidTagNameCharacters", format!("The tag '{k}' is invalid: names are 1-512 characters without <>%&\\?/ and values at most 256 characters.")));
        }
    }
    Ok(())
}

/// Tag a group sets to ask for a sandbox tier (Skiff extension).
pub const SANDBOX_TAG: &str = "skiff-sandbox";
/// Sandbox tiers Skiff knows, and whether this build can run them (docs/ISOLATION.md).
pub const SANDBOX_TIERS: &[(&str, bool)] = &[("container", true), ("vm", false)];

/// Check a sandbox tier name: known and runnable here.
pub fn check_sandbox(tier: &str) -> Result<(), ArmError> {
    match SANDBOX_TIERS.iter().find(|(name, _)| name.eq_ignore_ascii_case(tier)) {
        Some((_, true)) => Ok(()),
        Some((name, false)) => Err(ArmError::bad_request(
            "SandboxNotAvailable",
            format!("The sandbox tier '{name}' is designed (see docs/ISOLATION.md) but cannot run on this host; use 'container'."),
        )),
        None => Err(ArmError::bad_request(
            "InvalidSandbox",
            format!("The sandbox tier '{tier}' is unknown. Known tiers: {}.", SANDBOX_TIERS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
        )),
    }
}

fn validate_sandbox(tags: Option<&std::collections::BTreeMap<String, String>>) -> Result<(), ArmError> {
    match tags.and_then(|t| t.iter().find(|(k, _)| k.eq_ignore_ascii_case(SANDBOX_TAG))) {
        Some((_, tier)) => check_sandbox(tier).map_err(|e| e.with_target(format!("tags.{SANDBOX_TAG}"))),
        None => Ok(()),
    }
}

pub fn validate_tags_patch(patch: &TagsPatch) -> Result<(), ArmError> {
    validate_tags(patch.tags.as_ref())
}

fn validate_image(image: &str, at: &str) -> Result<(), ArmError> {
    if image.is_empty() {
        return Err(ArmError::invalid_content(format!("The image of '{at}' is required.")).with_target(at));
    }
    ImageRef::parse(image).map_err(|e| ArmError::bad_request("InvalidImageName", format!("The image '{image}' is invalid: {}.", e.reason)).with_target(at))?;
    Ok(())
}

fn validate_env(env: Option<&Vec<EnvironmentVariable>>, at: &str) -> Result<(), ArmError> {
    let mut seen = HashSet::new();
    for (i, v) in env.into_iter().flatten().enumerate() {
        let vat = format!("{at}.properties.environmentVariables[{i}]");
        if v.name.is_empty() || v.name.contains('=') || v.name.contains('\0') {
            return Err(ArmError::bad_request("InvalidEnvironmentVariable", format!("The environment variable name '{}' is invalid: it must be non-empty and must not contain '='.", v.name)).with_target(vat));
        }
        if v.value.is_some() && v.secure_value.is_some() {
            return Err(ArmError::bad_request("InvalidEnvironmentVariable", format!("The environment variable '{}' has both 'value' and 'secureValue'; give one.", v.name)).with_target(vat));
        }
        if v.value.iter().chain(v.secure_value.iter()).any(|s| s.contains('\0')) {
            return Err(ArmError::bad_request("InvalidEnvironmentVariable", format!("The value of environment variable '{}' contains a NUL character.", v.name)).with_target(vat));
        }
        if !seen.insert(v.name.as_str()) {
            return Err(ArmError::bad_request("DuplicateEnvironmentVariable", format!("The environment variable '{}' is defined more than once.", v.name)).with_target(vat));
        }
    }
    Ok(())
}

fn validate_resources(r: &ResourceRequirements, name: &str, at: &str, cap: &Capacity) -> Result<(f64, f64), ArmError> {
    let req = &r.requests;
    let bad = |msg: String| Err(ArmError::bad_request("InvalidContainerResourceRequests", msg).with_target(format!("{at}.properties.resources")));
    if !req.cpu.is_finite() || req.cpu < MIN_CPU - 1e-9 {
        return bad(format!("The CPU request of container '{name}' must be at least {MIN_CPU} (got {}).", req.cpu));
    }
    if !req.memory_in_gb.is_finite() || req.memory_in_gb < MIN_MEMORY_GB - 1e-9 {
        return bad(format!("The memory request of container '{name}' must be at least {MIN_MEMORY_GB} GB (got {}).", req.memory_in_gb));
    }
    if req.cpu > cap.max_cpu_per_group + 1e-9 || req.memory_in_gb > cap.max_memory_gb_per_group + 1e-9 {
        return bad(format!(
            "The resource request of container '{name}' ({} CPU, {} GB) exceeds what a group may have on this host ({} CPU, {} GB).",
            req.cpu, req.memory_in_gb, cap.max_cpu_per_group, cap.max_memory_gb_per_group
        ));
    }
    if req.gpu.is_some() || r.limits.as_ref().is_some_and(|l| l.gpu.is_some()) {
        return Err(ArmError::bad_request("GpuNotAvailable", format!("Container '{name}' requests a GPU, but this host has none.")).with_target(format!("{at}.properties.resources")));
    }
    if let Some(l) = &r.limits {
        if l.cpu.is_some_and(|c| !c.is_finite() || c < req.cpu - 1e-9) || l.memory_in_gb.is_some_and(|m| !m.is_finite() || m < req.memory_in_gb - 1e-9) {
            return Err(ArmError::bad_request("InvalidContainerResourceLimits", format!("The resource limits of container '{name}' must be greater than or equal to its requests."))
                .with_target(format!("{at}.properties.resources.limits")));
        }
    }
    Ok((req.cpu, req.memory_in_gb))
}

fn validate_port(port: &mut Port, at: &str) -> Result<(), ArmError> {
    if !(1..=65535).contains(&port.port) {
        return Err(ArmError::bad_request("InvalidPort", format!("The port {} is invalid: ports must be between 1 and 65535.", port.port)).with_target(at));
    }
    if let Some(proto) = port.protocol.as_mut() {
        normalize_enum(&format!("{at}.protocol"), proto, &["TCP", "UDP"])?;
    }
    Ok(())
}

fn validate_ip_address(ip: &mut IpAddress, container_ports: &BTreeSet<(i64, String)>) -> Result<(), ArmError> {
    if ip.address_type.is_empty() {
        return Err(ArmError::invalid_content("The 'properties.ipAddress.type' field is required ('Public' or 'Private').").with_target("properties.ipAddress.type"));
    }
    normalize_enum("properties.ipAddress.type", &mut ip.address_type, &["Public", "Private"])?;
    if ip.ports.is_empty() {
        return Err(ArmError::bad_request("InvalidIpAddressPorts", "The IP address of a container group must list at least one port in 'properties.ipAddress.ports'.").with_target("properties.ipAddress.ports"));
    }
    for (i, port) in ip.ports.iter_mut().enumerate() {
        let at = format!("properties.ipAddress.ports[{i}]");
        validate_port(port, &at)?;
        if !container_ports.contains(&(port.port, port.protocol_or_default())) {
            return Err(ArmError::bad_request(
                "InvalidIpAddressPorts",
                format!(
                    "The port {} ({}) of the group's IP address is not exposed by any container. Every port in 'properties.ipAddress.ports' must also be in a container's 'ports' (port mapping is not supported).",
                    port.port,
                    port.protocol_or_default()
                ),
            )
            .with_target(at));
        }
    }
    if let Some(label) = &ip.dns_name_label {
        if !names::is_valid_dns_style_name(label) {
            return Err(ArmError::bad_request(
                "InvalidDnsNameLabel",
                format!("The DNS name label '{label}' is invalid. It must be 1-63 lowercase letters, digits and '-', and can not start or end with '-'."),
            )
            .with_target("properties.ipAddress.dnsNameLabel"));
        }
    }
    if let Some(scope) = ip.auto_generated_domain_name_label_scope.as_mut() {
        normalize_enum(
            "properties.ipAddress.autoGeneratedDomainNameLabelScope",
            scope,
            &["Unsecure", "TenantReuse", "SubscriptionReuse", "ResourceGroupReuse", "Noreuse"],
        )?;
    }
    Ok(())
}

/// Returns the declared volume names.
fn validate_volumes(volumes: Option<&mut Vec<Volume>>) -> Result<HashSet<String>, ArmError> {
    let mut names_seen = HashSet::new();
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        let at = format!("properties.volumes[{i}]");
        names::validate_volume_name(&v.name).map_err(|e| e.with_target(format!("{at}.name")))?;
        if !names_seen.insert(v.name.clone()) {
            return Err(ArmError::bad_request("DuplicateVolumeName", format!("The volume name '{}' is used more than once.", v.name)).with_target(at));
        }
        let kinds = [v.azure_file.is_some(), v.empty_dir.is_some(), v.secret.is_some(), v.git_repo.is_some()].iter().filter(|k| **k).count();
        if kinds != 1 {
            return Err(ArmError::bad_request("InvalidVolume", format!("The volume '{}' must have exactly one of 'azureFile', 'emptyDir', 'secret' or 'gitRepo'.", v.name)).with_target(at));
        }
        for key in v.secret.iter().flat_map(|s| s.keys()) {
            if key.is_empty() || key.contains('/') || key == "." || key == ".." || key.contains('\0') {
                return Err(ArmError::bad_request("InvalidSecretVolume", format!("The secret file name '{key}' in volume '{}' is invalid: it must be a plain file name.", v.name)).with_target(at));
            }
        }
        if let Some(git) = &v.git_repo {
            if git.repository.is_empty() {
                return Err(ArmError::bad_request("InvalidGitRepoVolume", format!("The gitRepo volume '{}' needs a 'repository'.", v.name)).with_target(at));
            }
            if !is_remote_git_url(&git.repository) {
                return Err(ArmError::bad_request(
                    "InvalidGitRepoVolume",
                    format!(
                        "The gitRepo repository '{}' of volume '{}' must be a remote URL (https://, http://, git:// or ssh://): local paths and file:// would clone the host's own files.",
                        git.repository, v.name
                    ),
                )
                .with_target(at));
            }
            if let Some(dir) = &git.directory {
                if dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                    return Err(ArmError::bad_request("InvalidGitRepoVolume", format!("The gitRepo directory '{dir}' of volume '{}' must be a relative path inside the volume.", v.name)).with_target(at));
                }
            }
        }
    }
    Ok(names_seen)
}

/// A repository the daemon may clone for a tenant: a remote URL with a host, never a path on
/// the host (`/srv/x.git`, `file://`, scp-like `host:path`, which git also reads as a local
/// path when `host` contains a slash) nor a transport helper (`ext::`, `fd::`).
pub fn is_remote_git_url(repository: &str) -> bool {
    let Some((scheme, rest)) = repository.split_once("://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    ["https", "http", "git", "ssh"].contains(&scheme.to_ascii_lowercase().as_str())
        && !host.is_empty()
        && !repository.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// A probe has exactly one action, a valid port, no header that could split the request, and
/// non-negative timings (thresholds at least 1).
fn validate_probe(p: &Probe, at: &str) -> Result<(), ArmError> {
    let bad = |msg: String| Err(ArmError::bad_request("InvalidProbe", msg).with_target(at.to_string()));
    match (&p.exec, &p.http_get) {
        (Some(e), None) => {
            if e.command.as_ref().is_none_or(|c| c.is_empty() || c[0].is_empty()) {
                return bad("An exec probe needs a non-empty 'command'.".to_string());
            }
        }
        (None, Some(h)) => {
            if !(1..=65535).contains(&h.port) {
                return bad(format!("The probe port {} is invalid: use 1 to 65535.", h.port));
            }
            if h.path.as_deref().is_some_and(|p| !p.starts_with('/') || p.contains(['\r', '\n', ' '])) {
                return bad("The probe path must start with '/' and contain no spaces or line breaks.".to_string());
            }
            if let Some(s) = h.scheme.as_deref() {
                if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
                    return bad(format!("The probe scheme '{s}' is invalid: use 'http' or 'https'."));
                }
            }
            for hd in h.http_headers.iter().flatten() {
                let name = hd.name.as_deref().unwrap_or("");
                let value = hd.value.as_deref().unwrap_or("");
                if name.is_empty() || name.contains([':', '\r', '\n', ' ']) || value.contains(['\r', '\n']) {
                    return bad(format!("The probe header '{name}' is invalid."));
                }
            }
        }
        _ => return bad("A probe needs exactly one of 'exec' or 'httpGet'.".to_string()),
    }
    for (name, v, min) in [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("periodSeconds", p.period_seconds, 1),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("failureThreshold", p.failure_threshold, 1),
        ("successThreshold", p.success_threshold, 1),
    ] {
        if v.is_some_and(|v| v < min || v > 86_400) {
            return bad(format!("The probe's '{name}' must be between {min} and 86400."));
        }
    }
    Ok(())
}

fn validate_mounts(mounts: Option<&Vec<VolumeMount>>, volumes: &HashSet<String>, at: &str) -> Result<(), ArmError> {
    let mut paths = HashSet::new();
    for (i, m) in mounts.into_iter().flatten().enumerate() {
        let mat = format!("{at}.properties.volumeMounts[{i}]");
        if !volumes.contains(&m.name) {
            return Err(ArmError::bad_request("VolumeNotFound", format!("The volume mount '{}' does not name a volume of the container group.", m.name)).with_target(mat));
        }
        let path = m.mount_path.trim_end_matches('/');
        let bad_path = !m.mount_path.starts_with('/')
            || m.mount_path.contains(':')
            || m.mount_path.split('/').any(|c| c == "..")
            || path.is_empty()
            || ["/proc", "/sys", "/dev"].iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
        if bad_path {
            return Err(ArmError::bad_request(
                "InvalidVolumeMountPath",
                format!("The mount path '{}' is invalid: it must be an absolute path without ':' or '..', and not /, /proc, /sys or /dev.", m.mount_path),
            )
            .with_target(mat));
        }
        if !paths.insert(path.to_string()) {
            return Err(ArmError::bad_request("DuplicateVolumeMountPath", format!("The mount path '{}' is used more than once in one container.", m.mount_path)).with_target(mat));
        }
    }
    Ok(())
}

fn validate_security_context(sc: &SecurityContext, at: &str) -> Result<(), ArmError> {
    if sc.privileged == Some(true) {
        return Err(ArmError::bad_request("PrivilegedContainerNotAllowed", "Privileged containers are not allowed on this host.").with_target(format!("{at}.properties.securityContext.privileged")));
    }
    for id in [sc.run_as_user, sc.run_as_group].into_iter().flatten() {
        if !(0..=i64::from(u32::MAX - 1)).contains(&id) {
            return Err(ArmError::bad_request("InvalidSecurityContext", format!("The user or group id {id} is out of range.")).with_target(format!("{at}.properties.securityContext")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn git_repositories_must_be_remote_urls() {
        for ok in ["https://example.com/r.git", "git://127.0.0.1:9418/r.git", "ssh://git@host/r", "HTTP://h/r"] {
            assert!(is_remote_git_url(ok), "{ok}");
        }
        for bad in ["/srv/r.git", "file:///etc", "FILE:///etc", "../r", "host:repo", "ext::sh -c id", "fd::3", "https:///nohost", "https://h/r x", "-u/x"] {
            assert!(!is_remote_git_url(bad), "{bad}");
        }
    }

    proptest! {
        /// Whatever follows an allowed scheme, a string with no `://` or another scheme never passes.
        #[test]
        fn only_four_schemes_pass(s in "[a-z:/.@ -]{0,24}") {
            if is_remote_git_url(&s) {
                let scheme = s.split_once("://").map(|(a, _)| a.to_ascii_lowercase()).unwrap_or_default();
                prop_assert!(["https", "http", "git", "ssh"].contains(&scheme.as_str()));
            }
        }
    }

    fn group(json: serde_json::Value) -> ContainerGroup {
        serde_json::from_value(json).unwrap()
    }

    fn simple() -> serde_json::Value {
        serde_json::json!({
            "location": "westus",
            "properties": {
                "osType": "linux",
                "containers": [
                    {"name": "web", "properties": {"image": "127.0.0.1:5000/busybox:latest", "ports": [{"port": 80}],
                        "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}}},
                    {"name": "side", "properties": {"image": "busybox", "ports": [{"port": 81, "protocol": "udp"}],
                        "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.5}}}}
                ],
                "ipAddress": {"type": "public", "ports": [{"port": 80, "protocol": "TCP"}]}
            }
        })
    }

    fn code(r: Result<ContainerGroup, ArmError>) -> String {
        r.expect_err("should be rejected").code
    }

    #[test]
    fn probes_are_validated() {
        let cap = Capacity::default();
        let with = |probe: serde_json::Value| {
            let mut v = simple();
            v["properties"]["containers"][0]["properties"]["livenessProbe"] = probe;
            validate_group(group(v), "demo", &cap)
        };
        assert!(with(serde_json::json!({"exec": {"command": ["cat", "/ok"]}, "periodSeconds": 5})).is_ok());
        assert!(with(serde_json::json!({"httpGet": {"path": "/h", "port": 8080, "scheme": "https", "httpHeaders": [{"name": "X-A", "value": "b"}]}})).is_ok());
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"exec": {"command": []}}),
            serde_json::json!({"exec": {"command": ["x"]}, "httpGet": {"port": 80}}),
            serde_json::json!({"httpGet": {"port": 0}}),
            serde_json::json!({"httpGet": {"port": 80, "path": "no-slash"}}),
            serde_json::json!({"httpGet": {"port": 80, "scheme": "ftp"}}),
            serde_json::json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "A: b\r\nC", "value": "d"}]}}),
            serde_json::json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "A", "value": "x\ny"}]}}),
            serde_json::json!({"exec": {"command": ["x"]}, "periodSeconds": 0}),
            serde_json::json!({"exec": {"command": ["x"]}, "failureThreshold": -1}),
        ] {
            assert_eq!(code(with(bad.clone())), "InvalidProbe", "{bad}");
        }
    }

    #[test]
    fn normalises_and_fills_defaults() {
        let g = validate_group(group(simple()), "demo", &Capacity::default()).unwrap();
        assert_eq!(g.properties.os_type, "Linux");
        assert_eq!(g.properties.restart_policy.as_deref(), Some("Always"));
        assert_eq!(g.properties.sku.as_deref(), Some("Standard"));
        assert_eq!(g.properties.ip_address.as_ref().unwrap().address_type, "Public");
        assert_eq!(g.properties.containers[1].properties.ports.as_ref().unwrap()[0].protocol.as_deref(), Some("UDP"));
    }

    #[test]
    fn rejects_bad_documents() {
        let cap = Capacity::default();
        let mut v = simple();
        v["properties"]["osType"] = "Windows".into();
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "OsTypeNotSupported");

        assert_eq!(code(validate_group(group(simple()), "Bad_Name", &cap)), "InvalidContainerGroupName");

        let mut v = simple();
        v["properties"]["containers"][1]["name"] = "web".into();
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "DuplicateContainerName");

        let mut v = simple();
        v["properties"]["containers"][1]["properties"]["ports"] = serde_json::json!([{"port": 80}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "DuplicateContainerPorts");

        let mut v = simple();
        v["properties"]["restartPolicy"] = "Sometimes".into();
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidRequestContent");

        let mut v = simple();
        v["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] = 0.0.into();
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidContainerResourceRequests");

        let mut v = simple();
        v["properties"]["containers"][0]["properties"]["resources"]["requests"]["memoryInGB"] = 64.0.into();
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidContainerResourceRequests");

        let mut v = simple();
        v["properties"]["containers"][0]["properties"]["image"] = "library/Upper:x".into();
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidImageName");

        let mut v = simple();
        v["properties"]["ipAddress"]["ports"] = serde_json::json!([{"port": 8080}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidIpAddressPorts");

        let mut v = simple();
        v["properties"]["containers"] = serde_json::json!([]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidRequestContent");

        let mut v = simple();
        v["properties"]["containers"][0]["properties"]["volumeMounts"] = serde_json::json!([{"name": "nope", "mountPath": "/data"}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "VolumeNotFound");

        let mut v = simple();
        v["properties"]["volumes"] = serde_json::json!([{"name": "v", "emptyDir": {}}]);
        v["properties"]["containers"][0]["properties"]["volumeMounts"] = serde_json::json!([{"name": "v", "mountPath": "/proc/x"}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidVolumeMountPath");
        for bad in ["/sys", "/sys/fs/cgroup", "/dev", "/", "relative", "/a/../etc", "/x:y"] {
            let mut v = simple();
            v["properties"]["volumes"] = serde_json::json!([{"name": "v", "emptyDir": {}}]);
            v["properties"]["containers"][0]["properties"]["volumeMounts"] = serde_json::json!([{"name": "v", "mountPath": bad}]);
            assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidVolumeMountPath", "{bad}");
        }
        let mut v = simple();
        v["properties"]["volumes"] = serde_json::json!([{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]);
        v["properties"]["containers"][0]["properties"]["volumeMounts"] = serde_json::json!([{"name": "v", "mountPath": "/data"}, {"name": "w", "mountPath": "/data/"}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "DuplicateVolumeMountPath", "one path, twice (a trailing slash is the same path)");

        let mut v = simple();
        v["properties"]["volumes"] = serde_json::json!([{"name": "s", "secret": {"../evil": "eA=="}}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidSecretVolume");

        let mut v = simple();
        v["properties"]["containers"][0]["properties"]["environmentVariables"] = serde_json::json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]);
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "DuplicateEnvironmentVariable");
    }

    #[test]
    fn sandbox_tiers_are_checked() {
        let cap = Capacity::default();
        let mut v = simple();
        v["tags"] = serde_json::json!({"skiff-sandbox": "container"});
        assert!(validate_group(group(v.clone()), "demo", &cap).is_ok());
        v["tags"] = serde_json::json!({"skiff-sandbox": "vm"});
        assert_eq!(code(validate_group(group(v.clone()), "demo", &cap)), "SandboxNotAvailable");
        v["tags"] = serde_json::json!({"skiff-sandbox": "magic"});
        assert_eq!(code(validate_group(group(v), "demo", &cap)), "InvalidSandbox");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = parse_group(br#"{"properties": {"containers": [{"name": "a", "properties": {"image": 5}}]}}"#).unwrap_err();
        assert_eq!(err.code, "InvalidRequestContent");
        assert!(err.message.contains("properties.containers[0].properties.image"), "{}", err.message);
        assert_eq!(parse_group(b"{not json").unwrap_err().code, "InvalidRequestContent");
    }

    proptest! {
        /// Random documents never panic the validator, and whatever it accepts is canonical and
        /// accepted again unchanged (validation is idempotent).
        #[test]
        fn validator_is_total_and_idempotent(
            names in proptest::collection::vec("[a-z-]{0,5}", 1..4),
            cpus in proptest::collection::vec(0.0f64..6.0, 1..4),
            mems in proptest::collection::vec(0.0f64..20.0, 1..4),
            ports in proptest::collection::vec(0i64..70000, 0..4),
            policy in "(Always|always|OnFailure|Never|Bogus)",
            os in "(Linux|linux|Windows|x)",
        ) {
            let containers: Vec<serde_json::Value> = names.iter().enumerate().map(|(i, n)| serde_json::json!({
                "name": n,
                "properties": {
                    "image": "busybox",
                    "ports": ports.get(i).map(|p| vec![serde_json::json!({"port": p})]).unwrap_or_default(),
                    "resources": {"requests": {"cpu": cpus[i % cpus.len()], "memoryInGB": mems[i % mems.len()]}}
                }
            })).collect();
            let doc = serde_json::json!({"properties": {"osType": os, "restartPolicy": policy, "containers": containers}});
            let g: ContainerGroup = serde_json::from_value(doc).unwrap();
            if let Ok(ok) = validate_group(g, "grp", &Capacity::default()) {
                let again = validate_group(ok.clone(), "grp", &Capacity::default()).unwrap();
                prop_assert_eq!(again, ok.clone());
                let alloc = crate::resources::allocate(&ok.properties);
                prop_assert!(alloc.cpu_cores >= 1 && alloc.cpu_cores <= 4);
            }
        }
    }
}
