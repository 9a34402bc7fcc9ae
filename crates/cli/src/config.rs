//! Client settings: flags > environment > config file > defaults.
//!
//! The config file is JSON, `{"server": "...", "subscription": "...", "location": "..."}`, at
//! `$SKIFF_CONFIG`, else `$XDG_CONFIG_HOME/skiff/config.json`, else
//! `~/.config/skiff/config.json`. A missing file means defaults; a malformed one is an error.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
pub const DEFAULT_LOCATION: &str = "westus";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ConfigFile {
    pub server: Option<String>,
    pub subscription: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: String,
    pub subscription: String,
    /// Default location for resource groups Skiff creates on the fly.
    pub location: String,
    pub debug: bool,
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
    }
}

/// `host:port` → `http://host:port`; trailing slashes removed.
pub fn normalize_server(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
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
        assert_eq!(s.server, "http://10.0.0.1:9000");
        assert_eq!(s.subscription, "sub-x");
        let s = resolve(None, None, false, &ConfigFile::default());
        assert_eq!(s.server, DEFAULT_SERVER);
        assert_eq!(s.subscription, DEFAULT_SUBSCRIPTION);
        assert_eq!(s.location, DEFAULT_LOCATION);
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
