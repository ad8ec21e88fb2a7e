//! Reading masked client frames: [`FrameReader`].

use bytes::{Buf, Bytes, BytesMut};

use super::*;

/// A complete message or control frame received from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// A close frame; its code, when present, is one [`valid_close_code`] accepts.
    Close(Option<u16>),
}

/// Why the connection must be closed, with the close code to send.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    TooBig { limit: usize },
    Protocol(&'static str),
    InvalidUtf8,
    InvalidCloseReason,
}

impl ReadError {
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::TooBig { .. } => close::TOO_BIG,
            ReadError::Protocol(_) => close::PROTOCOL_ERROR,
            ReadError::InvalidUtf8 | ReadError::InvalidCloseReason => close::INVALID_PAYLOAD,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            ReadError::TooBig { limit } => format!("message over the {limit} byte limit"),
            ReadError::Protocol(why) => (*why).to_string(),
            ReadError::InvalidUtf8 => "text message is not valid UTF-8".to_string(),
            ReadError::InvalidCloseReason => "close reason is not valid UTF-8".to_string(),
        }
    }
}

/// Parses masked client frames out of a read buffer, reassembling fragmented messages.
///
/// No declared length is trusted. A header is judged (opcode, mask bit, length against the
/// limit) as soon as its bytes are in, and the payload of a frame that has not fully arrived is
/// moved into the message as it comes. So the caller's buffer holds at most what one read
/// added plus a header or a control frame, and a message grows only with bytes received, to at
/// most the limit, however large a length a header announces.
#[derive(Debug)]
pub struct FrameReader {
    max_message: usize,
    /// A text or binary message that has begun but not ended.
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    opcode: u8,
    data: Vec<u8>,
    /// How much of `data` is known to be UTF-8 (text only); after it comes at most the start
    /// of a code point whose other bytes have not arrived.
    checked: usize,
    /// The data frame whose payload is still arriving.
    frame: Option<Payload>,
}

#[derive(Debug)]
struct Payload {
    fin: bool,
    remaining: usize,
    /// The mask, turned so that its first byte applies to the next payload byte.
    mask: [u8; 4],
}

struct Header {
    fin: bool,
    opcode: u8,
    len: usize,
    mask: [u8; 4],
    /// Header bytes, mask included.
    size: usize,
}

enum Step {
    /// The frame's payload has not all arrived.
    More,
    /// The frame ended; its message goes on.
    Next,
    Done(Received),
}

impl FrameReader {
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader { max_message, partial: None }
    }

    /// Bytes allocated for a message still arriving; never more than the limit.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    /// The next complete message or control frame in `buf`, consuming its bytes; `Ok(None)`
    /// when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Received>, ReadError> {
        loop {
            if self.partial.as_ref().is_some_and(|p| p.frame.is_some()) {
                match self.take_payload(buf)? {
                    Step::More => return Ok(None),
                    Step::Next => continue,
                    Step::Done(message) => return Ok(Some(message)),
                }
            }
            let Some(h) = self.header(buf)? else { return Ok(None) };
            let complete = buf.len() - h.size >= h.len;
            let is_control = h.opcode & 0x8 != 0;
            // Control frames are at most 125 bytes: they wait whole in the buffer.
            if is_control && !complete {
                return Ok(None);
            }
            // The common case, a whole unfragmented frame: unmasked in place, no copy.
            if is_control || (complete && h.fin && self.partial.is_none()) {
                buf.advance(h.size);
                let mut payload = buf.split_to(h.len);
                unmask(&mut payload, h.mask);
                return single(h.opcode, payload).map(Some);
            }
            buf.advance(h.size);
            let partial = self.partial.get_or_insert_with(|| Partial::new(h.opcode));
            partial.frame = Some(Payload { fin: h.fin, remaining: h.len, mask: h.mask });
        }
    }

    /// The header at the start of `buf`, checked as far as it has arrived: a frame that breaks
    /// the protocol or the limit fails before the rest of it (or any payload) is waited for.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, ReadError> {
        let Some(&b0) = buf.first() else { return Ok(None) };
        self.check_first_byte(b0)?;
        let Some(&b1) = buf.get(1) else { return Ok(None) };
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let (len, size) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let opcode = b0 & 0x0f;
        if len >> 63 != 0 {
            return Err(ReadError::Protocol("64-bit frame length with its top bit set"));
        }
        if opcode & 0x8 != 0 && len > 125 {
            return Err(ReadError::Protocol("control frames must be at most 125 bytes"));
        }
        let already = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
        if already.saturating_add(len) > self.max_message as u64 && opcode & 0x8 == 0 {
            return Err(ReadError::TooBig { limit: self.max_message });
        }
        let Some(mask) = buf.get(size..size + 4).and_then(|m| <[u8; 4]>::try_from(m).ok()) else {
            return Ok(None);
        };
        // Within the limit (or 125 for control frames), so it fits in a usize.
        let len = len as usize;
        Ok(Some(Header { fin: b0 & 0x80 != 0, opcode, len, mask, size: size + 4 }))
    }

    /// Judges a frame by its first byte alone.
    fn check_first_byte(&self, b0: u8) -> Result<(), ReadError> {
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set without an extension"));
        }
        let fin = b0 & 0x80 != 0;
        let why = match (b0 & 0x0f, self.partial.is_some()) {
            (OP_CONTINUATION, false) => "continuation frame without a message",
            (OP_TEXT | OP_BINARY, true) => "new message before the fragmented one ended",
            (OP_CONTINUATION | OP_TEXT | OP_BINARY, _) => return Ok(()),
            (OP_CLOSE | OP_PING | OP_PONG, _) if fin => return Ok(()),
            (OP_CLOSE | OP_PING | OP_PONG, _) => "control frames must not be fragmented",
            _ => "reserved opcode",
        };
        Err(ReadError::Protocol(why))
    }

    /// Moves what has arrived of the current data frame's payload into its message.
    fn take_payload(&mut self, buf: &mut BytesMut) -> Result<Step, ReadError> {
        let limit = self.max_message;
        let Some(partial) = self.partial.as_mut() else { return Ok(Step::Next) };
        let Some(mut frame) = partial.frame.take() else { return Ok(Step::Next) };
        let n = frame.remaining.min(buf.len());
        if n > 0 {
            partial.append(&buf[..n], frame.mask, limit);
            buf.advance(n);
            frame.remaining -= n;
            frame.mask.rotate_left(n % 4);
            partial.check_utf8()?;
        }
        if frame.remaining > 0 {
            partial.frame = Some(frame);
            return Ok(Step::More);
        }
        if !frame.fin {
            return Ok(Step::Next);
        }
        let message = partial.finish()?;
        self.partial = None;
        Ok(Step::Done(message))
    }
}

impl Partial {
    fn new(opcode: u8) -> Partial {
        Partial { opcode, data: Vec::new(), checked: 0, frame: None }
    }

    /// Appends `masked`, unmasked. The caller checked that the message stays within `limit`.
    fn append(&mut self, masked: &[u8], mask: [u8; 4], limit: usize) {
        let need = self.data.len() + masked.len();
        if need > self.data.capacity() {
            // Doubling keeps copies amortized; capping it at the limit keeps a message that
            // reaches the limit from holding nearly twice it.
            let target = self.data.capacity().saturating_mul(2).clamp(need, limit.max(need));
            self.data.reserve_exact(target - self.data.len());
        }
        let start = self.data.len();
        self.data.extend_from_slice(masked);
        unmask(&mut self.data[start..], mask);
    }

    /// Validates the text received since the last call, so invalid UTF-8 fails as soon as it
    /// arrives; a code point cut by a frame or read boundary waits for its other bytes.
    fn check_utf8(&mut self) -> Result<(), ReadError> {
        if self.opcode != OP_TEXT {
            return Ok(());
        }
        let unchecked = &self.data[self.checked..];
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.checked = self.data.len(),
            // `error_len() == None`: the bytes at the end are a valid start of a code point.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(ReadError::InvalidUtf8),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Received, ReadError> {
        let data = Bytes::from(std::mem::take(&mut self.data));
        if self.opcode != OP_TEXT {
            return Ok(Received::Binary(data));
        }
        if self.checked != data.len() {
            return Err(ReadError::InvalidUtf8);
        }
        Ok(Received::Text(data))
    }
}

/// A whole frame that is a message by itself, or a control frame.
fn single(opcode: u8, payload: BytesMut) -> Result<Received, ReadError> {
    match opcode {
        OP_TEXT if std::str::from_utf8(&payload).is_err() => Err(ReadError::InvalidUtf8),
        OP_TEXT => Ok(Received::Text(payload.freeze())),
        OP_PING => Ok(Received::Ping(payload.freeze())),
        OP_PONG => Ok(Received::Pong),
        OP_CLOSE => close_payload(&payload),
        _ => Ok(Received::Binary(payload.freeze())),
    }
}

/// A close frame's payload: nothing, or a code that may be sent and a UTF-8 reason.
fn close_payload(payload: &[u8]) -> Result<Received, ReadError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        if payload.is_empty() {
            return Ok(Received::Close(None));
        }
        return Err(ReadError::Protocol("close frame with a 1-byte payload"));
    };
    let code = u16::from_be_bytes(*code);
    if !valid_close_code(code) {
        return Err(ReadError::Protocol("close code that may not be sent"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(ReadError::InvalidCloseReason);
    }
    Ok(Received::Close(Some(code)))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        encode_frame(fin, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]))
    }

    fn read_all(bytes: &[u8], limit: usize) -> Result<Option<Received>, ReadError> {
        FrameReader::new(limit).next(&mut BytesMut::from(bytes))
    }

    #[test]
    fn reads_text_of_every_length_class() {
        for n in [0, 1, 125, 126, 1000, 65535, 65536, 100_000] {
            let text = "x".repeat(n);
            let mut buf = BytesMut::from(&client_frame(true, OP_TEXT, text.as_bytes())[..]);
            let got = FrameReader::new(200_000).next(&mut buf).expect("frame");
            assert_eq!(got, Some(Received::Text(Bytes::from(text))), "{n}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn waits_for_more_bytes_byte_by_byte() {
        let whole = client_frame(true, OP_TEXT, b"hello world");
        let mut reader = FrameReader::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let r = reader.next(&mut buf).expect("no error");
            if i + 1 < whole.len() {
                assert_eq!(r, None);
            } else {
                assert_eq!(r, Some(Received::Text(Bytes::from_static(b"hello world"))));
            }
        }
    }

    #[test]
    fn reassembles_fragments_around_control_frames() {
        let mut bytes = client_frame(false, OP_TEXT, b"hel");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"lo"));
        let mut buf = BytesMut::from(&bytes[..]);
        let mut r = FrameReader::new(1024);
        assert_eq!(r.next(&mut buf), Ok(Some(Received::Ping(Bytes::from_static(b"p")))));
        assert_eq!(r.next(&mut buf), Ok(Some(Received::Text(Bytes::from_static(b"hello")))));
    }

    #[test]
    fn refuses_oversized_frames_from_the_header() {
        let frame = client_frame(true, OP_TEXT, &[b'a'; 2000]);
        assert_eq!(read_all(&frame[..4], 1000), Err(ReadError::TooBig { limit: 1000 }));
        let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 600]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 600]));
        assert_eq!(read_all(&bytes, 1000), Err(ReadError::TooBig { limit: 1000 }));
    }

    /// A header announcing far more than has arrived reserves nothing for it: the payload is
    /// held only as it comes, and the caller's buffer is drained.
    #[test]
    fn a_header_alone_reserves_nothing() {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        header.extend_from_slice(&[0u8; 100]);
        let mut reader = FrameReader::new(1 << 41);
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(reader.next(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert!(reader.buffered() < 4096, "holds {}", reader.buffered());
    }

    #[test]
    fn a_length_with_its_top_bit_set_is_a_protocol_error() {
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
        let got = read_all(&header, usize::MAX);
        assert_eq!(got.map_err(|e| e.close_code()), Err(1002));
    }

    #[test]
    fn reserved_opcodes_fail_on_the_first_byte() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            let got = read_all(&[0x80 | op], 1024);
            assert_eq!(got, Err(ReadError::Protocol("reserved opcode")), "opcode {op:#x}");
        }
    }

    #[test]
    fn protocol_violations_are_errors() {
        let unmasked = [0x81u8, 0x01, b'a'];
        assert!(matches!(read_all(&unmasked, 10), Err(ReadError::Protocol(_))));
        let stray = client_frame(true, OP_CONTINUATION, b"x");
        assert!(matches!(read_all(&stray, 10), Err(ReadError::Protocol(_))));
        let bad_utf8 = client_frame(true, OP_TEXT, &[0xff, 0xfe]);
        assert_eq!(read_all(&bad_utf8, 10), Err(ReadError::InvalidUtf8));
        let close = client_frame(true, OP_CLOSE, &1000u16.to_be_bytes());
        assert_eq!(read_all(&close, 10), Ok(Some(Received::Close(Some(1000)))));
    }

    /// Invalid UTF-8 fails in the first fragment that shows it, even when the frame itself has
    /// not fully arrived, while a code point split across fragments is fine.
    #[test]
    fn utf8_is_checked_fragment_by_fragment() {
        let mut reader = FrameReader::new(1024);
        let mut buf = BytesMut::from(&client_frame(false, OP_TEXT, "a€".as_bytes())[..6 + 2]);
        assert_eq!(reader.next(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&client_frame(false, OP_TEXT, b"ok \xF4\x90")[..]);
        assert_eq!(FrameReader::new(1024).next(&mut buf), Err(ReadError::InvalidUtf8));
        let mut buf = BytesMut::from(&client_frame(true, OP_TEXT, b"ok \xC0 and more")[..10]);
        assert_eq!(FrameReader::new(1024).next(&mut buf), Err(ReadError::InvalidUtf8));

        let euro = "€".as_bytes();
        let mut bytes = client_frame(false, OP_TEXT, &euro[..1]);
        bytes.extend(client_frame(false, OP_CONTINUATION, &euro[1..2]));
        bytes.extend(client_frame(true, OP_CONTINUATION, &euro[2..]));
        assert_eq!(read_all(&bytes, 1024), Ok(Some(Received::Text(Bytes::from_static(euro)))));
        let mut cut = client_frame(false, OP_TEXT, &euro[..2]);
        cut.extend(client_frame(true, OP_CONTINUATION, b""));
        assert_eq!(read_all(&cut, 1024), Err(ReadError::InvalidUtf8));
    }

    #[test]
    fn close_frames_carry_a_valid_code_and_a_utf8_reason() {
        let close = |payload: &[u8]| read_all(&client_frame(true, OP_CLOSE, payload), 10);
        assert_eq!(close(b""), Ok(Some(Received::Close(None))));
        assert_eq!(close(b"\x03"), Err(ReadError::Protocol("close frame with a 1-byte payload")));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let got = close(&code.to_be_bytes()).map_err(|e| e.close_code());
            assert_eq!(got, Err(1002), "code {code}");
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert_eq!(close(&code.to_be_bytes()), Ok(Some(Received::Close(Some(code)))));
        }
        assert_eq!(close(b"\x03\xe8bye \xce\xba"), Ok(Some(Received::Close(Some(1000)))));
        assert_eq!(close(b"\x03\xe8\xff"), Err(ReadError::InvalidCloseReason));
        assert_eq!(ReadError::InvalidCloseReason.close_code(), 1007);
    }

    #[test]
    fn sec_websocket_keys_are_base64_of_16_bytes() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",   // no padding
            b"dGhlIHNhbXBsZSBub25jZR==", // bits past the 16 bytes
            b"dGhlIHNhbXBsZSBub25j",     // 15 bytes
            b"dGhlIHNhbXBsZSBub25jZQQ=", // 17 bytes
            b"dGhlIHNhbXBsZSBub2*jZQ==", // not base64
            b"dGhlIHNhbXBsZSBub25jZQ== ",
        ] {
            assert!(!valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn server_frames_round_trip() {
        for n in [0, 5, 125, 126, 70_000] {
            let payload = vec![b'z'; n];
            let frame = text_frame(&payload);
            assert_eq!(frame.len(), header_len(n) + n);
            assert_eq!(frame_payload(&frame), &payload[..]);
        }
        let c = close_frame(4001, "slow consumer");
        assert_eq!(&c[..4], &[0x88, 15, 0x0f, 0xa1]);
    }

    const LIMIT: usize = 4096;
    const MAX_CHUNK: usize = 64;
    /// The most a caller's buffer keeps between reads: a control frame one byte short.
    const MAX_LEFT: usize = 6 + 125 - 1;

    /// Feeds `bytes` in chunks of the given sizes (cycled), as the session does from its
    /// socket, checking after every chunk that nothing holds more than it should. Returns the
    /// messages read and the error that ended the stream, if any.
    fn feed(
        bytes: &[u8],
        chunks: &[usize],
    ) -> Result<(Vec<Received>, Option<ReadError>), TestCaseError> {
        let mut reader = FrameReader::new(LIMIT);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut sizes = chunks.iter().cycle();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match reader.next(&mut buf) {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
                        return Ok((got, Some(e)));
                    }
                }
            }
            prop_assert!(buf.len() <= MAX_LEFT, "left {} bytes in the buffer", buf.len());
            // Only the caller's own growth (at most doubling) sizes its buffer, never a length
            // some header declared.
            prop_assert!(buf.capacity() <= 4 * (MAX_LEFT + MAX_CHUNK), "{}", buf.capacity());
            prop_assert!(reader.buffered() <= LIMIT, "message holds {}", reader.buffered());
        }
        Ok((got, None))
    }

    /// One frame as a fuzzer sees it: mostly well-formed, sometimes not.
    fn any_frame() -> impl Strategy<Value = Vec<u8>> {
        let payload = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1500),
            ".{0,300}".prop_map(String::into_bytes),
        ];
        let opcode = prop_oneof![4 => 0u8..3, 2 => 8u8..11, 1 => 0u8..16];
        let length = prop::option::weighted(0.1, any::<u64>());
        (any::<bool>(), opcode, payload, prop::bool::weighted(0.97), length).prop_map(
            |(fin, opcode, payload, masked, length)| {
                let mask = masked.then_some([0xa5, 0x3c, 0x0f, 0x71]);
                let mut frame = encode_frame(fin, opcode, &payload, mask);
                if let Some(len) = length {
                    // Claim another length, with every encoding.
                    let mut head = vec![frame[0], (frame[1] & 0x80) | 127];
                    head.extend_from_slice(&len.to_be_bytes());
                    let old = header_len(payload.len());
                    frame.splice(..old, head);
                }
                frame
            },
        )
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1..=MAX_CHUNK, 1..8)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_overbuffer(
            bytes in prop::collection::vec(any::<u8>(), 0..4000),
            chunks in chunk_sizes(),
        ) {
            feed(&bytes, &chunks)?;
        }

        #[test]
        fn arbitrary_frame_sequences_never_panic_or_overbuffer(
            frames in prop::collection::vec(any_frame(), 0..12),
            chunks in chunk_sizes(),
        ) {
            feed(&frames.concat(), &chunks)?;
        }

        /// A valid text message cut into fragments anywhere (code points included), with
        /// pings between them and fed in any chunks, reads back exactly.
        #[test]
        fn fragmented_text_reads_back_exactly(
            text in ".{0,600}",
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            chunks in chunk_sizes(),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(text.len() + 1)).collect();
            at.push(0);
            at.push(text.len());
            at.sort_unstable();
            at.dedup();
            let pieces: Vec<&[u8]> = at.windows(2).map(|w| &text.as_bytes()[w[0]..w[1]]).collect();
            let mut bytes = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
                bytes.extend(client_frame(i + 1 == pieces.len(), op, piece));
                bytes.extend(client_frame(true, OP_PING, &[i as u8]));
            }
            if pieces.is_empty() {
                bytes.extend(client_frame(true, OP_TEXT, b""));
            }
            let (got, err) = feed(&bytes, &chunks)?;
            prop_assert_eq!(err, None);
            let texts: Vec<&Received> =
                got.iter().filter(|m| matches!(m, Received::Text(_))).collect();
            let want = Received::Text(Bytes::from(text.clone()));
            prop_assert_eq!(texts, vec![&want]);
            prop_assert_eq!(got.len(), pieces.len() + 1);
        }
    }
}
