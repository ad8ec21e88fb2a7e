//! WebSocket framing (RFC 6455) for the hot path.
//!
//! hyper-tungstenite does the HTTP upgrade; after it, sessions read and write frames with this
//! module on the raw TCP stream. The reason is fan-out cost: the hub encodes each outgoing
//! message into a complete WebSocket frame once, and every subscriber's writer copies those same
//! bytes into its socket buffer. A general WebSocket stream would re-frame the message for
//! every subscriber and flush per message.

use bytes::{BufMut, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes the broker sends.
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
    /// The node lost messages of a history channel that history no longer holds: resubscribe
    /// with your position (you will be told `recovered: false`).
    pub const HISTORY_GAP: u16 = 4004;
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

/// Whether `code` may be sent in a close frame (RFC 6455 §7.4; 1012-1014 were registered
/// later). 1005, 1006 and 1015 only stand for "no code" or a failure inside an endpoint.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether `key` is a well-formed `Sec-WebSocket-Key`: base64 of exactly 16 bytes.
pub fn valid_key(key: &[u8]) -> bool {
    // 16 bytes are 22 base64 characters and "==". The last character carries only two bits of
    // data; a canonical encoding leaves its other four zero, so it is one of A, Q, g, w.
    let [body @ .., last, b'=', b'='] = key else { return false };
    body.len() == 21
        && body.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && matches!(last, b'A' | b'Q' | b'g' | b'w')
}

mod reader;

pub use reader::{FrameReader, ReadError, Received};
