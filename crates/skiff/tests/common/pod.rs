//! Helpers of the pod-feature tests (exec, attach, follow, volumes, lifecycle): CLI children
//! driven through a pseudo-terminal or pipes, with output collected by a reader thread.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::TestServer;

/// Output of a child, accumulated by a reader thread.
pub struct Collector {
    rx: mpsc::Receiver<Vec<u8>>,
    pub seen: String,
}

impl Collector {
    pub fn new(mut r: impl Read + Send + 'static) -> Collector {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    // EIO on a PTY master: the child closed its terminal.
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Collector { rx, seen: String::new() }
    }

    /// Wait until the output (from `from` on) contains `needle`; returns the index after it.
    pub fn expect_from(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen.get(from..).and_then(|s| s.find(needle)) {
                return from + i + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "never saw {needle:?}; output so far:\n{}", self.seen);
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("output ended without {needle:?}:\n{}", self.seen),
            }
        }
    }

    pub fn expect(&mut self, needle: &str, timeout: Duration) -> usize {
        self.expect_from(0, needle, timeout)
    }

    /// Everything until the writer closes (or `timeout`).
    pub fn drain(&mut self, timeout: Duration) -> &str {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => return &self.seen,
            }
        }
    }
}

/// Wait for a child with a deadline (killing it on timeout).
pub fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CLI child whose stdin/stdout/stderr are a new pseudo-terminal (its controlling one).
pub struct PtyChild {
    pub child: Child,
    pub master: std::fs::File,
    pub out: Collector,
}

impl PtyChild {
    pub fn spawn(s: &TestServer, args: &[&str], rows: u16, cols: u16) -> PtyChild {
        let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let mut c = s.cli_command(args);
        c.stdin(Stdio::from(slave.try_clone().unwrap())).stdout(Stdio::from(slave.try_clone().unwrap())).stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("spawn skiff in a pty");
        drop(c); // close our copies of the slave, so EOF/EIO reaches the reader
        let master = std::fs::File::from(pty.master);
        let out = Collector::new(master.try_clone().unwrap());
        PtyChild { child, master, out }
    }

    pub fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("write to pty");
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }
}

/// A CLI child with piped stdin (written then closed) and collected stdout.
pub fn spawn_piped(s: &TestServer, args: &[&str], input: Option<&str>) -> (Child, Collector) {
    let mut c = s.cli_command(args);
    c.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = c.spawn().expect("spawn skiff");
    if let Some(text) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = Collector::new(child.stdout.take().unwrap());
    (child, out)
}

/// A running group `rg/name` with one busybox container running `script` under `policy`.
pub fn run_script(s: &TestServer, rg: &str, name: &str, script: &str, policy: &str) -> Value {
    s.ensure_rg(rg);
    let mut body = super::simple_group(&super::image("busybox:latest"), &["sh", "-c", script]);
    body["properties"]["restartPolicy"] = json!(policy);
    let r = s.put_group(rg, name, &body);
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
    s.wait_state(rg, name, "Running")
}

/// Run a command in `main` and return (exit code, output), through the CLI without a terminal.
pub fn exec_piped(s: &TestServer, rg: &str, name: &str, command: &str, input: Option<&str>) -> (i32, String) {
    let (mut child, mut out) = spawn_piped(s, &["container", "exec", "-g", rg, "-n", name, "--exec-command", command], input);
    let st = wait_child(&mut child, Duration::from_secs(30));
    let text = out.drain(Duration::from_secs(5)).to_string();
    (st.code().unwrap_or(-1), text)
}
