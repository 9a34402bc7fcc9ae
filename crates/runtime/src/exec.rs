//! `exec` and `attach` sessions inside the supervisor.
//!
//! `exec` runs `crun exec` (so the process joins the container's namespaces
//! and cgroup). With a terminal, crun hands the PTY master over a per-session
//! console socket; without, the process gets pipes. The bytes are relayed as
//! [`Frame`]s on the control connection; the exit code arrives from the
//! supervisor's reaper (it owns `waitpid`) and ends the session.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::frame::io::{write_frame, FrameReader};
use crate::frame::Frame;
use crate::oci_runtime::{OciError, OciRuntime};

/// How long output may keep flowing after the process exited (e.g. a
/// background child still holding the terminal) before the session ends.
const DRAIN: Duration = Duration::from_secs(2);

/// The I/O ends of a started exec.
pub enum ExecIo {
    Pty {
        console: std::os::unix::net::UnixListener,
        path: PathBuf,
        rows: u16,
        cols: u16,
    },
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// A running `crun exec`.
pub struct Started {
    pub pid: u32,
    pub io: ExecIo,
}

/// Errors starting an exec.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// cannot set up the session's I/O
    #[error("cannot set up the exec session")]
    Io(#[from] std::io::Error),
    /// the OCI runtime refused
    #[error(transparent)]
    Runtime(#[from] OciError),
}

/// Start `argv` in container `id`. Synchronous: the supervisor calls it from
/// its main loop, so it records the pid before it can reap it.
pub fn spawn(
    rt: &OciRuntime,
    id: &str,
    scratch: &Path,
    argv: &[String],
    tty: Option<(u16, u16)>,
    pid_file: Option<&Path>,
) -> Result<Started, ExecError> {
    match tty {
        Some((rows, cols)) => {
            let path = scratch.join(format!("exec-{}.sock", uuid_like()));
            let _ = std::fs::remove_file(&path);
            let console = std::os::unix::net::UnixListener::bind(&path)?;
            let pid = match rt.spawn_exec(id, argv, Some(&path), pid_file, Stdio::null(), Stdio::null(), Stdio::null()) {
                Ok(pid) => pid,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
            };
            Ok(Started { pid, io: ExecIo::Pty { console, path, rows, cols } })
        }
        None => {
            let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
            let (in_r, in_w) = nix::unistd::pipe2(cloexec).map_err(std::io::Error::from)?;
            let (out_r, out_w) = nix::unistd::pipe2(cloexec).map_err(std::io::Error::from)?;
            let (err_r, err_w) = nix::unistd::pipe2(cloexec).map_err(std::io::Error::from)?;
            let pid = rt.spawn_exec(id, argv, None, pid_file, Stdio::from(in_r), Stdio::from(out_w), Stdio::from(err_w))?;
            Ok(Started { pid, io: ExecIo::Pipes { stdin: in_w, stdout: out_r, stderr: err_r } })
        }
    }
}

/// A unique-enough suffix for the console socket of one session.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

type Input = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// Relay an exec session on `conn` until the process exits (then an
/// [`Frame::Exit`]) or the client goes away (the terminal is closed, which
/// hangs the session up).
pub async fn relay(conn: UnixStream, leftover: Vec<u8>, started: Started, exit: oneshot::Receiver<i32>) {
    let (mut cr, cw) = conn.into_split();
    let (out_tx, out_rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_frames(cw, out_rx));
    let mut exit = exit;
    let mut readers = JoinSet::new();
    let mut master_for_resize: Option<OwnedFd> = None;
    let mut input: Option<Input> = None;
    match started.io {
        ExecIo::Pty { console, path, rows, cols } => {
            let got = tokio::select! {
                r = accept_master(console) => r,
                code = &mut exit => Err(std::io::Error::other(format!("exec ended before its terminal was ready (exit code {})", code.unwrap_or(-1)))),
            };
            let _ = std::fs::remove_file(&path);
            let master = match got {
                Ok(m) => m,
                Err(e) => {
                    let _ = out_tx.send(Frame::Data(format!("skiff: {e}\r\n").into_bytes())).await;
                    let code = exit.await.unwrap_or(-1);
                    let _ = out_tx.send(Frame::Exit(code)).await;
                    drop(out_tx);
                    let _ = writer.await;
                    return;
                }
            };
            let _ = crate::pty::set_winsize(&master, rows, cols);
            match dup_pair(&master) {
                Ok((r, w)) => {
                    readers.spawn(copy_out(r, out_tx.clone()));
                    input = Some(Box::new(w));
                }
                Err(e) => eprintln!("supervisor: exec terminal: {e}"),
            }
            master_for_resize = Some(master);
        }
        ExecIo::Pipes { stdin, stdout, stderr } => {
            for fd in [stdout, stderr] {
                if let Ok(rx) = pipe::Receiver::from_owned_fd_unchecked(fd) {
                    readers.spawn(copy_out(rx, out_tx.clone()));
                }
            }
            if let Ok(tx) = pipe::Sender::from_owned_fd_unchecked(stdin) {
                input = Some(Box::new(tx));
            }
        }
    }
    let mut frames = FrameReader::with_buffer(leftover);
    let mut client_gone = false;
    let code = loop {
        tokio::select! {
            code = &mut exit => break code.unwrap_or(-1),
            f = frames.next(&mut cr), if !client_gone => match f {
                Ok(Some(Frame::Data(d))) => {
                    if let Some(w) = input.as_mut() {
                        if w.write_all(&d).await.is_err() || w.flush().await.is_err() {
                            input = None;
                        }
                    }
                }
                Ok(Some(Frame::Resize { rows, cols })) => {
                    if let Some(m) = &master_for_resize {
                        let _ = crate::pty::set_winsize(m, rows, cols);
                    }
                }
                // Without a terminal, EOF closes the process's stdin; a terminal has no EOF
                // of its own (the client sends ^D as data).
                Ok(Some(Frame::Eof)) => if master_for_resize.is_none() { input = None },
                Ok(Some(Frame::Exit(_))) => {}
                Ok(None) | Err(_) => {
                    // The client hung up: close our terminal ends (SIGHUP to the session) or stdin.
                    client_gone = true;
                    input = None;
                    master_for_resize = None;
                    readers.abort_all();
                }
            },
        }
    };
    drop(input);
    let _ = tokio::time::timeout(DRAIN, async { while readers.join_next().await.is_some() {} }).await;
    readers.abort_all();
    drop(master_for_resize);
    let _ = out_tx.send(Frame::Exit(code)).await;
    drop(out_tx);
    let _ = writer.await;
}

/// The write end of a container's stdin pipe, replaced at every start of the container;
/// every attach session writes to whichever is current.
#[derive(Debug, Clone, Default)]
pub struct StdinHub(std::sync::Arc<tokio::sync::Mutex<Option<pipe::Sender>>>);

impl StdinHub {
    /// The stdin of a new run of the container (the old one's pipe is closed).
    pub fn replace(&self, write_end: OwnedFd) {
        let sender = pipe::Sender::from_owned_fd(write_end).ok();
        match self.0.try_lock() {
            Ok(mut cur) => *cur = sender,
            // A session is writing right now; swap once it is done.
            Err(_) => {
                let hub = self.0.clone();
                tokio::spawn(async move { *hub.lock().await = sender });
            }
        }
    }

    /// Write `data` to the current run's stdin; false once it is closed (the container
    /// stopped reading, or there is no run).
    pub async fn write(&self, data: &[u8]) -> bool {
        let mut cur = self.0.lock().await;
        match cur.as_mut() {
            Some(w) => {
                let ok = w.write_all(data).await.is_ok();
                if !ok {
                    *cur = None;
                }
                ok
            }
            None => false,
        }
    }
}

/// Relay an attach session: the container's output as it is produced, until both of its
/// output pipes close (the container ended) or the client leaves; with `stdin`, the client's
/// data frames go to the container's stdin (an EOF frame only detaches this session's input:
/// others may still be writing).
pub async fn relay_attach(conn: UnixStream, leftover: Vec<u8>, mut rx: broadcast::Receiver<AttachEvent>, stdin: Option<StdinHub>) {
    let (mut cr, mut cw) = conn.into_split();
    let mut frames = FrameReader::with_buffer(leftover);
    let mut input = stdin;
    let mut closed = 0;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(AttachEvent::Data(d)) => {
                    if write_frame(&mut cw, &Frame::Data(d)).await.is_err() { return }
                }
                Ok(AttachEvent::Closed) => {
                    closed += 1;
                    if closed == 2 { break }
                }
                Ok(AttachEvent::Exited(_)) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            f = frames.next(&mut cr) => match f {
                Ok(Some(Frame::Data(d))) => {
                    if let Some(hub) = &input {
                        if !hub.write(&d).await {
                            input = None;
                        }
                    }
                }
                Ok(Some(Frame::Eof)) => input = None,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
        }
    }
    // The exit code follows the pipes' close shortly (the reaper publishes it).
    let code = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rx.recv().await {
                Ok(AttachEvent::Exited(c)) => return c,
                Err(broadcast::error::RecvError::Closed) => return -1,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(-1);
    let _ = write_frame(&mut cw, &Frame::Exit(code)).await;
    let _ = cw.shutdown().await;
}

/// What an attached client sees of a container.
#[derive(Debug, Clone)]
pub enum AttachEvent {
    /// Output bytes (stdout or stderr).
    Data(Vec<u8>),
    /// One of the two output pipes closed.
    Closed,
    /// The container exited with this code.
    Exited(i32),
}

async fn accept_master(console: std::os::unix::net::UnixListener) -> std::io::Result<OwnedFd> {
    console.set_nonblocking(true)?;
    let l = tokio::net::UnixListener::from_std(console)?;
    let (conn, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .map_err(|_| std::io::Error::other("the runtime did not hand over the terminal"))??;
    let conn = conn.into_std()?;
    tokio::task::spawn_blocking(move || crate::pty::recv_fd(&conn, Duration::from_secs(5)))
        .await
        .map_err(std::io::Error::other)?
}

fn dup_pair(master: &OwnedFd) -> std::io::Result<(pipe::Receiver, pipe::Sender)> {
    let r = master.as_fd().try_clone_to_owned()?;
    let w = master.as_fd().try_clone_to_owned()?;
    // A PTY master is a character device, not a FIFO, but epoll handles it the same way.
    Ok((pipe::Receiver::from_owned_fd_unchecked(r)?, pipe::Sender::from_owned_fd_unchecked(w)?))
}

async fn copy_out(mut rx: pipe::Receiver, tx: mpsc::Sender<Frame>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rx.read(&mut buf).await {
            // EIO: the terminal's last slave end closed.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Frame::Data(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_frames(mut w: tokio::net::unix::OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>) {
    while let Some(f) = rx.recv().await {
        if write_frame(&mut w, &f).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
