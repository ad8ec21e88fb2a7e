//! One WebSocket connection after the upgrade: a loop over named events on the raw socket.
//!
//! The session reads frames and hands text to its [`Client`]; it keeps the connection alive
//! and closes it. Writing is shared with the hub by the rules in [`crate::outbox`]: the hub
//! writes while the socket takes everything, and the session writes (on `writable`) only after
//! the outbox told it to. Every event's handling is bounded in time: socket I/O is
//! non-blocking, backend calls end within the backend's command timeout, and the last bytes of
//! a closing connection get [`CLOSE_GRACE`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::keepalive::{Keepalive, Tick};
use super::upgrade::Params;
use crate::node::client::Client;
use crate::node::Node;
use crate::outbox::{Duty, Outbox, Written};
use crate::protocol::wire::{self, close, FrameReader, Received};

/// How long a closing connection may take to take its last bytes (and, after the close frame,
/// to close its side); a client stuck longer is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Size of one read from the socket.
const READ_CHUNK: usize = 8192;

/// What woke the session.
enum Event {
    /// The broker is shutting down: close with 1001.
    Shutdown,
    /// The client's token expired: close with 4003.
    TokenExpired,
    /// Time to look at the keepalive (ping, or give up).
    KeepaliveDue,
    /// The close frame did not get out within the grace: drop the connection.
    CloseOverdue,
    /// The outbox asks the session to write, or to close.
    OutboxReady,
    /// The socket can take bytes (false: it failed).
    Writable(bool),
    /// A reload changed the rules.
    RulesChanged,
    /// The socket has bytes (false: it failed).
    Readable(bool),
}

/// Whether the loop goes on after handling an event.
enum Flow {
    Continue,
    Closed,
}

struct Session {
    client: Client,
    stream: Arc<TcpStream>,
    reader: FrameReader,
    /// Bytes read but not yet a whole frame.
    read_buf: BytesMut,
    /// False once a close frame or a protocol error was read: nothing more is read.
    reading: bool,
    /// The session owns the socket's write side (see `outbox`): it waits for `writable()`.
    writing: bool,
    /// Set once the close frame is queued: past it, the socket is dropped unwritten.
    close_by: Option<Instant>,
    alive: Keepalive,
}

/// Runs a connection from the moment hyper hands over the socket until it is gone.
pub(super) async fn run(node: Arc<Node>, stream: TcpStream, read_buf: BytesMut, params: Params) {
    // Shared with the outbox, which writes into it from the hub's thread (`Outbox::kick`).
    let stream = Arc::new(stream);
    let server = node.server();
    let outbox = Outbox::new(server.outbound_queue, params.batch, Some(stream.clone()))
        .with_max_bytes(server.outbound_queue_bytes);
    let client = Client::new(&node, params.identity, Arc::new(outbox));
    let mut session = Session {
        client,
        stream,
        reader: FrameReader::new(server.max_frame_bytes),
        read_buf,
        reading: true,
        writing: false,
        close_by: None,
        alive: Keepalive::new(server.ping_interval),
    };
    session.client.start(params.channels, params.since).await;
    // Frames the client sent together with the upgrade request arrive in hyper's buffer.
    if !session.read_buf.is_empty() {
        session.on_bytes().await;
    }
    session.serve(&node).await;
    let Session { client, stream, .. } = session;
    drop(stream);
    client.leave().await;
}

impl Session {
    async fn serve(&mut self, node: &Node) {
        let (outbox, stream) = (self.client.outbox().clone(), self.stream.clone());
        let mut rules = node.rules_changed();
        let expiry = self.client.expires_at().map(until);
        let expired = tokio::time::sleep_until(expiry.unwrap_or_else(far_future));
        let keepalive = tokio::time::sleep(node.server().ping_interval);
        let close_timer = tokio::time::sleep_until(far_future());
        tokio::pin!(expired, keepalive, close_timer);
        loop {
            let (open, closing) = (!outbox.is_closing(), self.close_by.is_some());
            let event = tokio::select! {
                biased;
                _ = node.shutting_down(), if open => Event::Shutdown,
                _ = &mut expired, if expiry.is_some() && open => Event::TokenExpired,
                _ = &mut keepalive, if open => Event::KeepaliveDue,
                _ = &mut close_timer, if closing => Event::CloseOverdue,
                _ = outbox.ready() => Event::OutboxReady,
                w = stream.writable(), if self.writing => Event::Writable(w.is_ok()),
                Ok(()) = rules.changed(), if !closing => Event::RulesChanged,
                r = stream.readable(), if self.reading && !closing => Event::Readable(r.is_ok()),
            };
            let flow = match event {
                Event::Shutdown => self.close(close::GOING_AWAY, "broker shutting down"),
                Event::TokenExpired => self.close(close::TOKEN_EXPIRED, "token expired"),
                Event::KeepaliveDue => {
                    keepalive.as_mut().reset(self.on_keepalive());
                    Flow::Continue
                }
                Event::CloseOverdue => Flow::Closed,
                Event::OutboxReady => {
                    if let Some(at) = self.on_ready() {
                        close_timer.as_mut().reset(at);
                    }
                    Flow::Continue
                }
                Event::Writable(ok) => self.on_writable(ok).await,
                Event::RulesChanged => {
                    self.client.revalidate().await;
                    Flow::Continue
                }
                Event::Readable(ok) => self.on_readable(ok).await,
            };
            if let Flow::Closed = flow {
                return;
            }
        }
    }

    fn close(&self, code: u16, reason: &str) -> Flow {
        self.client.outbox().close(code, reason);
        Flow::Continue
    }

    /// Pings a silent client, closes one that stayed silent after a ping; returns when to
    /// look again.
    fn on_keepalive(&mut self) -> Instant {
        match self.alive.tick(Instant::now()) {
            Tick::Wait(until) => until,
            Tick::Ping(until) => {
                self.client.outbox().send(wire::control_frame(wire::OP_PING, b""));
                until
            }
            Tick::Dead => {
                let reason = "ping timeout: nothing heard from the client";
                self.client.outbox().close(close::NORMAL, reason);
                far_future()
            }
        }
    }

    /// The outbox woke the session: a kick left bytes behind, or a close was requested.
    /// Returns the deadline of the close frame when closing begins now.
    fn on_ready(&mut self) -> Option<Instant> {
        match self.client.outbox().duty() {
            Duty::Nothing => None,
            Duty::Write => {
                self.writing = true;
                None
            }
            Duty::Close(_) => {
                self.writing = true;
                self.close_by = Some(Instant::now() + CLOSE_GRACE);
                self.close_by
            }
        }
    }

    /// The socket can take bytes: one non-blocking write of the backlog. Once a close frame
    /// is out, the connection ends.
    async fn on_writable(&mut self, ok: bool) -> Flow {
        if !ok {
            return Flow::Closed;
        }
        match self.client.outbox().write(&self.stream) {
            Ok(Written::Blocked) => Flow::Continue,
            Ok(Written::All) if self.close_by.is_some() => {
                finish_close(&self.stream).await;
                Flow::Closed
            }
            Ok(Written::All) => {
                self.writing = false;
                Flow::Continue
            }
            Err(_) => Flow::Closed,
        }
    }

    /// Reads what the socket has and handles every whole frame in it.
    async fn on_readable(&mut self, ok: bool) -> Flow {
        if !ok {
            return Flow::Closed;
        }
        match read_some(&self.stream, &mut self.read_buf) {
            Ok(0) => Flow::Closed,
            Ok(_) => {
                self.alive.heard(Instant::now());
                self.on_bytes().await;
                Flow::Continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Flow::Continue,
            Err(_) => Flow::Closed,
        }
    }

    /// Handles every complete frame in the read buffer; stops reading after a close frame or
    /// a protocol error.
    async fn on_bytes(&mut self) {
        loop {
            match self.reader.next(&mut self.read_buf) {
                Ok(None) => {
                    if self.read_buf.is_empty() {
                        // Give back what a large message made the buffer grow to.
                        self.read_buf = BytesMut::new();
                    }
                    return;
                }
                // FrameReader has checked UTF-8 already.
                Ok(Some(Received::Text(text))) => match std::str::from_utf8(&text) {
                    Ok(text) => self.client.on_text(text).await,
                    Err(_) => return,
                },
                Ok(Some(Received::Binary(_))) => self.client.refuse_binary(),
                Ok(Some(Received::Ping(payload))) => {
                    self.client.outbox().send(wire::control_frame(wire::OP_PONG, &payload));
                }
                Ok(Some(Received::Pong)) => {}
                Ok(Some(Received::Close(code))) => {
                    // The reader refused codes that may not be sent, so echoing is safe.
                    self.client.outbox().close(code.unwrap_or(close::NORMAL), "");
                    self.reading = false;
                    return;
                }
                Err(e) => {
                    self.client.outbox().close(e.close_code(), &e.reason());
                    self.reading = false;
                    return;
                }
            }
        }
    }
}

/// Reads what the socket has (up to one chunk) and appends exactly that to `buf`. The read goes
/// through a stack buffer so `buf` grows only by bytes that arrived: an idle connection that
/// answers a ping allocates a few bytes for its pong, not a reserved 4 KiB block, and a frame
/// header never makes the broker reserve the length it declares.
fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The tokio instant of a wall-clock time (token expiry is wall-clock).
fn until(t: SystemTime) -> Instant {
    Instant::now() + t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// After the close frame: stop sending, and read (and drop) what the client still sends until
/// it closes too, so unread bytes do not turn our close into a reset that loses the close frame.
async fn finish_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            if stream.readable().await.is_err() {
                break;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
