//! The hand-rolled client side of RFC 6455 (the default client; see README for the
//! measurement that picked it): zero-copy frame parsing out of one read buffer and many frames
//! per write syscall, for text frames from a well-behaved server.
//!
//! The upgrade handshake is written by hand too, on purpose: the point of this client is to
//! own every byte on the socket, and an upgrade is one fixed request.

use base64::Engine as _;
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::Event;
use crate::Result;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The Sec-WebSocket-Accept value the server must answer `key` with (RFC 6455 §4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Hand-rolled client side of RFC 6455, for text frames from a well-behaved server.
pub struct RawWs {
    stream: TcpStream,
    /// Received bytes live in `rbuf[start..end]`.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of the frame returned last time, dropped at the next `recv`.
    consumed: usize,
    /// Reassembly of a fragmented message.
    frag: Vec<u8>,
    frag_open: bool,
    wbuf: Vec<u8>,
    /// Pong (or close echo) frames not yet written; written without awaiting so `recv` stays
    /// cancel-safe.
    control_out: Vec<u8>,
    /// Mask keys: RFC 6455 wants them unpredictable to the network, not secret, so a fast
    /// non-cryptographic generator (seeded per connection from the thread's) is enough.
    masks: fastrand::Rng,
}

const READ_CHUNK: usize = 64 * 1024;

enum Parsed {
    Data(std::ops::Range<usize>),
    Fragment,
    Close(Option<u16>),
    Control,
}

/// The fixed part of a frame: flags, opcode, payload length and mask.
struct FrameHead {
    fin: bool,
    opcode: u8,
    len: usize,
    mask: Option<[u8; 4]>,
    /// Bytes of the head itself (2 to 14).
    size: usize,
}

/// Frames past this are refused: the broker never sends them, and a corrupt length must not
/// make the client allocate gigabytes.
const MAX_FRAME: u64 = 64 * 1024 * 1024;

impl FrameHead {
    /// The head at the start of `buf`; `None` until all of it has arrived.
    fn parse(buf: &[u8]) -> Result<Option<FrameHead>> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (len, mut size) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
            127 if buf.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes").into());
        }
        let mask = if buf[1] & 0x80 != 0 {
            if buf.len() < size + 4 {
                return Ok(None);
            }
            size += 4;
            Some([buf[size - 4], buf[size - 3], buf[size - 2], buf[size - 1]])
        } else {
            None
        };
        let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0F);
        // `len` is at most MAX_FRAME, which fits any usize this tool runs on.
        Ok(Some(FrameHead { fin, opcode, len: len as usize, mask, size }))
    }
}

impl RawWs {
    pub(crate) async fn handshake(
        mut stream: TcpStream,
        authority: &str,
        path: &str,
    ) -> Result<Self> {
        let mut masks = fastrand::Rng::new();
        let nonce: [u8; 16] = std::array::from_fn(|_| masks.u8(..));
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let head_end = loop {
            if buf.len() > 16 * 1024 {
                return Err("oversized handshake response".into());
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err("connection closed during handshake".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])?;
        let status = head.split_ascii_whitespace().nth(1).unwrap_or("?");
        if status != "101" {
            let first = head.lines().next().unwrap_or_default();
            return Err(format!("handshake refused: {first}").into());
        }
        let expect = accept_key(&key);
        let accept_ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expect
            })
        });
        if !accept_ok {
            return Err(format!("bad Sec-WebSocket-Accept (want {expect}): {head:?}").into());
        }
        // Bytes after the response head are already WebSocket frames (the welcome, usually).
        let leftover = buf.len() - head_end;
        let mut rbuf = vec![0u8; READ_CHUNK.max(leftover)];
        rbuf[..leftover].copy_from_slice(&buf[head_end..]);
        Ok(Self {
            stream,
            rbuf,
            start: 0,
            end: leftover,
            consumed: 0,
            frag: Vec::new(),
            frag_open: false,
            wbuf: Vec::new(),
            control_out: Vec::new(),
            masks,
        })
    }

    pub(crate) async fn recv(&mut self) -> Result<Event<'_>> {
        self.start += std::mem::take(&mut self.consumed);
        let range = loop {
            self.write_control()?;
            match self.parse_frame()? {
                Some(Parsed::Data(r)) => break r,
                Some(Parsed::Fragment) | Some(Parsed::Control) => continue,
                Some(Parsed::Close(code)) => return Ok(Event::Closed(code)),
                None => {
                    if !self.fill().await? {
                        return Ok(Event::Closed(None));
                    }
                }
            }
        };
        if range.start == usize::MAX {
            Ok(Event::Text(&self.frag))
        } else {
            Ok(Event::Text(&self.rbuf[range]))
        }
    }

    /// Reads more bytes. Returns false at end of stream.
    async fn fill(&mut self) -> Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.rbuf.len() {
            // Make room: slide the partial frame to the front, grow if it alone fills the buffer.
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.rbuf.len() {
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.rbuf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Parses one frame at `start` if it is complete. Data frames stay in place (the returned
    /// range, with `consumed` set); fragments are copied out to `frag`, and a finished fragmented
    /// message is signalled by a range starting at usize::MAX.
    fn parse_frame(&mut self) -> Result<Option<Parsed>> {
        let Some(head) = FrameHead::parse(&self.rbuf[self.start..self.end])? else {
            return Ok(None);
        };
        let FrameHead { fin, opcode, len, mask, size: hdr } = head;
        let buf = &mut self.rbuf[self.start..self.end];
        let total = hdr + len;
        if buf.len() < total {
            // Make sure a large frame can fit once we slide it to the front.
            if total > self.rbuf.len() {
                let used = self.end - self.start;
                self.rbuf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = used;
                self.rbuf.resize(total.next_power_of_two(), 0);
            }
            return Ok(None);
        }
        if let Some(m) = mask {
            // Servers must not mask, but unmasking is cheap and harmless.
            for (i, b) in buf[hdr..total].iter_mut().enumerate() {
                *b ^= m[i & 3];
            }
        }
        let payload = self.start + hdr..self.start + total;
        Ok(Some(self.take_frame(fin, opcode, payload, total)))
    }

    /// Consumes the complete frame at `start` (`total` bytes, `payload` within the buffer).
    fn take_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: std::ops::Range<usize>,
        total: usize,
    ) -> Parsed {
        match opcode {
            0x1 | 0x2 if fin && !self.frag_open => {
                self.consumed = total;
                Parsed::Data(payload)
            }
            0x1 | 0x2 => {
                self.frag.clear();
                self.frag.extend_from_slice(&self.rbuf[payload]);
                self.frag_open = true;
                self.start += total;
                Parsed::Fragment
            }
            0x0 => {
                self.frag.extend_from_slice(&self.rbuf[payload]);
                self.start += total;
                if fin {
                    self.frag_open = false;
                    Parsed::Data(usize::MAX..usize::MAX)
                } else {
                    Parsed::Fragment
                }
            }
            0x8 => {
                let p = &self.rbuf[payload];
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                self.start += total;
                Parsed::Close(code)
            }
            0x9 => {
                let p = self.rbuf[payload].to_vec();
                self.start += total;
                let mut out = std::mem::take(&mut self.control_out);
                self.encode(0x8A, &p, &mut out);
                self.control_out = out;
                Parsed::Control
            }
            _ => {
                self.start += total;
                Parsed::Control
            }
        }
    }

    /// Writes pending control frames without awaiting (keeps `recv` cancel-safe); whatever the
    /// socket does not take now is retried on the next call.
    fn write_control(&mut self) -> Result<()> {
        while !self.control_out.is_empty() {
            match self.stream.try_write(&self.control_out) {
                Ok(n) => {
                    self.control_out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn encode(&mut self, first: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(first);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // RFC 6455 requires clients to mask, with a fresh key per frame.
        let key = self.masks.u32(..).to_ne_bytes();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    }

    /// Queues a text message that the next `recv` (or `flush`) writes without awaiting, like a
    /// pong: for a protocol's own keep-alive answers (NATS `PONG`).
    pub(crate) fn queue_control_text(&mut self, text: &[u8]) {
        let mut out = std::mem::take(&mut self.control_out);
        self.encode(0x81, text, &mut out);
        self.control_out = out;
    }

    pub(crate) fn queue(&mut self, text: &[u8]) {
        let mut out = std::mem::take(&mut self.wbuf);
        self.encode(0x81, text, &mut out);
        self.wbuf = out;
    }

    pub(crate) async fn flush(&mut self) -> Result<()> {
        if !self.control_out.is_empty() {
            self.stream.write_all(&self.control_out).await?;
            self.control_out.clear();
        }
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    pub(crate) async fn close(&mut self) {
        let mut out = Vec::new();
        self.encode(0x88, &1000u16.to_be_bytes(), &mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc_example_accept() {
        assert_eq!(super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
