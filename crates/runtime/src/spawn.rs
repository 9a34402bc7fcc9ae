//! Starting a supervisor from the daemon.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::supervisor::{DETACH_ENV, READY_FD_ENV};

/// Errors of [`spawn_supervisor`].
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// cannot start the supervisor process
    #[error("cannot start the supervisor {0}")]
    Exec(std::path::PathBuf, #[source] std::io::Error),
    /// the supervisor failed to start
    #[error("the supervisor failed: {0}")]
    Failed(String),
    /// the supervisor exited before it was ready
    #[error("the supervisor exited before it was ready (see {0})")]
    Died(std::path::PathBuf),
}

/// Start `exe supervisor --group-dir DIR` detached from the caller (double
/// fork + setsid: the supervisor is not the caller's child and survives it) and
/// return its pid once `DIR/ctl.sock` is listening (readiness pipe, no polling).
///
/// Blocking (a few ms); call it from `spawn_blocking` in async code.
pub fn spawn_supervisor(exe: &Path, dir: &Path) -> Result<u32, SpawnError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::Exec(exe.to_owned(), e.into()))?;
    let mut cmd = Command::new(exe);
    // The readiness pipe is the child's stdout (the supervisor moves it aside before it
    // sends its own output to its log): with nothing to run between fork and exec, std can
    // use posix_spawn (vfork), which does not copy the daemon's page tables per group.
    cmd.arg("supervisor")
        .arg("--group-dir")
        .arg(dir)
        .env(READY_FD_ENV, "1")
        .env(DETACH_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::null());
    if let Some(copy) = crate::sealed::handoff() {
        cmd.env(crate::sealed::HANDOFF_ENV, copy);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| SpawnError::Exec(exe.to_owned(), e))?;
    // Our copy of the write end goes with `cmd`: end-of-file then means the supervisor is gone.
    drop(cmd);
    // The intermediate process exits right after forking the supervisor.
    let _ = child.wait();
    let mut line = String::new();
    let _ = BufReader::new(std::fs::File::from(r)).read_line(&mut line);
    let line = line.trim();
    if let Some(pid) = line.strip_prefix("ready ") {
        pid.parse()
            .map_err(|_| SpawnError::Failed(format!("bad readiness line {line:?}")))
    } else if let Some(msg) = line.strip_prefix("error ") {
        Err(SpawnError::Failed(msg.to_owned()))
    } else {
        Err(SpawnError::Died(dir.join(crate::plan::SUPERVISOR_LOG)))
    }
}
