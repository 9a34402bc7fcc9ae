//! Container logs in the CRI format (`<RFC3339Nano UTC> stdout|stderr F|P <text>`),
//! one file per container, size-capped with one rotated file (`.log.1`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Longest line fragment kept in memory; longer lines are written as `P` parts.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Path of the current log file of `container`.
pub fn log_path(group_dir: &Path, container: &str) -> PathBuf {
    group_dir.join("logs").join(format!("{container}.log"))
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Appends CRI lines to one container's log file, rotating it at `max_bytes`.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl LogWriter {
    pub fn open(path: PathBuf, max_bytes: u64) -> io::Result<LogWriter> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            max_bytes,
        })
    }

    /// Write one (possibly partial) line with the current time.
    pub fn write_line(&mut self, stream: Stream, partial: bool, text: &[u8]) -> io::Result<()> {
        let ts = format!("{:.9}", jiff::Timestamp::now());
        self.write_line_at(&ts, stream, partial, text)
    }

    /// Write one line with an explicit timestamp string.
    pub fn write_line_at(
        &mut self,
        ts: &str,
        stream: Stream,
        partial: bool,
        text: &[u8],
    ) -> io::Result<()> {
        let mut line = Vec::with_capacity(ts.len() + text.len() + 12);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Splits a byte stream into lines for a [`LogWriter`].
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feed a chunk; calls `emit(partial, line)` for each complete line (without
    /// `\n`) and for every [`MAX_LINE`]-sized fragment of an overlong line.
    pub fn feed(&mut self, mut chunk: &[u8], emit: &mut dyn FnMut(bool, &[u8])) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&chunk[..i]);
            self.flush_full(emit);
            emit(false, &self.buf);
            self.buf.clear();
            chunk = &chunk[i + 1..];
        }
        self.buf.extend_from_slice(chunk);
        self.flush_full(emit);
    }

    fn flush_full(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        while self.buf.len() > MAX_LINE {
            emit(true, &self.buf[..MAX_LINE]);
            self.buf.drain(..MAX_LINE);
        }
    }

    /// End of stream: a trailing unterminated line is written as a full line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if !self.buf.is_empty() {
            emit(false, &self.buf);
            self.buf.clear();
        }
    }
}

/// One parsed log entry (partial lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub timestamp: String,
    pub stream: String,
    pub text: String,
}

/// Parse CRI log content; `P` fragments are joined with the following line.
pub fn parse(content: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pending: Option<Entry> = None;
    for line in content.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let text = parts.next().unwrap_or("");
        let e = pending.get_or_insert_with(|| Entry {
            timestamp: ts.to_owned(),
            stream: stream.to_owned(),
            text: String::new(),
        });
        e.text.push_str(text);
        if tag != "P" {
            out.extend(pending.take());
        }
    }
    out.extend(pending);
    out
}

/// Render entries as plain text, the last `tail` only, optionally prefixed with
/// `<timestamp> `.
pub fn render(entries: &[Entry], tail: Option<usize>, timestamps: bool) -> String {
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    let mut s = String::new();
    for e in &entries[skip..] {
        if timestamps {
            s.push_str(&e.timestamp);
            s.push(' ');
        }
        s.push_str(&e.text);
        s.push('\n');
    }
    s
}

/// Read the logs of `container` (rotated file first) as plain text.
pub fn read(
    group_dir: &Path,
    container: &str,
    tail: Option<usize>,
    timestamps: bool,
) -> io::Result<String> {
    let path = log_path(group_dir, container);
    let mut content = String::new();
    for p in [rotated(&path), path] {
        match std::fs::read(&p) {
            Ok(b) => content.push_str(&String::from_utf8_lossy(&b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(render(&parse(&content), tail, timestamps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_partials() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        let mut emit = |p: bool, l: &[u8]| got.push((p, String::from_utf8_lossy(l).into_owned()));
        s.feed(b"a\nb", &mut emit);
        s.feed(b"c\n\nd", &mut emit);
        s.finish(&mut emit);
        assert_eq!(
            got,
            [
                (false, "a".into()),
                (false, "bc".into()),
                (false, "".into()),
                (false, "d".into())
            ]
        );

        let mut got = Vec::new();
        let mut emit = |p: bool, l: &[u8]| got.push((p, l.len()));
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        s.feed(&long, &mut emit);
        s.feed(b"\n", &mut emit);
        assert_eq!(got, [(true, MAX_LINE), (true, MAX_LINE), (false, 5)]);
    }

    #[test]
    fn parses_and_tails() {
        let c = "2024-01-01T00:00:00.000000001Z stdout F one\n\
                 2024-01-01T00:00:00.000000002Z stderr P tw\n\
                 2024-01-01T00:00:00.000000003Z stderr F o\n\
                 2024-01-01T00:00:00.000000004Z stdout F \n\
                 2024-01-01T00:00:00.000000005Z stdout F three words here\n";
        let e = parse(c);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].text, "two");
        assert_eq!(e[1].stream, "stderr");
        assert_eq!(e[2].text, "");
        assert_eq!(render(&e, None, false), "one\ntwo\n\nthree words here\n");
        assert_eq!(render(&e, Some(2), false), "\nthree words here\n");
        assert_eq!(
            render(&e, Some(1), true),
            "2024-01-01T00:00:00.000000005Z three words here\n"
        );
        assert_eq!(render(&e, Some(10), false).lines().count(), 4);
    }

    #[test]
    fn writes_rotates_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "c");
        let mut w = LogWriter::open(path.clone(), 200).unwrap();
        for i in 0..10 {
            w.write_line(Stream::Stdout, false, format!("line {i}").as_bytes())
                .unwrap();
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(rotated(&path)).unwrap();
        assert!(cur.len() <= 200 && old.len() <= 200);
        let first = cur.lines().next().unwrap();
        let ts = first.split(' ').next().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
        assert!(first.ends_with(" stdout F line 7") || first.contains(" stdout F line "));
        let all = read(dir.path(), "c", None, false).unwrap();
        let n = all.lines().count();
        assert!((4..=10).contains(&n));
        assert!(all.ends_with("line 9\n"));
        assert_eq!(
            read(dir.path(), "c", Some(2), false).unwrap(),
            "line 8\nline 9\n"
        );
        assert!(read(dir.path(), "c", Some(1), true)
            .unwrap()
            .starts_with(ts.split('T').next().unwrap()));
        assert_eq!(read(dir.path(), "none", None, false).unwrap(), "");
    }
}
