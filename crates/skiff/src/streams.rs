//! Bridges the API's exec/attach sessions to a supervisor session: websocket-side channels on
//! one end, [`Frame`]s on the supervisor's control connection on the other.

use skiff_api::streams::{SessionInput, SessionIo, SessionKind, SessionOutput};
use skiff_model::records::GroupRecord;
use skiff_model::ArmError;
use skiff_runtime::frame::io::{write_frame, FrameReader};
use skiff_runtime::frame::Frame;
use skiff_runtime::ClientError;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

fn session_error(e: ClientError) -> ArmError {
    match e {
        ClientError::Refused(msg) => ArmError::conflict("ContainerNotRunning", msg),
        ClientError::Io(_) => ArmError::conflict("ContainerGroupNotRunning", "The container group is not running on this host."),
        other => ArmError::internal(format!("The session could not be opened: {other}")),
    }
}

pub async fn open(agent: &skiff_agent::Agent, group: &GroupRecord, container: &str, kind: SessionKind) -> Result<SessionIo, ArmError> {
    let session = match kind {
        SessionKind::Exec { command, tty } => agent.exec(group, container, command, tty).await,
        SessionKind::Attach => agent.attach(group, container).await,
    }
    .map_err(session_error)?;
    let (in_tx, mut in_rx) = mpsc::channel::<SessionInput>(64);
    let (out_tx, out_rx) = mpsc::channel::<SessionOutput>(64);
    let (mut r, mut w) = session.conn.into_split();
    let mut frames = FrameReader::with_buffer(session.leftover);
    tokio::spawn(async move {
        while let Some(item) = in_rx.recv().await {
            let f = match item {
                SessionInput::Data(d) => Frame::Data(d),
                SessionInput::Resize { rows, cols } => Frame::Resize { rows, cols },
                SessionInput::Eof => Frame::Eof,
            };
            if write_frame(&mut w, &f).await.is_err() {
                return;
            }
        }
        // The websocket is gone: hang up (the supervisor closes the terminal or stdin).
        let _ = w.shutdown().await;
    });
    tokio::spawn(async move {
        while let Ok(Some(f)) = frames.next(&mut r).await {
            let item = match f {
                Frame::Data(d) => SessionOutput::Data(d),
                Frame::Exit(code) => SessionOutput::Exit(code),
                Frame::Resize { .. } | Frame::Eof => continue,
            };
            let last = matches!(item, SessionOutput::Exit(_));
            if out_tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    Ok(SessionIo { input: in_tx, output: out_rx })
}
