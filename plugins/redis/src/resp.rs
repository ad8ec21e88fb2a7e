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

/// Bulk strings longer than this are a protocol error instead of being buffered: a broken or
/// hostile server must not make us allocate without bound. Pub/sub payloads are far smaller
/// (the broker's own default message limit is 64 KiB).
const MAX_BULK: usize = 64 * 1024 * 1024;
/// Arrays declaring more elements than this are a protocol error. Pub/sub frames have 3 or 4.
const MAX_ARRAY: usize = 1024 * 1024;
/// Deepest array nesting accepted. Pub/sub frames are one level deep; anything much deeper is
/// not Redis talking to a subscriber, and an unbounded nesting would grow the scan stack (and
/// the recursion of `build`) at the server's will.
const MAX_DEPTH: usize = 8;
/// Longest header or simple/error line: the ones Redis sends (`-MOVED 1234 host:port`) are
/// short, and a line without end must not be buffered forever.
const MAX_LINE: usize = 64 * 1024;

/// Decodes RESP2 frames arriving in any number of pieces in O(frame length) in total: the
/// scan state below remembers how far previous calls proved the frame complete, so a piece
/// costs only its own bytes, not a rescan from the frame's first byte.
#[derive(Debug, Default)]
pub(crate) struct RespCodec {
    /// Offset of the next element not yet proven complete.
    pos: usize,
    /// For each array opened and not yet complete, how many of its elements are still to come.
    /// Its capacity is kept across frames, so steady-state decoding does not allocate here.
    open: Vec<usize>,
    /// Where the CRLF search of the line at `pos` resumes: bytes before it are known to hold no
    /// line end.
    line_from: usize,
    /// Bytes examined by the line search, for the test that decoding stays linear.
    #[cfg(test)]
    work: usize,
}

impl Decoder for RespCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // Scan by offsets first so an incomplete frame costs no allocation; only a complete
        // frame is split off the buffer (zero-copy for bulk payloads).
        let Some(end) = self.scan(src)? else { return Ok(None) };
        self.pos = 0;
        self.line_from = 0;
        self.open.clear();
        let buf = src.split_to(end).freeze();
        let (frame, _) = build(&buf, 0)?;
        Ok(Some(frame))
    }
}

/// Encodes one command (a list of arguments) as a RESP array of bulk strings.
impl<'a> Encoder<&'a [&'a [u8]]> for RespCodec {
    type Error = CodecError;

    fn encode(&mut self, args: &'a [&'a [u8]], dst: &mut BytesMut) -> Result<(), CodecError> {
        use std::fmt::Write;
        // `write!` into the buffer itself: no temporary string per argument.
        let fmt_err = |_| CodecError::Protocol("cannot format a command");
        write!(dst, "*{}\r\n", args.len()).map_err(fmt_err)?;
        for arg in args {
            write!(dst, "${}\r\n", arg.len()).map_err(fmt_err)?;
            dst.extend_from_slice(arg);
            dst.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
}

impl RespCodec {
    /// Advances the scan as far as `src` allows; `Some(end)` once a whole frame is in
    /// `src[..end]`.
    fn scan(&mut self, src: &[u8]) -> Result<Option<usize>, CodecError> {
        loop {
            let Some(&kind) = src.get(self.pos) else { return Ok(None) };
            let Some(line_end) = self.line_end(src)? else { return Ok(None) };
            let header = src.get(self.pos + 1..line_end).unwrap_or_default();
            let next = line_end + 2;
            let end = match kind {
                b'+' | b'-' | b':' => next,
                b'$' => match length(header, MAX_BULK, "bulk string too long")? {
                    None => next,
                    Some(len) => {
                        let end = next + len + 2;
                        if src.len() < end {
                            return Ok(None);
                        }
                        if src.get(end - 2..end) != Some(b"\r\n".as_slice()) {
                            return Err(CodecError::Protocol("bulk string without CRLF"));
                        }
                        end
                    }
                },
                b'*' => match length(header, MAX_ARRAY, "array too long")? {
                    Some(count) if count > 0 => {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(CodecError::Protocol("arrays nested too deeply"));
                        }
                        self.open.push(count);
                        self.advance(next);
                        continue;
                    }
                    _ => next,
                },
                _ => return Err(CodecError::Protocol("unknown RESP2 type byte")),
            };
            self.advance(end);
            if self.element_done() {
                return Ok(Some(self.pos));
            }
        }
    }

    fn advance(&mut self, to: usize) {
        self.pos = to;
        self.line_from = to;
    }

    /// Counts a completed element against the open arrays; true when that completed the
    /// top-level frame.
    fn element_done(&mut self) -> bool {
        loop {
            match self.open.last_mut() {
                None => return true,
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        return false;
                    }
                    // That array is complete: it is one element of its parent.
                    self.open.pop();
                }
            }
        }
    }

    /// The offset of the CRLF ending the line at `pos`, searching only bytes not searched
    /// before.
    fn line_end(&mut self, src: &[u8]) -> Result<Option<usize>, CodecError> {
        let from = self.line_from.max(self.pos + 1);
        let rest = src.get(from..).unwrap_or_default();
        let found = rest.windows(2).position(|w| w == b"\r\n");
        #[cfg(test)]
        {
            self.work += found.map_or(rest.len(), |i| i + 2);
        }
        if let Some(i) = found {
            self.line_from = from + i;
            return Ok(Some(from + i));
        }
        if src.len() - self.pos > MAX_LINE {
            return Err(CodecError::Protocol("line too long"));
        }
        // The last byte may be the CR of a CRLF whose LF has not arrived yet.
        self.line_from = src.len().saturating_sub(1).max(from);
        Ok(None)
    }
}

/// A declared length: `None` for the null value (-1), an error past `max` or below -1.
fn length(header: &[u8], max: usize, too_long: &'static str) -> Result<Option<usize>, CodecError> {
    match parse_int(header)? {
        -1 => Ok(None),
        n => match usize::try_from(n) {
            Ok(n) if n <= max => Ok(Some(n)),
            Ok(_) => Err(CodecError::Protocol(too_long)),
            Err(_) => Err(CodecError::Protocol("negative length")),
        },
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

/// Builds the frame at `at` from a buffer the scan proved to hold it completely (so the
/// recursion is at most [`MAX_DEPTH`] deep); still checked, never indexed blindly.
fn build(buf: &Bytes, at: usize) -> Result<(Frame, usize), CodecError> {
    let truncated = CodecError::Protocol("truncated frame");
    let kind = *buf.get(at).ok_or(CodecError::Protocol("truncated frame"))?;
    let (line_end, next) = line(buf, at + 1).ok_or(truncated)?;
    let body = &buf[at + 1..line_end];
    Ok(match kind {
        b'+' => (Frame::Simple(buf.slice(at + 1..line_end)), next),
        b'-' => (Frame::Error(String::from_utf8_lossy(body).into_owned()), next),
        b':' => (Frame::Integer(parse_int(body)?), next),
        b'$' => match length(body, MAX_BULK, "bulk string too long")? {
            None => (Frame::Bulk(None), next),
            Some(len) if next + len + 2 <= buf.len() => {
                (Frame::Bulk(Some(buf.slice(next..next + len))), next + len + 2)
            }
            Some(_) => return Err(CodecError::Protocol("truncated frame")),
        },
        b'*' => match length(body, MAX_ARRAY, "array too long")? {
            None => (Frame::Array(None), next),
            Some(count) => {
                // `count` elements of at least 3 bytes each are in `buf`: bounded by the data.
                let mut items = Vec::with_capacity(count.min(buf.len() / 3));
                let mut pos = next;
                for _ in 0..count {
                    let (item, end) = build(buf, pos)?;
                    items.push(item);
                    pos = end;
                }
                (Frame::Array(Some(items)), pos)
            }
        },
        _ => return Err(CodecError::Protocol("unknown RESP2 type byte")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Frame> {
        let mut codec = RespCodec::default();
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
        RespCodec::default()
            .encode(&[b"SSUBSCRIBE".as_slice(), b"a b"][..], &mut buf)
            .expect("encode");
        assert_eq!(&buf[..], b"*2\r\n$10\r\nSSUBSCRIBE\r\n$3\r\na b\r\n");
    }

    fn decode_err(input: &[u8]) -> CodecError {
        let mut codec = RespCodec::default();
        let mut buf = BytesMut::from(input);
        match codec.decode(&mut buf) {
            Err(e) => e,
            Ok(f) => panic!("{input:?} decoded as {f:?}"),
        }
    }

    #[test]
    fn refuses_deep_nesting_and_huge_lengths() {
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        deep.extend_from_slice(b":1\r\n");
        assert!(matches!(decode_err(&deep), CodecError::Protocol("arrays nested too deeply")));
        // Exactly MAX_DEPTH levels are fine.
        let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        assert_eq!(decode_all(&ok).len(), 1);
        let too_long = format!("${}\r\n", MAX_BULK + 1);
        assert!(matches!(decode_err(too_long.as_bytes()), CodecError::Protocol(_)));
        let too_many = format!("*{}\r\n", MAX_ARRAY + 1);
        assert!(matches!(decode_err(too_many.as_bytes()), CodecError::Protocol(_)));
        for bad in [&b"$-2\r\n"[..], b"*-7\r\n", b"$3\r\nabcXY", b"?\r\n", b"$x\r\n"] {
            assert!(matches!(decode_err(bad), CodecError::Protocol(_)), "{bad:?}");
        }
        let endless = vec![b'+'; MAX_LINE + 2];
        assert!(matches!(decode_err(&endless), CodecError::Protocol("line too long")));
    }

    /// Feeds `frame` in `pieces` pieces; returns the bytes the line search examined.
    fn work_in_pieces(frame: &[u8], pieces: usize) -> usize {
        let mut codec = RespCodec::default();
        let mut buf = BytesMut::new();
        let size = frame.len().div_ceil(pieces);
        let mut decoded = 0;
        for chunk in frame.chunks(size) {
            buf.extend_from_slice(chunk);
            while codec.decode(&mut buf).expect("valid").is_some() {
                decoded += 1;
            }
        }
        assert_eq!(decoded, 1);
        codec.work
    }

    #[test]
    fn a_frame_in_many_pieces_costs_linear_work() {
        let payload = vec![b'x'; 200_000];
        let mut bulk = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n".to_vec();
        bulk.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        bulk.extend_from_slice(&payload);
        bulk.extend_from_slice(b"\r\n");
        // Rescanning from the first byte would cost ~N*k/2 = 100 million here.
        assert!(work_in_pieces(&bulk, 2000) < 2 * bulk.len(), "bulk");
        let mut line = b"-".to_vec();
        line.extend_from_slice(&vec![b'e'; 60_000]);
        line.extend_from_slice(b"\r\n");
        assert!(work_in_pieces(&line, 1000) < 2 * line.len(), "line");
    }

    fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
        match frame {
            Frame::Simple(s) => out.extend_from_slice(&[b"+", &s[..], b"\r\n"].concat()),
            Frame::Error(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
            Frame::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Frame::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Frame::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    encode_frame(item, out);
                }
            }
        }
    }

    fn arb_frame() -> impl proptest::strategy::Strategy<Value = Frame> {
        use proptest::prelude::*;
        let text = "[a-zA-Z0-9 :._-]{0,20}";
        let leaf = prop_oneof![
            text.prop_map(|s: String| Frame::Simple(Bytes::from(s))),
            text.prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|b| Frame::Bulk(b.map(Bytes::from))),
            Just(Frame::Array(None)),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(|v| Frame::Array(Some(v)))
        })
    }

    proptest::proptest! {
        /// Any split of a valid byte stream decodes to the same frames as the whole stream.
        #[test]
        fn any_split_decodes_identically(
            frames in proptest::collection::vec(arb_frame(), 1..8),
            cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..12),
        ) {
            let mut bytes = Vec::new();
            for f in &frames {
                encode_frame(f, &mut bytes);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut codec = RespCodec::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut from = 0;
            for cut in cuts {
                buf.extend_from_slice(&bytes[from..cut]);
                from = cut;
                while let Some(f) = codec.decode(&mut buf).expect("valid stream") {
                    out.push(f);
                }
            }
            proptest::prop_assert!(buf.is_empty());
            proptest::prop_assert_eq!(out, frames);
        }
    }
}
