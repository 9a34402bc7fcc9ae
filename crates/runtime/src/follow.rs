//! `logs --follow`: tail one container's CRI log file until the container ends.
//!
//! [`Follower`] is the pure part (complete lines in, rendered text out); [`follow`]
//! polls the file, notices rotation, and stops once the status file says the
//! container terminated (after one last read, so no line is lost).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::logs::{log_path, parse, render};
use crate::status::{GroupStatus, State};

/// How often the file is polled for new lines.
const POLL: Duration = Duration::from_millis(100);

/// Turns appended CRI bytes into rendered text, one complete line at a time.
#[derive(Debug, Default)]
pub struct Follower {
    pending: Vec<u8>,
    timestamps: bool,
}

impl Follower {
    pub fn new(timestamps: bool) -> Follower {
        Follower { pending: Vec::new(), timestamps }
    }

    /// Feed appended bytes; returns the rendered text of the lines completed so far,
    /// the last `tail` of them if given. Partial CRI fragments (`P`) are held until their
    /// final (`F`) part arrives.
    pub fn feed(&mut self, bytes: &[u8], tail: Option<usize>) -> String {
        self.pending.extend_from_slice(bytes);
        // Up to the last complete line whose tag is `F` (a `P` line continues).
        let mut cut = 0;
        let mut start = 0;
        for (i, b) in self.pending.iter().enumerate() {
            if *b == b'\n' {
                let line = &self.pending[start..i];
                let tag = line.split(|c| *c == b' ').nth(2);
                if tag != Some(b"P".as_slice()) {
                    cut = i + 1;
                }
                start = i + 1;
            }
        }
        let done: Vec<u8> = self.pending.drain(..cut).collect();
        render(&parse(&String::from_utf8_lossy(&done)), tail, self.timestamps)
    }
}

/// Whether the container (or its group) has ended for good, as far as `follow` is concerned.
pub fn ended(status: Option<&GroupStatus>, container: &str) -> bool {
    match status {
        None => true,
        Some(st) if st.state.is_finished() => true,
        Some(st) => st
            .container(container)
            .is_none_or(|c| c.current_state.state == State::Terminated),
    }
}

/// Stream the log of `container` into `tx` (the last `tail` lines first), until it ends or
/// the receiver goes away.
pub async fn follow(
    group_dir: PathBuf,
    container: String,
    tail: Option<usize>,
    timestamps: bool,
    tx: mpsc::Sender<Vec<u8>>,
) {
    let path = log_path(&group_dir, &container);
    let mut f = Follower::new(timestamps);
    let mut offset = 0u64;
    let mut first = true;
    loop {
        // Read the status before the file: a line written before the exit is then always read.
        let status = crate::client::read_status_file(&group_dir).ok();
        let is_ended = ended(status.as_ref(), &container);
        let (bytes, new_offset) = read_from(&path, offset).await;
        offset = new_offset;
        let text = f.feed(&bytes, if first { tail } else { None });
        first = false;
        if !text.is_empty() && tx.send(text.into_bytes()).await.is_err() {
            return;
        }
        if is_ended || tx.is_closed() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Bytes of `path` from `offset` on (from 0 if the file was rotated and is now shorter).
async fn read_from(path: &Path, offset: u64) -> (Vec<u8>, u64) {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return (Vec::new(), offset);
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = if len < offset { 0 } else { offset };
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return (Vec::new(), offset);
    }
    let mut buf = Vec::new();
    match file.read_to_end(&mut buf).await {
        Ok(n) => (buf, start + n as u64),
        Err(_) => (Vec::new(), offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_complete_lines_only() {
        let mut f = Follower::new(false);
        assert_eq!(f.feed(b"2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:01Z std", None), "one\n");
        assert_eq!(f.feed(b"out P tw", None), "");
        assert_eq!(f.feed(b"\n2026-01-01T00:00:02Z stdout F o\n", None), "two\n");
        let mut f = Follower::new(true);
        let many = b"t1 stdout F a\nt2 stdout F b\nt3 stderr F c\n";
        assert_eq!(f.feed(many, Some(2)), "t2 b\nt3 c\n");
    }

    #[test]
    fn ends_when_the_container_terminates() {
        let raw = r#"{"groupId":"g","generation":1,"supervisorPid":1,"state":"Running","version":1,
            "updatedAt":"2026-01-01T00:00:00Z","containers":[{"name":"c","restartCount":0,
            "currentState":{"state":"Running","detailStatus":""},"events":[]}]}"#;
        let mut st: GroupStatus = serde_json::from_str(raw).unwrap();
        assert!(!ended(Some(&st), "c"));
        assert!(ended(Some(&st), "other"));
        st.containers[0].current_state.state = State::Terminated;
        assert!(ended(Some(&st), "c"));
        assert!(ended(None, "c"));
    }
}
