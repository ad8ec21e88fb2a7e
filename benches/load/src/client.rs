//! WebSocket client connections: a hand-rolled client ([`RawWs`], the default, see README for
//! the measurement that picked it) and tokio-tungstenite behind the same small interface.
//!
//! Both bind each socket to one of several loopback source addresses before connecting: a
//! single (source address, destination) pair only has the ephemeral port range (~28k ports on
//! this machine) to draw from, so 50k connections need at least two source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchyard_backend::backoff::Backoff;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::nats;
use crate::parse::{self, Frame};
pub use crate::rawws::RawWs;
use crate::Result;

/// The first pause after a failed connection attempt, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Which client implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ClientKind {
    /// Hand-rolled RFC 6455 client: zero-copy frame parsing out of one read buffer and many
    /// frames per write syscall.
    Raw,
    /// tokio-tungstenite 0.30.
    Tungstenite,
}

/// The protocol spoken inside the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// switchyard's JSON frames (`ws://`).
    #[default]
    Switchyard,
    /// The NATS text protocol, as nats-server's `websocket {}` listener speaks it
    /// (`nats+ws://`); see nats.rs.
    Nats,
}

impl Proto {
    /// Calls `f` for every server frame in a received message (see [`Conn::recv`]).
    pub fn for_each_frame<'a>(self, payload: &'a [u8], f: impl FnMut(Frame<'a>)) -> usize {
        match self {
            Proto::Switchyard => parse::for_each_object(payload, f),
            Proto::Nats => nats::for_each_frame(payload, f),
        }
    }

    /// Writes one publish of the bench payload (`id` is the switchyard request id; NATS has
    /// none).
    pub fn publish(
        self,
        out: &mut Vec<u8>,
        channel: &str,
        stream: u32,
        seq: u64,
        id: u64,
        pad: &str,
    ) {
        match self {
            Proto::Switchyard => crate::scenario::publish_frame(out, channel, stream, seq, id, pad),
            Proto::Nats => nats::publish(out, channel, stream, seq, pad),
        }
    }

    /// Whether the server answers each publish (switchyard's `ok`/`error`); core NATS does not,
    /// so a publish there counts as accepted once written.
    pub fn acks_publishes(self) -> bool {
        self == Proto::Switchyard
    }
}

/// A parsed `ws://host:port/path?query` (or `nats+ws://`) pointing at a loopback address.
#[derive(Debug, Clone)]
pub struct Target {
    pub proto: Proto,
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
        let (proto, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Proto::Switchyard, rest)
        } else if let Some(rest) = url.strip_prefix("nats+ws://") {
            (Proto::Nats, rest)
        } else {
            return Err(format!("only ws:// and nats+ws:// URLs are supported, got {url:?}").into());
        };
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
        Ok(Self { proto, addr, authority: with_port, path: path.to_string(), query })
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
        // Jittered: a burst of connects that failed together must not retry in step.
        let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
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
            if backoff.failures() >= self.retries {
                return Err(format!("connection {idx} from {src}: {err}").into());
            }
            self.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    pub async fn open_once(&self, target: &Target, src: Ipv4Addr, path: &str) -> Result<Conn> {
        let stream = tcp_connect(src, target.addr).await?;
        let ws = match self.kind {
            ClientKind::Raw => Ws::Raw(RawWs::handshake(stream, &target.authority, path).await?),
            ClientKind::Tungstenite => {
                if target.proto == Proto::Nats {
                    // It answers pings itself but cannot queue a NATS PONG without awaiting.
                    return Err("nats+ws:// needs the raw client".into());
                }
                let url = format!("ws://{}{}", target.authority, path);
                let (ws, _resp) = tokio_tungstenite::client_async(url, stream).await?;
                Ws::Tung(Box::new(TungWs { ws, last: None }))
            }
        };
        let nats = (target.proto == Proto::Nats).then(NatsIn::default);
        let mut conn = Conn { ws, nats };
        let proto = conn.proto();
        match conn.recv().await? {
            Event::Text(t) => {
                let mut welcome = false;
                proto.for_each_frame(t, |f| welcome |= f == Frame::Welcome);
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
        if proto == Proto::Nats {
            conn.queue(nats::CONNECT).await?;
            conn.flush().await?;
            conn.await_pong().await?;
        }
        Ok(conn)
    }
}

pub async fn tcp_connect(src: Ipv4Addr, dst: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    // Defer the local port choice to connect(), which then only needs the 4-tuple to be unique
    // (instead of reserving a port per source address at bind time). Best effort, as before:
    // without it (a kernel before 4.2) connections still work, only fewer fit.
    let _ =
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::IpBindAddressNoPort, &true);
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

/// One client connection: a WebSocket and, for NATS, the byte stream reassembled from it.
pub struct Conn {
    ws: Ws,
    nats: Option<NatsIn>,
}

enum Ws {
    Raw(RawWs),
    Tung(Box<TungWs>),
}

/// NATS bytes received and not yet handed out; the first `consumed` were handed out last time.
#[derive(Default)]
struct NatsIn {
    buf: Vec<u8>,
    consumed: usize,
}

pub struct TungWs {
    ws: WebSocketStream<TcpStream>,
    last: Option<tungstenite::Bytes>,
}

impl Conn {
    pub fn proto(&self) -> Proto {
        if self.nats.is_some() {
            Proto::Nats
        } else {
            Proto::Switchyard
        }
    }

    /// Receives the next message: one WebSocket message for switchyard, one run of complete
    /// operations for NATS (whose `PING`s are answered on the way). Read it with
    /// [`Proto::for_each_frame`]. Cancel-safe: may be used in `select!` next to a timer.
    pub async fn recv(&mut self) -> Result<Event<'_>> {
        let Conn { ws, nats } = self;
        let Some(n) = nats else {
            return ws.recv().await;
        };
        n.buf.drain(..std::mem::take(&mut n.consumed));
        let end = loop {
            let (end, pings) = nats::complete(&n.buf)?;
            for _ in 0..pings {
                ws.queue_control_text(nats::PONG)?;
            }
            if end > 0 {
                break end;
            }
            match ws.recv().await? {
                Event::Text(t) => n.buf.extend_from_slice(t),
                Event::Closed(code) => return Ok(Event::Closed(code)),
            }
        };
        n.consumed = end;
        Ok(Event::Text(&n.buf[..end]))
    }

    /// NATS: waits for the `PONG` that answers our `PING` (every operation sent before it has
    /// been processed); a `-ERR` or a close before it is an error.
    pub async fn await_pong(&mut self) -> Result<()> {
        let proto = self.proto();
        loop {
            match self.recv().await? {
                Event::Text(t) => {
                    let (mut pong, mut err) = (false, None);
                    proto.for_each_frame(t, |f| match f {
                        Frame::Pong { .. } => pong = true,
                        Frame::Error { code, .. } => err = Some(code.to_string()),
                        Frame::Malformed => err = Some("malformed NATS operation".into()),
                        _ => {}
                    });
                    if let Some(e) = err {
                        return Err(format!("server said -ERR {e}").into());
                    }
                    if pong {
                        return Ok(());
                    }
                }
                Event::Closed(code) => return Err(format!("closed before PONG ({code:?})").into()),
            }
        }
    }

    pub async fn queue(&mut self, text: &[u8]) -> Result<()> {
        self.ws.queue(text).await
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.ws.flush().await
    }

    pub async fn close(&mut self) {
        self.ws.close().await
    }
}

impl Ws {
    /// Queues a text message to be written by the next `recv` or `flush` without awaiting
    /// (keeps `recv` cancel-safe); the raw client only.
    fn queue_control_text(&mut self, text: &[u8]) -> Result<()> {
        match self {
            Ws::Raw(r) => {
                r.queue_control_text(text);
                Ok(())
            }
            Ws::Tung(_) => Err("cannot answer a NATS PING with the tungstenite client".into()),
        }
    }

    async fn recv(&mut self) -> Result<Event<'_>> {
        match self {
            Ws::Raw(r) => r.recv().await,
            Ws::Tung(t) => {
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
    async fn queue(&mut self, text: &[u8]) -> Result<()> {
        match self {
            Ws::Raw(r) => {
                r.queue(text);
                Ok(())
            }
            Ws::Tung(t) => {
                let s = String::from_utf8(text.to_vec())?;
                t.ws.feed(Message::text(s)).await?;
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        match self {
            Ws::Raw(r) => r.flush().await,
            Ws::Tung(t) => Ok(t.ws.flush().await?),
        }
    }

    /// Best-effort normal close; errors do not matter at the end of a run.
    async fn close(&mut self) {
        match self {
            Ws::Raw(r) => r.close().await,
            Ws::Tung(t) => {
                let _ = t.ws.close(None).await;
            }
        }
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// Answers one upgrade, then sends a text frame, a fragmented message with a ping in
    /// between, and a close; checks that the client answered the ping.
    async fn fake_server(listener: tokio::net::TcpListener) {
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
        let accept = crate::rawws::accept_key(&key);
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
    }

    /// A minimal server end over a real socket pair: one unmasked text frame, a fragmented
    /// message, a ping, and a close; checks the client reassembles and answers the ping.
    #[tokio::test]
    async fn raw_client_frames_over_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(fake_server(listener));
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
