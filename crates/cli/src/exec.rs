//! `container exec`, `container attach` and `container logs --follow` over the server's
//! streaming endpoints (see the server's `streams` module for the websocket protocol).

use std::io::{IsTerminal, Read, Write};

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::commands::{write_str, Ctx};
use crate::error::CliError;
use crate::terminal::{window_size, RawMode};
use crate::GroupRef;

/// The container to use: the given one, or the only one of the group.
async fn pick_container(ctx: &Ctx, g: &GroupRef, given: Option<String>) -> Result<String, CliError> {
    if let Some(n) = given {
        return Ok(n);
    }
    let c = &ctx.client;
    let group = c.get_json(&c.group_url(&g.resource_group, &g.name)).await?;
    let names: Vec<&str> = group.pointer("/properties/containers").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(CliError::usage(format!("container group '{}' has no containers", g.name))),
        _ => Err(CliError::usage(format!("container group '{}' has {} containers: give --container-name ({})", g.name, names.len(), names.join(", ")))),
    }
}

/// The exit code in a close reason `{"exitCode":N}`.
pub fn exit_code_of(reason: &str) -> Option<i32> {
    serde_json::from_str::<Value>(reason).ok()?.get("exitCode")?.as_i64().map(|c| c as i32)
}

/// `container exec`: exits with the remote command's exit code.
pub async fn exec(ctx: &Ctx, g: &GroupRef, container: Option<String>, command: &str, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let container = pick_container(ctx, g, container).await?;
    let stdin = std::io::stdin();
    let tty = if stdin.is_terminal() { Some(window_size(&stdin).unwrap_or((24, 80))) } else { None };
    let mut body = json!({ "command": command });
    if let Some((rows, cols)) = tty {
        body["terminalSize"] = json!({ "rows": rows, "cols": cols });
    }
    let c = &ctx.client;
    let url = c.group_action_url(&g.resource_group, &g.name, &format!("containers/{container}/exec"));
    let session = c.send(Method::POST, &url, Some(&body)).await?.json()?;
    let _raw = match tty {
        Some(_) => Some(RawMode::enable(stdin.lock().as_fd_borrowed())?),
        None => None,
    };
    let code = run_session(&session, ctx.settings.ca_cert.as_deref(), true, tty.is_some(), out).await?;
    drop(_raw);
    match code {
        0 => Ok(()),
        n => Err(CliError::ExitStatus(n)),
    }
}

/// `container attach`: the container's live output until it ends, and this terminal's input
/// as its stdin (as `docker attach` does; `--no-stdin` turns that off).
pub async fn attach(ctx: &Ctx, g: &GroupRef, container: Option<String>, with_stdin: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let container = pick_container(ctx, g, container).await?;
    let c = &ctx.client;
    let url = c.group_action_url(&g.resource_group, &g.name, &format!("containers/{container}/attach"));
    let session = c.send(Method::POST, &url, None).await?.json()?;
    run_session(&session, ctx.settings.ca_cert.as_deref(), with_stdin, false, out).await.map(drop)
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl<T: std::os::fd::AsFd> AsFdBorrowed for T {
    fn as_fd_borrowed(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

/// Stdin on a plain thread: a blocking read must not hold the runtime open at exit.
fn stdin_reader() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Connect to `{webSocketUri, password}` (`wss://` trusting the CLI's CA) and relay until the
/// server closes; returns the exit code from the close reason (0 if it carries none).
async fn run_session(session: &Value, ca: Option<&std::path::Path>, with_stdin: bool, tty: bool, out: &mut (dyn Write + Send)) -> Result<i32, CliError> {
    let uri = session.get("webSocketUri").and_then(Value::as_str).ok_or_else(|| CliError::Http("the server returned no webSocketUri".into()))?;
    let password = session.get("password").and_then(Value::as_str).unwrap_or("");
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| CliError::Http(format!("cannot open the session websocket: {e}"));
    if uri.starts_with("wss://") {
        let tls = crate::wss::connect(uri, ca).await?;
        let (ws, _) = tokio_tungstenite::client_async(uri, tls).await.map_err(ws_err)?;
        relay(ws, password, with_stdin, tty, out).await
    } else {
        let (ws, _) = tokio_tungstenite::connect_async(uri).await.map_err(ws_err)?;
        relay(ws, password, with_stdin, tty, out).await
    }
}

async fn relay<S>(ws: tokio_tungstenite::WebSocketStream<S>, password: &str, with_stdin: bool, tty: bool, out: &mut (dyn Write + Send)) -> Result<i32, CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(password)).await.map_err(|e| CliError::Http(format!("session websocket: {e}")))?;
    let mut input = if with_stdin { Some(stdin_reader()) } else { None };
    let mut winch = if tty { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok() } else { None };
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => write_bytes(out, &b)?,
                Some(Ok(Message::Text(t))) => write_bytes(out, t.as_bytes())?,
                Some(Ok(Message::Close(frame))) => {
                    let Some(frame) = frame else { return Ok(0) };
                    if let Some(code) = exit_code_of(&frame.reason) {
                        return Ok(code);
                    }
                    if frame.code == CloseCode::Normal {
                        return Ok(0);
                    }
                    return Err(CliError::Http(format!("the session was refused: {}", frame.reason)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(CliError::Http(format!("session websocket: {e}"))),
                None => return Ok(0),
            },
            chunk = async { input.as_mut().expect("guarded").recv().await }, if input.is_some() => {
                let msg = match chunk.flatten() {
                    Some(b) => Message::binary(b),
                    None => {
                        input = None;
                        Message::text(r#"{"type":"eof"}"#)
                    }
                };
                if tx.send(msg).await.is_err() {
                    input = None;
                }
            }
            _ = async { winch.as_mut().expect("guarded").recv().await }, if winch.is_some() => {
                if let Some((rows, cols)) = window_size(&std::io::stdin()) {
                    let _ = tx.send(Message::text(json!({"type": "resize", "rows": rows, "cols": cols}).to_string())).await;
                }
            }
        }
    }
}

fn write_bytes(out: &mut (dyn Write + Send), b: &[u8]) -> Result<(), CliError> {
    match out.write_all(b).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `logs --follow` through the streaming extension endpoint.
pub async fn follow(ctx: &Ctx, g: &GroupRef, container: Option<String>, tail: Option<u64>, timestamps: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let container = pick_first(ctx, g, container).await?;
    let c = &ctx.client;
    let mut url = c.group_action_url(&g.resource_group, &g.name, &format!("containers/{container}/logstream"));
    if let Some(t) = tail {
        url.push_str(&format!("&tail={t}"));
    }
    if timestamps {
        url.push_str("&timestamps=true");
    }
    let resp = c.open_stream(&url, "text/plain").await?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CliError::Http(format!("log stream: {e}")))?;
        write_str(out, &String::from_utf8_lossy(&chunk))?;
    }
    Ok(())
}

/// `logs` defaults to the first container (az's rule).
async fn pick_first(ctx: &Ctx, g: &GroupRef, given: Option<String>) -> Result<String, CliError> {
    if let Some(n) = given {
        return Ok(n);
    }
    let c = &ctx.client;
    let group = c.get_json(&c.group_url(&g.resource_group, &g.name)).await?;
    group
        .pointer("/properties/containers/0/name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CliError::usage(format!("container group '{}' has no containers", g.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_close_reasons() {
        assert_eq!(exit_code_of(r#"{"exitCode":3}"#), Some(3));
        assert_eq!(exit_code_of(r#"{"exitCode":0}"#), Some(0));
        assert_eq!(exit_code_of("authentication failed"), None);
    }
}
