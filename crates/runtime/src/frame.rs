//! Binary framing of an exec/attach session on the control socket.
//!
//! After the supervisor has accepted an `exec` or `attach` request (one JSON
//! reply line `{"ok":true}`), the same connection carries frames in both
//! directions: `tag: u8`, `len: u32` big-endian, `len` payload bytes.
//! Pure (no I/O) so the codec is unit- and property-tested.

/// Largest payload accepted; a bigger length means a corrupt stream.
pub const MAX_FRAME: usize = 1 << 20;

const TAG_DATA: u8 = 0;
const TAG_RESIZE: u8 = 1;
const TAG_EOF: u8 = 2;
const TAG_EXIT: u8 = 3;

/// One frame of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → supervisor: stdin bytes. Supervisor → client: output bytes.
    Data(Vec<u8>),
    /// Client → supervisor: new terminal size.
    Resize { rows: u16, cols: u16 },
    /// Client → supervisor: stdin is closed.
    Eof,
    /// Supervisor → client: the process ended with this code (last frame).
    Exit(i32),
}

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// unknown frame tag
    #[error("unknown frame tag {0}")]
    Tag(u8),
    /// frame length over the limit or wrong for its tag
    #[error("bad frame length {0}")]
    Length(usize),
}

impl Frame {
    /// Append the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (tag, payload): (u8, Vec<u8>) = match self {
            Frame::Data(d) => (TAG_DATA, d.clone()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (TAG_RESIZE, p)
            }
            Frame::Eof => (TAG_EOF, Vec::new()),
            Frame::Exit(code) => (TAG_EXIT, code.to_be_bytes().to_vec()),
        };
        out.push(tag);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Take one complete frame off the front of `buf`; `Ok(None)` if more bytes are needed.
    pub fn decode(buf: &mut Vec<u8>) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let tag = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::Length(len));
        }
        let want = match tag {
            TAG_DATA => None,
            TAG_RESIZE | TAG_EXIT => Some(4),
            TAG_EOF => Some(0),
            t => return Err(FrameError::Tag(t)),
        };
        if want.is_some_and(|w| w != len) {
            return Err(FrameError::Length(len));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = buf.drain(..5 + len).skip(5).collect();
        Ok(Some(match tag {
            TAG_DATA => Frame::Data(payload),
            TAG_RESIZE => Frame::Resize {
                rows: u16::from_be_bytes([payload[0], payload[1]]),
                cols: u16::from_be_bytes([payload[2], payload[3]]),
            },
            TAG_EOF => Frame::Eof,
            _ => Frame::Exit(i32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ])),
        }))
    }
}

/// Async helpers over a byte stream.
pub mod io {
    use super::{Frame, FrameError};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Reads frames from a byte stream, keeping what is left over.
    #[derive(Debug, Default)]
    pub struct FrameReader {
        buf: Vec<u8>,
    }

    impl FrameReader {
        /// Start with bytes already read past the reply line.
        pub fn with_buffer(buf: Vec<u8>) -> FrameReader {
            FrameReader { buf }
        }

        /// The next frame, or `None` at a clean end of stream.
        pub async fn next(
            &mut self,
            r: &mut (impl AsyncRead + Unpin),
        ) -> std::io::Result<Option<Frame>> {
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(f) = Frame::decode(&mut self.buf).map_err(bad)? {
                    return Ok(Some(f));
                }
                let n = r.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    fn bad(e: FrameError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    pub async fn write_frame(
        w: &mut (impl AsyncWrite + Unpin),
        f: &Frame,
    ) -> std::io::Result<()> {
        w.write_all(&f.to_bytes()).await?;
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Frame::Data),
            (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| Frame::Resize { rows, cols }),
            Just(Frame::Eof),
            any::<i32>().prop_map(Frame::Exit),
        ]
    }

    #[test]
    fn partial_input_waits() {
        let mut b = Frame::Exit(42).to_bytes();
        let tail = b.split_off(6);
        assert_eq!(Frame::decode(&mut b), Ok(None));
        b.extend(tail);
        assert_eq!(Frame::decode(&mut b), Ok(Some(Frame::Exit(42))));
        assert!(b.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            Frame::decode(&mut vec![9, 0, 0, 0, 0]),
            Err(FrameError::Tag(9))
        );
        assert_eq!(
            Frame::decode(&mut vec![TAG_EXIT, 0, 0, 0, 2, 1, 2]),
            Err(FrameError::Length(2))
        );
        assert_eq!(
            Frame::decode(&mut vec![TAG_DATA, 0xff, 0, 0, 0]),
            Err(FrameError::Length(0xff00_0000))
        );
    }

    proptest! {
        #[test]
        fn round_trip_any_split(frames in proptest::collection::vec(frame(), 0..8), cut in 0usize..2000) {
            let mut wire = Vec::new();
            for f in &frames { f.encode(&mut wire); }
            let cut = cut.min(wire.len());
            let mut buf = wire[..cut].to_vec();
            let mut got = Vec::new();
            while let Some(f) = Frame::decode(&mut buf).unwrap() { got.push(f); }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = Frame::decode(&mut buf).unwrap() { got.push(f); }
            prop_assert_eq!(got, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = bytes;
            let _ = Frame::decode(&mut b);
        }
    }
}
