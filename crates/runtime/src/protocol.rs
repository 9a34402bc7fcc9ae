//! The control protocol on `DIR/ctl.sock`: one JSON object per line.
//!
//! Replies: `status` → one [`GroupStatus`](crate::status::GroupStatus) line;
//! `watch` → a status line now and on every change until the client hangs up;
//! `stop` → `{"ok":true}` once everything is torn down (the supervisor then exits).
//! Errors are `{"ok":false,"error":"..."}`.

use serde::{Deserialize, Serialize};

/// A request to the supervisor. New verbs (`exec` via `crun exec` with a PTY,
/// `attach`) are added as variants; unknown ones get an error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Current status, one line.
    Status,
    /// Start the containers of a plan that holds its start (see `GroupPlan::hold`); reply
    /// `{"ok":true}`. A supervisor that is not holding ignores it.
    Release,
    /// Status now and after every change.
    Watch,
    /// SIGTERM every container, SIGKILL after `grace_ms`, tear the group down, exit.
    Stop { grace_ms: u64 },
    /// Run `command` in container `container` (`crun exec`), with a terminal of
    /// `rows`x`cols` when `tty`. Reply `{"ok":true}`, then the connection carries
    /// [`Frame`](crate::frame::Frame)s both ways until an `Exit` frame.
    Exec {
        container: String,
        command: Vec<String>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        rows: u16,
        #[serde(default)]
        cols: u16,
    },
    /// Stream the live output of `container` as `Data` frames, then `Exit` when it ends.
    Attach { container: String },
}

/// Reply to requests that do not return a status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            error: None,
        }
    }
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"stop","grace_ms":500}"#).unwrap(),
            Request::Stop { grace_ms: 500 }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"exec"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"exec","container":"c","command":["ls","-l"]}"#).unwrap(),
            Request::Exec { container: "c".into(), command: vec!["ls".into(), "-l".into()], tty: false, rows: 0, cols: 0 }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"attach","container":"c"}"#).unwrap(),
            Request::Attach { container: "c".into() }
        );
        assert_eq!(
            serde_json::to_string(&Reply::ok()).unwrap(),
            r#"{"ok":true}"#
        );
    }
}
