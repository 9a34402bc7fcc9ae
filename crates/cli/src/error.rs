//! The errors the CLI reports: one readable line each (`error: <code>: <message>`).

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An ARM CloudError returned by the server.
    #[error("{code}: {message}")]
    Arm { status: u16, code: String, message: String },
    /// The server could not be reached at all.
    #[error("cannot reach the Skiff server at {url} (is `skiff server` running?)")]
    Unreachable { url: String },
    /// Any other HTTP-level failure (timeouts, bad bodies, ...).
    #[error("{0}")]
    Http(String),
    /// Bad arguments, files, or a refused action.
    #[error("{0}")]
    Usage(String),
    /// A long-running operation ended Failed/Canceled.
    #[error("{code}: {message}")]
    OperationFailed { code: String, message: String },
    /// Failure already reported on stderr; just exit 1.
    #[error("")]
    Silent,
    /// A remote command (`exec`) ended with this non-zero exit code; the CLI exits with it.
    #[error("the command exited with code {0}")]
    ExitStatus(i32),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CliError::Arm { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Usage(e.to_string())
    }
}
