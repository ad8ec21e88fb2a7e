//! WebSocket framing (RFC 6455) for the hot path.
//!
//! hyper-tungstenite does the HTTP upgrade; after it, sessions read and write frames with this
//! module on the raw TCP stream. The reason is fan-out cost: the hub encodes each outgoing
//! message into a complete WebSocket frame once, and every subscriber's writer copies those same
//! bytes into its socket buffer. A general WebSocket stream would re-frame the message for
//! every subscriber and flush per message.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes used by the broker (PRODUCT.md §2).
pub mod close {
    /// Also used when a client stopped answering pings (the peer is most likely gone).
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const SLOW_CONSUMER: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4003;
}

/// Length of the header of an unmasked frame with `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends the header of a final, unmasked frame.
pub fn put_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=65535 => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// A complete text frame carrying `payload`.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, OP_TEXT, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// The payload of a frame made by [`text_frame`].
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    let skip = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(skip..).unwrap_or(&[])
}

/// A close frame with `code` and a short reason.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    // Control frames carry at most 125 bytes; cut the reason on a char boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = BytesMut::with_capacity(4 + end);
    put_header(&mut out, OP_CLOSE, 2 + end);
    out.put_u16(code);
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out.freeze()
}

/// A control frame (ping/pong) with `payload`, which must be at most 125 bytes.
pub fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(125)];
    let mut out = BytesMut::with_capacity(2 + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// Any frame, masked as clients must send them or (`mask: None`) not. The broker parses client
/// frames with [`FrameReader`]; this is for clients, tests and benches that play the client.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=65535 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A complete message or control frame received from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<u16>),
}

/// Why the connection must be closed, with the close code to send.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    TooBig { limit: usize },
    Protocol(&'static str),
    InvalidUtf8,
}

impl ReadError {
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::TooBig { .. } => close::TOO_BIG,
            ReadError::Protocol(_) => close::PROTOCOL_ERROR,
            ReadError::InvalidUtf8 => close::INVALID_PAYLOAD,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            ReadError::TooBig { limit } => format!("message over the {limit} byte limit"),
            ReadError::Protocol(why) => (*why).to_string(),
            ReadError::InvalidUtf8 => "text frame is not UTF-8".to_string(),
        }
    }
}

/// Parses masked client frames out of a read buffer, reassembling fragmented messages.
#[derive(Debug)]
pub struct FrameReader {
    max_message: usize,
    /// Opcode and payload of a fragmented message still being received.
    partial: Option<(u8, BytesMut)>,
}

impl FrameReader {
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader { max_message, partial: None }
    }

    /// The next complete message or control frame in `buf`, consuming its bytes; `Ok(None)`
    /// when more bytes are needed. Oversized frames are refused from their header alone, so a
    /// client can never make the broker buffer more than the limit.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Received>, ReadError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (buf[0], buf[1]);
            let fin = b0 & 0x80 != 0;
            if b0 & 0x70 != 0 {
                return Err(ReadError::Protocol("reserved bits set without an extension"));
            }
            let opcode = b0 & 0x0f;
            if b1 & 0x80 == 0 {
                return Err(ReadError::Protocol("client frames must be masked"));
            }
            let (len, mut header) = match b1 & 0x7f {
                126 => {
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
                }
                127 => {
                    if buf.len() < 10 {
                        return Ok(None);
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b), 10)
                }
                n => (n as u64, 2),
            };
            let is_control = opcode >= 0x8;
            if is_control && (!fin || len > 125) {
                return Err(ReadError::Protocol(
                    "control frames must be final and at most 125 bytes",
                ));
            }
            let already = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
            if !is_control && already.saturating_add(len) > self.max_message as u64 {
                return Err(ReadError::TooBig { limit: self.max_message });
            }
            let len = len as usize;
            header += 4;
            if buf.len() < header + len {
                buf.reserve(header + len - buf.len());
                return Ok(None);
            }
            let mask = [buf[header - 4], buf[header - 3], buf[header - 2], buf[header - 1]];
            buf.advance(header);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, mask);
            match opcode {
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message before the fragmented one ended",
                        ));
                    }
                    if fin {
                        return finish(opcode, payload).map(Some);
                    }
                    self.partial = Some((opcode, payload));
                }
                OP_CONTINUATION => {
                    let Some((_, partial)) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol("continuation frame without a message"));
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        if let Some((op, whole)) = self.partial.take() {
                            return finish(op, whole).map(Some);
                        }
                    }
                }
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Received::Close(code)));
                }
                OP_PING => return Ok(Some(Received::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Received::Pong)),
                _ => return Err(ReadError::Protocol("unknown opcode")),
            }
        }
    }
}

fn finish(opcode: u8, payload: BytesMut) -> Result<Received, ReadError> {
    if opcode == OP_TEXT {
        if std::str::from_utf8(&payload).is_err() {
            return Err(ReadError::InvalidUtf8);
        }
        Ok(Received::Text(payload.freeze()))
    } else {
        Ok(Received::Binary(payload.freeze()))
    }
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

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        encode_frame(fin, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]))
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
        let mut buf = BytesMut::from(&frame[..8]);
        assert_eq!(FrameReader::new(1000).next(&mut buf), Err(ReadError::TooBig { limit: 1000 }));
        let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 600]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 600]));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(FrameReader::new(1000).next(&mut buf), Err(ReadError::TooBig { limit: 1000 }));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut unmasked = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert!(matches!(FrameReader::new(10).next(&mut unmasked), Err(ReadError::Protocol(_))));
        let mut stray = BytesMut::from(&client_frame(true, OP_CONTINUATION, b"x")[..]);
        assert!(matches!(FrameReader::new(10).next(&mut stray), Err(ReadError::Protocol(_))));
        let mut bad_utf8 = BytesMut::from(&client_frame(true, OP_TEXT, &[0xff, 0xfe])[..]);
        assert_eq!(FrameReader::new(10).next(&mut bad_utf8), Err(ReadError::InvalidUtf8));
        let mut close = BytesMut::from(&client_frame(true, OP_CLOSE, &1000u16.to_be_bytes())[..]);
        assert_eq!(FrameReader::new(10).next(&mut close), Ok(Some(Received::Close(Some(1000)))));
    }

    /// Arbitrary bytes, whole or split anywhere, never panic the reader or make it buffer
    /// past its limit: every outcome is a frame, "need more", or an error with a close code.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the rounds start from a plausible masked header so parsing gets deep.
            if round % 2 == 0 && len > 6 {
                bytes[0] = 0x80 | (next() % 11) as u8;
                bytes[1] = 0x80 | (next() % 128) as u8;
            }
            let mut reader = FrameReader::new(256);
            let mut buf = BytesMut::new();
            for chunk in bytes.chunks(1 + (next() % 17) as usize) {
                buf.extend_from_slice(chunk);
                loop {
                    match reader.next(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(e) => {
                            assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                            break;
                        }
                    }
                }
                assert!(buf.capacity() < 64 * 1024, "reader buffered far past its limit");
            }
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
}
