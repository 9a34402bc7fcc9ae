//! The only module that runs the OCI runtime binary (crun). All calls are
//! blocking and short (the supervisor is single-threaded; a `crun run -d`
//! returns as soon as the container process has started).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::plan::RuntimeConfig;

/// Errors from the OCI runtime.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// could not execute the OCI runtime
    #[error("could not execute {binary}")]
    Exec {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// the OCI runtime failed
    #[error("`{binary} {verb}` failed ({status}): {stderr}")]
    Failed {
        binary: PathBuf,
        verb: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// the pid file written by the OCI runtime is unreadable
    #[error("bad pid file {0}")]
    PidFile(PathBuf),
}

/// A handle on the OCI runtime binary with its state root.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl OciRuntime {
    pub fn new(cfg: &RuntimeConfig) -> OciRuntime {
        OciRuntime {
            binary: cfg.binary.clone(),
            root: cfg.root.clone(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(crate::sealed::path_for(&self.binary).unwrap_or_else(|| self.binary.clone()));
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null());
        c
    }

    fn output(&self, verb: &str, mut c: Command) -> Result<String, OciError> {
        let out = c.output().map_err(|source| OciError::Exec {
            binary: self.binary.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(OciError::Failed {
                binary: self.binary.clone(),
                verb: verb.to_owned(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// `<binary> --version`: first line.
    pub fn version(&self) -> Result<String, OciError> {
        let mut c = Command::new(&self.binary);
        c.arg("--version").stdin(Stdio::null());
        let out = self.output("--version", c)?;
        Ok(out.lines().next().unwrap_or("").to_owned())
    }

    /// `run -d`: create and start container `id` from `bundle` with the given
    /// stdout/stderr (stdin is /dev/null). The runtime's own error messages go
    /// to `stderr` too, i.e. into the container log. Returns the init pid.
    /// `run -d`: the container's stdout/stderr are `stdout`/`stderr`, its stdin `stdin` or
    /// /dev/null.
    pub fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<u32, OciError> {
        let pid_file = bundle.join("pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut c = self.cmd();
        c.arg("run")
            .arg("-d")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id);
        c.stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
        if let Some(fd) = stdin {
            c.stdin(Stdio::from(fd));
        }
        let status = c.status().map_err(|source| OciError::Exec {
            binary: self.binary.clone(),
            source,
        })?;
        drop(c); // close our copies of the pipe write ends
        if !status.success() {
            return Err(OciError::Failed {
                binary: self.binary.clone(),
                verb: "run".into(),
                status,
                stderr: "see the container log".into(),
            });
        }
        let raw =
            std::fs::read_to_string(&pid_file).map_err(|_| OciError::PidFile(pid_file.clone()))?;
        raw.trim().parse().map_err(|_| OciError::PidFile(pid_file))
    }

    /// Start `exec` of `argv` in container `id` in the foreground, without
    /// waiting: the caller reaps the returned pid (the supervisor's `waitpid(-1)`),
    /// whose exit code is the exec'd process's. With `console_socket`, the process
    /// gets a new terminal whose master crun sends to that socket.
    pub fn spawn_exec(
        &self,
        id: &str,
        argv: &[String],
        console_socket: Option<&Path>,
        pid_file: Option<&Path>,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<u32, OciError> {
        let mut c = self.cmd();
        c.arg("exec");
        if let Some(p) = pid_file {
            let _ = std::fs::remove_file(p);
            c.arg("--pid-file").arg(p);
        }
        if let Some(sock) = console_socket {
            c.arg("--tty").arg("--console-socket").arg(sock);
        }
        c.arg(id).args(argv);
        c.stdin(stdin).stdout(stdout).stderr(stderr);
        let child = c.spawn().map_err(|source| OciError::Exec {
            binary: self.binary.clone(),
            source,
        })?;
        // Dropping a std Child neither waits nor kills: the supervisor reaps it.
        Ok(child.id())
    }

    /// `kill <id> <signal>`.
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), OciError> {
        let mut c = self.cmd();
        c.arg("kill").arg(id).arg(signal);
        self.output("kill", c).map(drop)
    }

    /// `delete -f <id>`; a container that does not exist is not an error.
    pub fn delete_force(&self, id: &str) -> Result<(), OciError> {
        if !self.root.join(id).exists() {
            return Ok(());
        }
        let mut c = self.cmd();
        c.arg("delete").arg("-f").arg(id);
        self.output("delete", c).map(drop)
    }

    /// Ids of the containers the runtime knows under its root.
    pub fn list(&self) -> Result<Vec<String>, OciError> {
        let mut c = self.cmd();
        c.arg("list").arg("-q");
        Ok(self
            .output("list", c)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}
