//! Daemon-side client of a group supervisor (`DIR/ctl.sock`).

use std::path::Path;
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::plan::{CTL_SOCKET, STATUS_FILE};
use crate::protocol::{Reply, Request};
use crate::status::GroupStatus;

/// Errors talking to a supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// cannot reach the supervisor
    #[error("cannot reach the supervisor")]
    Io(#[from] std::io::Error),
    /// the supervisor sent an unreadable reply
    #[error("unreadable reply from the supervisor")]
    Decode(#[from] serde_json::Error),
    /// the supervisor closed the connection
    #[error("the supervisor closed the connection")]
    Closed,
    /// the supervisor refused the request
    #[error("the supervisor refused the request: {0}")]
    Refused(String),
}

/// A connection to one group's supervisor.
#[derive(Debug)]
pub struct SupervisorClient {
    conn: BufReader<UnixStream>,
}

impl SupervisorClient {
    pub async fn connect(dir: &Path) -> Result<SupervisorClient, ClientError> {
        let conn = UnixStream::connect(dir.join(CTL_SOCKET)).await?;
        Ok(SupervisorClient {
            conn: BufReader::new(conn),
        })
    }

    async fn request(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.conn.get_mut().write_all(&line).await?;
        Ok(())
    }

    async fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        if self.conn.read_line(&mut line).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(line)
    }

    /// The current status.
    pub async fn status(&mut self) -> Result<GroupStatus, ClientError> {
        self.request(&Request::Status).await?;
        let line = self.read_line().await?;
        Ok(serde_json::from_str(&line)?)
    }

    /// The current status, then one item per change. Ends when the supervisor goes away.
    pub fn watch(self) -> impl Stream<Item = Result<GroupStatus, ClientError>> {
        futures::stream::unfold((false, Some(self)), |(started, client)| async move {
            let mut client = client?;
            if !started {
                if let Err(e) = client.request(&Request::Watch).await {
                    return Some((Err(e), (true, None)));
                }
            }
            match client.read_line().await {
                Ok(line) => match serde_json::from_str(&line) {
                    Ok(st) => Some((Ok(st), (true, Some(client)))),
                    Err(e) => Some((Err(e.into()), (true, None))),
                },
                Err(ClientError::Closed) => None,
                Err(e) => Some((Err(e), (true, None))),
            }
        })
    }

    /// Send `req` and wait for its `{"ok":...}` reply.
    async fn call(&mut self, req: &Request) -> Result<(), ClientError> {
        self.request(req).await?;
        let line = self.read_line().await?;
        let reply: Reply = serde_json::from_str(&line)?;
        if reply.ok {
            Ok(())
        } else {
            Err(ClientError::Refused(reply.error.unwrap_or_default()))
        }
    }

    /// Let a supervisor whose plan holds its start start its containers.
    pub async fn release(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Release).await
    }

    /// Stop the group: SIGTERM, SIGKILL after `grace`, tear down; returns once
    /// the supervisor has cleaned up (it exits right after).
    pub async fn stop(&mut self, grace: Duration) -> Result<(), ClientError> {
        self.call(&Request::Stop { grace_ms: grace.as_millis() as u64 }).await
    }
}

/// An accepted exec/attach session: the connection now carries
/// [`Frame`](crate::frame::Frame)s; `leftover` holds bytes already read past the reply.
#[derive(Debug)]
pub struct Session {
    pub conn: UnixStream,
    pub leftover: Vec<u8>,
}

impl SupervisorClient {
    async fn open_session(mut self, req: &Request) -> Result<Session, ClientError> {
        self.request(req).await?;
        let line = self.read_line().await?;
        let reply: Reply = serde_json::from_str(&line)?;
        if !reply.ok {
            return Err(ClientError::Refused(reply.error.unwrap_or_default()));
        }
        let leftover = self.conn.buffer().to_vec();
        Ok(Session {
            conn: self.conn.into_inner(),
            leftover,
        })
    }

    /// Run `command` in `container` (with a terminal of `(rows, cols)` if `tty` is given).
    pub async fn exec(
        self,
        container: &str,
        command: Vec<String>,
        tty: Option<(u16, u16)>,
    ) -> Result<Session, ClientError> {
        let (rows, cols) = tty.unwrap_or((0, 0));
        self.open_session(&Request::Exec {
            container: container.to_owned(),
            command,
            tty: tty.is_some(),
            rows,
            cols,
        })
        .await
    }

    /// Stream the live output of `container`.
    pub async fn attach(self, container: &str) -> Result<Session, ClientError> {
        self.open_session(&Request::Attach {
            container: container.to_owned(),
        })
        .await
    }
}

/// Read `DIR/status.json` (e.g. when the supervisor is gone).
pub fn read_status_file(dir: &Path) -> std::io::Result<GroupStatus> {
    let raw = std::fs::read(dir.join(STATUS_FILE))?;
    serde_json::from_slice(&raw).map_err(std::io::Error::other)
}

/// Whether a supervisor answers on `DIR/ctl.sock`.
pub async fn is_alive(dir: &Path) -> bool {
    UnixStream::connect(dir.join(CTL_SOCKET)).await.is_ok()
}
