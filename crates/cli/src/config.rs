//! Client settings: flags > environment > config file > defaults.
//!
//! The config file is JSON, `{"server": "...", "subscription": "...", "location": "..."}`, at
//! `$SKIFF_CONFIG`, else `$XDG_CONFIG_HOME/skiff/config.json`, else
//! `~/.config/skiff/config.json`. A missing file means defaults; a malformed one is an error.
//!
//! Credentials: the bearer token comes from `--token`/`SKIFF_TOKEN`, else the file's `token`,
//! else the local server's admin token file (`<data-dir>/admin.token`, data dir from
//! `SKIFF_DATA_DIR`, default `/var/lib/skiff`), which is what lets root on the server's machine
//! use the CLI with no set-up. The CA to trust: `SKIFF_CA_CERT`, else the file's `caCert`, else
//! the local server's `<data-dir>/tls/ca.pem` when it exists.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

pub const DEFAULT_SERVER: &str = "https://127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff";
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
pub const DEFAULT_LOCATION: &str = "westus";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConfigFile {
    pub server: Option<String>,
    pub subscription: Option<String>,
    pub location: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: String,
    pub subscription: String,
    /// Default location for resource groups Skiff creates on the fly.
    pub location: String,
    pub debug: bool,
    /// Bearer token sent with every request.
    pub token: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    pub ca_cert: Option<PathBuf>,
}

/// The local server's data directory (for the admin token and CA fallbacks).
pub fn local_data_dir() -> PathBuf {
    std::env::var_os("SKIFF_DATA_DIR").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// Fill in the token and CA from flags/environment (`token`, `ca_cert`), the config file, then
/// the local data directory `data_dir`.
pub fn resolve_credentials(settings: &mut Settings, token: Option<String>, ca_cert: Option<PathBuf>, file: &ConfigFile, data_dir: &Path) {
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    settings.token = nonempty(token)
        .or_else(|| nonempty(file.token.clone()))
        .or_else(|| nonempty(std::fs::read_to_string(data_dir.join("admin.token")).ok()));
    settings.ca_cert = ca_cert.filter(|p| !p.as_os_str().is_empty()).or_else(|| file.ca_cert.clone()).or_else(|| {
        let p = data_dir.join("tls/ca.pem");
        p.exists().then_some(p)
    });
}

pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(x).join("skiff/config.json"));
    }
    std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".config/skiff/config.json"))
}

pub fn load_config(path: Option<&Path>) -> Result<ConfigFile, CliError> {
    let Some(path) = path else { return Ok(ConfigFile::default()) };
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(&text).map_err(|e| CliError::usage(format!("invalid config file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(CliError::usage(format!("cannot read config file {}: {e}", path.display()))),
    }
}

pub fn parse_config(text: &str) -> Result<ConfigFile, serde_json::Error> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_json::from_str(text)
}

/// Combine flags (which clap already merged with the environment) with the config file.
pub fn resolve(server: Option<String>, subscription: Option<String>, debug: bool, file: &ConfigFile) -> Settings {
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let server = nonempty(server).or_else(|| nonempty(file.server.clone())).unwrap_or_else(|| DEFAULT_SERVER.to_string());
    Settings {
        server: normalize_server(&server),
        subscription: nonempty(subscription)
            .or_else(|| nonempty(file.subscription.clone()))
            .unwrap_or_else(|| DEFAULT_SUBSCRIPTION.to_string()),
        location: nonempty(file.location.clone()).unwrap_or_else(|| DEFAULT_LOCATION.to_string()),
        debug,
        token: None,
        ca_cert: None,
    }
}

/// `host:port` → `https://host:port` (the server speaks TLS unless told otherwise); trailing
/// slashes removed.
pub fn normalize_server(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flag_then_file_then_default() {
        let file = parse_config(r#"{"server":"http://h:1/","subscription":"sub-f","location":"eastus"}"#).unwrap();
        let s = resolve(None, None, false, &file);
        assert_eq!(s.server, "http://h:1");
        assert_eq!(s.subscription, "sub-f");
        assert_eq!(s.location, "eastus");
        let s = resolve(Some("10.0.0.1:9000".into()), Some("sub-x".into()), true, &file);
        assert_eq!(s.server, "https://10.0.0.1:9000");
        assert_eq!(s.subscription, "sub-x");
        let s = resolve(None, None, false, &ConfigFile::default());
        assert_eq!(s.server, DEFAULT_SERVER);
        assert_eq!(s.subscription, DEFAULT_SUBSCRIPTION);
        assert_eq!(s.location, DEFAULT_LOCATION);
    }

    #[test]
    fn credentials_fall_back_to_the_local_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = resolve(None, None, false, &ConfigFile::default());
        resolve_credentials(&mut s, None, None, &ConfigFile::default(), dir.path());
        assert_eq!((s.token.as_deref(), s.ca_cert.as_deref()), (None, None));
        std::fs::write(dir.path().join("admin.token"), "skf_admin\n").unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/ca.pem"), "pem").unwrap();
        resolve_credentials(&mut s, None, None, &ConfigFile::default(), dir.path());
        assert_eq!(s.token.as_deref(), Some("skf_admin"));
        assert_eq!(s.ca_cert.as_deref(), Some(dir.path().join("tls/ca.pem").as_path()));
        let file = parse_config(r#"{"token":"skf_file","caCert":"/etc/ca.pem"}"#).unwrap();
        resolve_credentials(&mut s, None, None, &file, dir.path());
        assert_eq!((s.token.as_deref(), s.ca_cert.as_deref()), (Some("skf_file"), Some(Path::new("/etc/ca.pem"))));
        resolve_credentials(&mut s, Some("skf_flag".into()), None, &file, dir.path());
        assert_eq!(s.token.as_deref(), Some("skf_flag"));
    }

    #[test]
    fn missing_file_is_defaults_malformed_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.json");
        assert_eq!(load_config(Some(&p)).unwrap(), ConfigFile::default());
        std::fs::write(&p, "{not json").unwrap();
        assert!(load_config(Some(&p)).is_err());
        std::fs::write(&p, "").unwrap();
        assert_eq!(load_config(Some(&p)).unwrap(), ConfigFile::default());
    }
}
