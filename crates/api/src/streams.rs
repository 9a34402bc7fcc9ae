//! Exec, attach and log streaming.
//!
//! `POST P/containers/{c}/exec` and `.../attach` answer `{webSocketUri, password}` (the ARM
//! contract). The URI points at [`WS_ROUTE`] on this same listener (so it gets the server's TLS
//! when it has one: `wss://` follows the base URL's scheme). A session is single-use and expires
//! after [`SESSION_TTL`]; its one-time password is the only credential the websocket needs.
//!
//! Websocket protocol (server side of az's client):
//! - client → server: the password as the **first text frame**; then stdin as binary frames.
//!   Text frames after the password are control messages when they parse as
//!   `{"type":"resize","rows":R,"cols":C}` or `{"type":"eof"}` (closes stdin of a process
//!   without a terminal), and stdin otherwise.
//! - server → client: output as binary frames (raw bytes); at the end a close frame with code
//!   1000 and reason `{"exitCode":N}`. A refused session closes with 1008 (bad password) or
//!   1011 (the exec could not start; the reason says why).
//!
//! `GET P/containers/{c}/logstream` (Skiff extension) streams the rendered log as chunked
//! `text/plain` until the container terminates; the ARM `logs` endpoint is unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use skiff_model::records::GroupRecord;
use skiff_model::ArmError;
use tokio::sync::mpsc;

use crate::error::{error_response, ApiResult};
use crate::groups::load_required;
use crate::lro::json;
use crate::route::GroupRef;
use crate::{Api, Ctx};

/// Path of the websocket endpoint (axum syntax).
pub const WS_ROUTE: &str = "/execstream/sessionId/{id}";
/// How long a handed-out session may wait for its websocket.
pub const SESSION_TTL: Duration = Duration::from_secs(30);
/// How long the client has to send the password once connected.
const PASSWORD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// `argv` in the container, with a terminal of (rows, cols) if given.
    Exec { command: Vec<String>, tty: Option<(u16, u16)> },
    /// The container's live output.
    Attach,
}

/// Client input of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput {
    Data(Vec<u8>),
    Resize { rows: u16, cols: u16 },
    Eof,
}

/// Output of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    Data(Vec<u8>),
    /// The process ended (last item).
    Exit(i32),
}

/// Both directions of an open session. Dropping `input` hangs the session up.
pub struct SessionIo {
    pub input: mpsc::Sender<SessionInput>,
    pub output: mpsc::Receiver<SessionOutput>,
}

pub(crate) struct Pending {
    password: String,
    group: GroupRecord,
    container: String,
    kind: SessionKind,
}

/// Sessions handed out and not yet connected, by id.
pub(crate) type Sessions = Expiring<Pending>;

/// Single-use entries with a deadline.
pub struct Expiring<T>(Mutex<HashMap<String, (Instant, T)>>);

impl<T> Default for Expiring<T> {
    fn default() -> Self {
        Expiring(Mutex::new(HashMap::new()))
    }
}

impl<T> Expiring<T> {
    fn insert(&self, id: String, expires: Instant, v: T) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        m.retain(|_, (e, _)| *e > now);
        m.insert(id, (expires, v));
    }

    /// Single use: the entry is gone after this, whatever the outcome.
    fn take(&self, id: &str) -> Option<T> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id).filter(|(e, _)| *e > Instant::now()).map(|(_, v)| v)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecRequest {
    command: String,
    #[serde(default)]
    terminal_size: Option<TerminalSize>,
}

#[derive(Debug, Deserialize)]
struct TerminalSize {
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cols: Option<u16>,
}

/// Parse an exec request body. The command is split like a shell would (so, unlike Azure, it
/// may carry arguments); a `terminalSize` asks for a terminal (az always sends one; Skiff's CLI
/// leaves it out when its stdin is not a terminal).
pub fn parse_exec(body: &[u8]) -> Result<SessionKind, ArmError> {
    let req: ExecRequest = serde_json::from_slice(body).map_err(|e| ArmError::invalid_content(format!("The exec request is invalid: {e}")))?;
    let command = shlex::split(&req.command).filter(|c| !c.is_empty()).ok_or_else(|| {
        ArmError::bad_request("InvalidContainerExecCommand", format!("The command '{}' is empty or has unbalanced quotes.", req.command)).with_target("command")
    })?;
    let tty = req.terminal_size.map(|t| (t.rows.unwrap_or(24).max(1), t.cols.unwrap_or(80).max(1)));
    Ok(SessionKind::Exec { command, tty })
}

async fn checked_group(ctx: &Ctx, g: &GroupRef, container: &str) -> ApiResult<GroupRecord> {
    let (rec, _) = load_required(ctx, g).await?;
    if !rec.container_names().any(|c| c == container) {
        return Err(ArmError::container_not_found(&rec.name, container).into());
    }
    Ok(rec)
}

/// `POST P/containers/{c}/exec`.
pub(crate) async fn exec(ctx: &Ctx, g: &GroupRef, container: &str) -> ApiResult<Response> {
    let kind = parse_exec(&ctx.body)?;
    let rec = checked_group(ctx, g, container).await?;
    Ok(hand_out(ctx, rec, container, kind))
}

/// `POST P/containers/{c}/attach`.
pub(crate) async fn attach(ctx: &Ctx, g: &GroupRef, container: &str) -> ApiResult<Response> {
    let rec = checked_group(ctx, g, container).await?;
    Ok(hand_out(ctx, rec, container, SessionKind::Attach))
}

fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn hand_out(ctx: &Ctx, group: GroupRecord, container: &str, kind: SessionKind) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let password = random_token();
    let ws_base = if let Some(rest) = ctx.base.strip_prefix("https://") { format!("wss://{rest}") } else { format!("ws://{}", ctx.base.trim_start_matches("http://")) };
    let (rows, cols) = match &kind {
        SessionKind::Exec { tty: Some(t), .. } => *t,
        _ => (24, 80),
    };
    let uri = format!("{ws_base}/execstream/sessionId/{id}?api-version=1.0&rows={rows}&cols={cols}");
    ctx.api.sessions.insert(id, Instant::now() + SESSION_TTL, Pending { password: password.clone(), group, container: container.to_string(), kind });
    json(StatusCode::OK, &serde_json::json!({ "webSocketUri": uri, "password": password }))
}

/// Constant-time comparison, so the password cannot be guessed byte by byte from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /execstream/sessionId/{id}` (websocket upgrade).
pub(crate) async fn websocket(State(api): State<Arc<Api>>, Path(id): Path<String>, ws: WebSocketUpgrade) -> Response {
    let Some(pending) = api.sessions.take(&id) else {
        return error_response(&ArmError::new(404, "SessionNotFound", "The exec session does not exist, was already used or has expired."));
    };
    ws.on_upgrade(move |socket| run_session(api, pending, socket))
}

/// A control message sent as a text frame after the password.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    Resize { rows: u16, cols: u16 },
    Eof,
}

/// Text after the password: a control message, or else stdin.
pub fn text_input(t: &str) -> SessionInput {
    match serde_json::from_str::<Control>(t) {
        Ok(Control::Resize { rows, cols }) => SessionInput::Resize { rows, cols },
        Ok(Control::Eof) => SessionInput::Eof,
        Err(_) => SessionInput::Data(t.as_bytes().to_vec()),
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let reason: String = reason.chars().take(120).collect();
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

async fn run_session(api: Arc<Api>, p: Pending, mut socket: WebSocket) {
    let first = tokio::time::timeout(PASSWORD_TIMEOUT, socket.recv()).await;
    let authorized = matches!(&first, Ok(Some(Ok(Message::Text(t)))) if same_secret(t.as_bytes(), p.password.as_bytes()));
    if !authorized {
        close(&mut socket, 1008, "authentication failed").await;
        return;
    }
    let io = match api.node.open_session(&p.group, &p.container, p.kind).await {
        Ok(io) => io,
        Err(e) => {
            close(&mut socket, 1011, &e.message).await;
            return;
        }
    };
    let SessionIo { input, mut output } = io;
    let mut input = Some(input);
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let item = match msg {
                    Some(Ok(Message::Binary(b))) => SessionInput::Data(b.to_vec()),
                    Some(Ok(Message::Text(t))) => text_input(t.as_str()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // The client left: hang the session up.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                };
                if let Some(tx) = &input {
                    if tx.send(item).await.is_err() {
                        input = None;
                    }
                }
            }
            out = output.recv() => match out {
                Some(SessionOutput::Data(d)) => {
                    if socket.send(Message::Binary(d.into())).await.is_err() {
                        return;
                    }
                }
                Some(SessionOutput::Exit(code)) => {
                    close(&mut socket, 1000, &format!("{{\"exitCode\":{code}}}")).await;
                    return;
                }
                None => {
                    close(&mut socket, 1011, "the session ended without an exit code").await;
                    return;
                }
            },
        }
    }
}

/// `GET P/containers/{c}/logstream`.
pub(crate) async fn log_stream(ctx: &Ctx, g: &GroupRef, container: &str, tail: Option<usize>, timestamps: bool) -> ApiResult<Response> {
    let (rec, _) = load_required(ctx, g).await?;
    let known = rec.container_names().any(|c| c == container) || rec.spec.properties.init_containers.iter().flatten().any(|c| c.name == container);
    if !known {
        return Err(ArmError::container_not_found(&rec.name, container).into());
    }
    let rx = ctx.api.node.follow_logs(&rec, container, tail, timestamps).await?;
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx)) });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_bodies() {
        assert_eq!(
            parse_exec(br#"{"command":"ls -la '/a b'","terminalSize":{"rows":30,"cols":100}}"#).unwrap(),
            SessionKind::Exec { command: vec!["ls".into(), "-la".into(), "/a b".into()], tty: Some((30, 100)) }
        );
        assert_eq!(parse_exec(br#"{"command":"/bin/sh"}"#).unwrap(), SessionKind::Exec { command: vec!["/bin/sh".into()], tty: None });
        assert_eq!(parse_exec(br#"{"command":"sh","terminalSize":{}}"#).unwrap(), SessionKind::Exec { command: vec!["sh".into()], tty: Some((24, 80)) });
        assert_eq!(parse_exec(br#"{"command":"  "}"#).unwrap_err().status, 400);
        assert_eq!(parse_exec(br#"{"command":"echo 'x"}"#).unwrap_err().status, 400);
        assert_eq!(parse_exec(b"{}").unwrap_err().status, 400);
    }

    #[test]
    fn control_messages_and_text_stdin() {
        assert_eq!(text_input(r#"{"type":"resize","rows":5,"cols":7}"#), SessionInput::Resize { rows: 5, cols: 7 });
        assert_eq!(text_input(r#"{"type":"eof"}"#), SessionInput::Eof);
        assert_eq!(text_input("ls\n"), SessionInput::Data(b"ls\n".to_vec()));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn sessions_are_single_use_and_expire() {
        let s = Expiring::<u32>::default();
        s.insert("a".into(), Instant::now() + Duration::from_secs(60), 1);
        assert_eq!(s.take("a"), Some(1));
        assert_eq!(s.take("a"), None);
        s.insert("b".into(), Instant::now() - Duration::from_millis(1), 2);
        assert_eq!(s.take("b"), None);
    }
}
