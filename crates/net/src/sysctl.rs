//! The few kernel settings Skiff needs, written under /proc/sys and read back.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("cannot set sysctl {name}={value} (it is {current}); Skiff needs it for {why}")]
pub struct SysctlError {
    pub name: String,
    pub value: String,
    pub current: String,
    pub why: &'static str,
}

fn path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

pub fn read(name: &str) -> Option<String> {
    std::fs::read_to_string(path(name)).ok().map(|s| s.trim().to_string())
}

/// Make sure `name` is `value`, writing it if needed, and check that it took.
pub fn ensure(name: &str, value: &str, why: &'static str) -> Result<(), SysctlError> {
    if read(name).as_deref() == Some(value) {
        return Ok(());
    }
    let _ = std::fs::write(path(name), value);
    match read(name) {
        Some(v) if v == value => Ok(()),
        other => Err(SysctlError { name: name.to_string(), value: value.to_string(), current: other.unwrap_or_else(|| "unreadable".into()), why }),
    }
}
