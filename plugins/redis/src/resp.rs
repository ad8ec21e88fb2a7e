//! A minimal RESP2 codec for the subscriber connections.
//!
//! Subscriber connections are driven by hand rather than through the redis crate so that this
//! crate sees every frame: which `SSUBSCRIBE` an error answers, and the `sunsubscribe` pushes
//! Redis sends on its own when a slot migrates away. The redis crate's multiplexed connection
//! would take such a push for the reply to the next request, and its `PubSub` type has no
//! sharded variant.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Simple(Bytes),
    Error(String),
    Integer(i64),
    Bulk(Option<Bytes>),
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The bytes of a simple or bulk string.
    pub(crate) fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// Error from the codec: I/O or a protocol violation (which ends the connection).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Frames larger than this are treated as a protocol error instead of buffered without end.
const MAX_BULK: usize = 512 * 1024 * 1024;

#[derive(Debug, Default)]
pub(crate) struct RespCodec;

impl Decoder for RespCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // Parse by offsets first so an incomplete frame costs no allocation; only a complete
        // frame is split off the buffer (zero-copy for bulk payloads).
        let end = match frame_end(src, 0)? {
            Some(end) => end,
            None => return Ok(None),
        };
        let buf = src.split_to(end).freeze();
        let (frame, _) = build(&buf, 0)?;
        Ok(Some(frame))
    }
}

/// Encodes one command (a list of arguments) as a RESP array of bulk strings.
impl<'a> Encoder<&'a [&'a [u8]]> for RespCodec {
    type Error = CodecError;

    fn encode(&mut self, args: &'a [&'a [u8]], dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            dst.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            dst.extend_from_slice(arg);
            dst.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
}

/// Finds the end of the line starting at `at`; returns (line without CRLF end, next offset).
fn line(src: &[u8], at: usize) -> Option<(usize, usize)> {
    let rest = src.get(at..)?;
    let pos = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((at + pos, at + pos + 2))
}

fn parse_int(bytes: &[u8]) -> Result<i64, CodecError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CodecError::Protocol("invalid integer"))
}

/// The offset just past the frame starting at `at`, or `None` if it is not complete yet.
fn frame_end(src: &[u8], at: usize) -> Result<Option<usize>, CodecError> {
    let Some(&kind) = src.get(at) else { return Ok(None) };
    let Some((line_end, next)) = line(src, at + 1) else { return Ok(None) };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(next)),
        b'$' => {
            let len = parse_int(&src[at + 1..line_end])?;
            if len < 0 {
                return Ok(Some(next));
            }
            let len = usize::try_from(len).map_err(|_| CodecError::Protocol("bulk length"))?;
            if len > MAX_BULK {
                return Err(CodecError::Protocol("bulk string too large"));
            }
            let end = next + len + 2;
            Ok((src.len() >= end).then_some(end))
        }
        b'*' => {
            let count = parse_int(&src[at + 1..line_end])?;
            let mut pos = next;
            for _ in 0..count.max(0) {
                match frame_end(src, pos)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => Err(CodecError::Protocol("unknown RESP2 type byte")),
    }
}

/// Builds the frame at `at` from a buffer known to hold it completely.
fn build(buf: &Bytes, at: usize) -> Result<(Frame, usize), CodecError> {
    let kind = buf[at];
    let (line_end, next) = line(buf, at + 1).ok_or(CodecError::Protocol("truncated frame"))?;
    let body = &buf[at + 1..line_end];
    Ok(match kind {
        b'+' => (Frame::Simple(buf.slice(at + 1..line_end)), next),
        b'-' => (Frame::Error(String::from_utf8_lossy(body).into_owned()), next),
        b':' => (Frame::Integer(parse_int(body)?), next),
        b'$' => {
            let len = parse_int(body)?;
            if len < 0 {
                (Frame::Bulk(None), next)
            } else {
                let len = len as usize;
                (Frame::Bulk(Some(buf.slice(next..next + len))), next + len + 2)
            }
        }
        b'*' => {
            let count = parse_int(body)?;
            if count < 0 {
                (Frame::Array(None), next)
            } else {
                let mut items = Vec::with_capacity(count as usize);
                let mut pos = next;
                for _ in 0..count {
                    let (item, end) = build(buf, pos)?;
                    items.push(item);
                    pos = end;
                }
                (Frame::Array(Some(items)), pos)
            }
        }
        _ => return Err(CodecError::Protocol("unknown RESP2 type byte")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Frame> {
        let mut codec = RespCodec;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed byte by byte: every partial prefix must be reported as incomplete.
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(f) = codec.decode(&mut buf).expect("valid") {
                out.push(f);
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn decodes_pubsub_frames_split_anywhere() {
        let frames = decode_all(
            b"*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\na\r\n\x00\xff\r\n+OK\r\n-MOVED 1 h:1\r\n:7\r\n$-1\r\n",
        );
        assert_eq!(
            frames,
            vec![
                Frame::Array(Some(vec![
                    Frame::Bulk(Some(Bytes::from_static(b"smessage"))),
                    Frame::Bulk(Some(Bytes::from_static(b"ch"))),
                    Frame::Bulk(Some(Bytes::from_static(b"a\r\n\x00\xff"))),
                ])),
                Frame::Simple(Bytes::from_static(b"OK")),
                Frame::Error("MOVED 1 h:1".into()),
                Frame::Integer(7),
                Frame::Bulk(None),
            ]
        );
    }

    #[test]
    fn encodes_commands() {
        let mut buf = BytesMut::new();
        RespCodec.encode(&[b"SSUBSCRIBE".as_slice(), b"a b"][..], &mut buf).expect("encode");
        assert_eq!(&buf[..], b"*2\r\n$10\r\nSSUBSCRIBE\r\n$3\r\na b\r\n");
    }
}
