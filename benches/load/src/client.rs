//! WebSocket client connections: a hand-rolled client (the default, see README for the
//! measurement that picked it) and tokio-tungstenite behind the same small interface.
//!
//! Both bind each socket to one of several loopback source addresses before connecting: a
//! single (source address, destination) pair only has the ephemeral port range (~28k ports on
//! this machine) to draw from, so 50k connections need at least two source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::parse::{self, Frame};
use crate::Result;

/// Which client implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ClientKind {
    /// Hand-rolled RFC 6455 client: zero-copy frame parsing out of one read buffer and many
    /// frames per write syscall.
    Raw,
    /// tokio-tungstenite 0.30.
    Tungstenite,
}

/// A parsed `ws://host:port/path?query` pointing at a loopback address.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header.
    pub authority: String,
    /// Path without query, e.g. `/ws`.
    pub path: String,
    /// Query parameters from the URL, kept in order.
    pub query: Vec<String>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("only ws:// URLs are supported, got {url:?}"))?;
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q.split('&').filter(|s| !s.is_empty()).map(String::from).collect()),
            None => (path_query, Vec::new()),
        };
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("{authority} does not resolve to an IPv4 address"))?;
        // This tool generates heavy traffic: refuse anything but this machine.
        if !addr.ip().is_loopback() {
            return Err(format!("refusing non-loopback target {addr}").into());
        }
        Ok(Self { addr, authority: with_port, path: path.to_string(), query })
    }

    /// The request path with the URL's query plus `extra` parameters.
    pub fn request_path(&self, extra: &[String]) -> String {
        let params: Vec<&str> = self.query.iter().chain(extra).map(String::as_str).collect();
        if params.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, params.join("&"))
        }
    }
}

/// Everything needed to open connections, shared by all connection tasks.
#[derive(Debug)]
pub struct Connector {
    /// The first (or only) broker; HTTP publishers use it.
    pub target: Target,
    /// Every broker given with `--url a,b`: connection `idx` goes to `targets[idx % len]`, so
    /// subscribers and publishers spread over several broker nodes.
    pub targets: Vec<Target>,
    pub kind: ClientKind,
    pub batch: bool,
    pub sources: Vec<Ipv4Addr>,
    /// Limits concurrent handshakes so a burst of connects does not overflow the broker's
    /// accept backlog (which turns into slow SYN retransmits).
    pub handshakes: Semaphore,
    pub retries: u32,
    pub timeout: Duration,
    /// Connection attempts that failed and were retried.
    pub retried: AtomicU64,
}

impl Connector {
    /// Source addresses 127.0.0.1 ..= 127.0.0.n.
    pub fn sources(n: u8) -> Vec<Ipv4Addr> {
        (1..=n.max(1)).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
    }

    /// Opens connection number `idx`, with `extra` query parameters (e.g. `channel=a,b`), retrying
    /// politely, and waits for the server's `welcome`.
    pub async fn open(self: &Arc<Self>, idx: usize, extra: &[String]) -> Result<Conn> {
        let mut params = extra.to_vec();
        if self.batch {
            params.push("batch=1".into());
        }
        let target = &self.targets[idx % self.targets.len()];
        let path = target.request_path(&params);
        let src = self.sources[idx % self.sources.len()];
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            let res = {
                // Closed semaphore is impossible (we never close it); treat it as a plain error.
                let _permit = self.handshakes.acquire().await?;
                tokio::time::timeout(self.timeout, self.open_once(target, src, &path)).await
            };
            let err = match res {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => e,
                Err(_) => "connect timed out".into(),
            };
            attempt += 1;
            if attempt > self.retries {
                return Err(format!("connection {idx} from {src}: {err}").into());
            }
            self.retried.fetch_add(1, Ordering::Relaxed);
            // Jitter spreads retries of a failed burst instead of re-synchronising it.
            let jitter = Duration::from_micros(mix(idx as u64 + attempt as u64) % 50_000);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    pub async fn open_once(&self, target: &Target, src: Ipv4Addr, path: &str) -> Result<Conn> {
        let stream = tcp_connect(src, target.addr).await?;
        let mut conn = match self.kind {
            ClientKind::Raw => Conn::Raw(RawWs::handshake(stream, &target.authority, path).await?),
            ClientKind::Tungstenite => {
                let url = format!("ws://{}{}", target.authority, path);
                let (ws, _resp) = tokio_tungstenite::client_async(url, stream).await?;
                Conn::Tung(Box::new(TungWs { ws, last: None }))
            }
        };
        match conn.recv().await? {
            Event::Text(t) => {
                let mut welcome = false;
                parse::for_each_object(t, |f| welcome |= f == Frame::Welcome);
                if !welcome {
                    return Err(format!(
                        "expected welcome, got {:?}",
                        String::from_utf8_lossy(&t[..t.len().min(200)])
                    )
                    .into());
                }
            }
            Event::Closed(code) => return Err(format!("closed before welcome ({code:?})").into()),
        }
        Ok(conn)
    }
}

/// Cheap deterministic mixing (splitmix64) for jitter and mask keys; no need for a CSPRNG in
/// a load generator talking to our own loopback broker.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub async fn tcp_connect(src: Ipv4Addr, dst: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    // Defer the local port choice to connect(), which then only needs the 4-tuple to be unique
    // (instead of reserving a port per source address at bind time).
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by `sock`, pointer/len describe a c_int that outlives the call.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    let stream = sock.connect(dst).await?;
    // Small frames must not wait for Nagle: latency is what we measure.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What `recv` yields.
#[derive(Debug)]
pub enum Event<'a> {
    /// One text (or binary) message payload.
    Text(&'a [u8]),
    /// The server closed (close code if it sent one) or the stream ended.
    Closed(Option<u16>),
}

pub enum Conn {
    Raw(RawWs),
    Tung(Box<TungWs>),
}

pub struct TungWs {
    ws: WebSocketStream<TcpStream>,
    last: Option<tungstenite::Bytes>,
}

impl Conn {
    /// Receives the next message. Cancel-safe: may be used in `select!` next to a timer.
    pub async fn recv(&mut self) -> Result<Event<'_>> {
        match self {
            Conn::Raw(r) => r.recv().await,
            Conn::Tung(t) => {
                let closed = loop {
                    match t.ws.next().await {
                        Some(Ok(Message::Text(s))) => {
                            t.last = Some(s.into());
                            break None;
                        }
                        Some(Ok(Message::Binary(b))) => {
                            t.last = Some(b);
                            break None;
                        }
                        Some(Ok(Message::Close(f))) => break Some(f.map(|f| u16::from(f.code))),
                        // Pings are answered by tungstenite itself.
                        Some(Ok(_)) => continue,
                        Some(Err(tungstenite::Error::ConnectionClosed))
                        | Some(Err(tungstenite::Error::AlreadyClosed))
                        | None => break Some(None),
                        Some(Err(e)) => return Err(e.into()),
                    }
                };
                match closed {
                    Some(code) => Ok(Event::Closed(code)),
                    None => Ok(Event::Text(t.last.as_deref().unwrap_or_default())),
                }
            }
        }
    }

    /// Queues a text message without writing it; `flush` writes everything queued.
    pub async fn queue(&mut self, text: &[u8]) -> Result<()> {
        match self {
            Conn::Raw(r) => {
                r.queue(text);
                Ok(())
            }
            Conn::Tung(t) => {
                let s = String::from_utf8(text.to_vec())?;
                t.ws.feed(Message::text(s)).await?;
                Ok(())
            }
        }
    }

    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Conn::Raw(r) => r.flush().await,
            Conn::Tung(t) => Ok(t.ws.flush().await?),
        }
    }

    /// Best-effort normal close; errors do not matter at the end of a run.
    pub async fn close(&mut self) {
        match self {
            Conn::Raw(r) => r.close().await,
            Conn::Tung(t) => {
                let _ = t.ws.close(None).await;
            }
        }
    }
}

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The Sec-WebSocket-Accept value the server must answer `key` with (RFC 6455 §4.2.2).
fn accept_key(key: &str) -> String {
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
    mask_state: u64,
}

const READ_CHUNK: usize = 64 * 1024;

enum Parsed {
    Data(std::ops::Range<usize>),
    Fragment,
    Close(Option<u16>),
    Control,
}

impl RawWs {
    async fn handshake(mut stream: TcpStream, authority: &str, path: &str) -> Result<Self> {
        let seed = mix(stream.local_addr()?.port() as u64 ^ now_ns());
        let key = base64::engine::general_purpose::STANDARD.encode(seed.to_le_bytes().repeat(2));
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
            mask_state: seed,
        })
    }

    async fn recv(&mut self) -> Result<Event<'_>> {
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
        let buf = &mut self.rbuf[self.start..self.end];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        let opcode = buf[0] & 0x0F;
        let masked = buf[1] & 0x80 != 0;
        let (len, mut hdr) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
            127 if buf.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        if len > 64 * 1024 * 1024 {
            return Err(format!("frame of {len} bytes").into());
        }
        let mask = if masked {
            if buf.len() < hdr + 4 {
                return Ok(None);
            }
            hdr += 4;
            Some([buf[hdr - 4], buf[hdr - 3], buf[hdr - 2], buf[hdr - 1]])
        } else {
            None
        };
        let total = hdr + len as usize;
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
        match opcode {
            0x1 | 0x2 if fin && !self.frag_open => {
                self.consumed = total;
                Ok(Some(Parsed::Data(payload)))
            }
            0x1 | 0x2 => {
                self.frag.clear();
                self.frag.extend_from_slice(&self.rbuf[payload]);
                self.frag_open = true;
                self.start += total;
                Ok(Some(Parsed::Fragment))
            }
            0x0 => {
                self.frag.extend_from_slice(&self.rbuf[payload]);
                self.start += total;
                if fin {
                    self.frag_open = false;
                    Ok(Some(Parsed::Data(usize::MAX..usize::MAX)))
                } else {
                    Ok(Some(Parsed::Fragment))
                }
            }
            0x8 => {
                let p = &self.rbuf[payload];
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                self.start += total;
                Ok(Some(Parsed::Close(code)))
            }
            0x9 => {
                let p = self.rbuf[payload].to_vec();
                self.start += total;
                let mut out = std::mem::take(&mut self.control_out);
                self.encode(0x8A, &p, &mut out);
                self.control_out = out;
                Ok(Some(Parsed::Control))
            }
            _ => {
                self.start += total;
                Ok(Some(Parsed::Control))
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
        // RFC 6455 requires clients to mask; a fresh key per frame from a cheap generator.
        self.mask_state = mix(self.mask_state);
        let key = (self.mask_state as u32).to_ne_bytes();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    }

    fn queue(&mut self, text: &[u8]) {
        let mut out = std::mem::take(&mut self.wbuf);
        self.encode(0x81, text, &mut out);
        self.wbuf = out;
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.control_out.is_empty() {
            self.stream.write_all(&self.control_out).await?;
            self.control_out.clear();
        }
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    async fn close(&mut self) {
        let mut out = Vec::new();
        self.encode(0x88, &1000u16.to_be_bytes(), &mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = Target::parse("ws://127.0.0.1:8080/ws?token=x").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.request_path(&["batch=1".into()]), "/ws?token=x&batch=1");
        let t = Target::parse("ws://localhost:9/ws").expect("valid");
        assert_eq!(t.request_path(&[]), "/ws");
        assert!(Target::parse("ws://192.0.2.1:80/ws").is_err());
        assert!(Target::parse("http://127.0.0.1/ws").is_err());
    }

    /// A minimal server end over a real socket pair: one unmasked text frame, a fragmented
    /// message, a ping, and a close; checks the client reassembles and answers the ping.
    #[tokio::test]
    async fn raw_client_frames_over_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while memchr::memmem::find(&got, b"\r\n\r\n").is_none() {
                let n = s.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8(got).expect("utf8");
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("key")
                .trim()
                .to_string();
            let accept = accept_key(&key);
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            let frame = |op: u8, p: &[u8]| {
                let mut f = vec![op, p.len() as u8];
                f.extend_from_slice(p);
                f
            };
            out.extend(frame(0x81, br#"{"op":"welcome","conn":"c","node":"n"}"#));
            out.extend(frame(0x01, br#"{"op":"o"#));
            out.extend(frame(0x89, b"hi"));
            out.extend(frame(0x80, br#"k","id":3}"#));
            out.extend(frame(0x88, &4001u16.to_be_bytes()));
            s.write_all(&out).await.expect("write");
            // Expect the pong: masked, opcode 0xA, payload "hi".
            let mut pong = [0u8; 8];
            s.read_exact(&mut pong).await.expect("pong");
            assert_eq!(pong[0], 0x8A);
            assert_eq!(pong[1], 0x80 | 2);
            let unmasked = [pong[6] ^ pong[2], pong[7] ^ pong[3]];
            assert_eq!(&unmasked, b"hi");
        });
        let target = Target::parse(&format!("ws://{addr}/ws")).expect("target");
        let c = Arc::new(Connector {
            targets: vec![target.clone()],
            target,
            kind: ClientKind::Raw,
            batch: false,
            sources: Connector::sources(1),
            handshakes: Semaphore::new(1),
            retries: 0,
            timeout: Duration::from_secs(5),
            retried: AtomicU64::new(0),
        });
        let mut conn = c.open(0, &[]).await.expect("open");
        match conn.recv().await.expect("recv") {
            Event::Text(t) => assert_eq!(t, br#"{"op":"ok","id":3}"#),
            other => panic!("unexpected {other:?}"),
        }
        match conn.recv().await.expect("recv") {
            Event::Closed(code) => assert_eq!(code, Some(4001)),
            other => panic!("unexpected {other:?}"),
        }
        server.await.expect("server");
    }
}

#[cfg(test)]
mod accept_tests {
    #[test]
    fn rfc_example_accept() {
        assert_eq!(super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
