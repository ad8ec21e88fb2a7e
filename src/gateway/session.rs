//! One WebSocket connection: the upgrade, then a loop over socket, outbox, rules and shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use tokio::net::TcpStream;

use super::ops::{self, Caller, OpError};
use super::wsframe::{self, close, FrameReader, Received};
use super::{error, Body};
use crate::auth::{Identity, TokenError};
use crate::broker::Broker;
use crate::channel::ChannelName;
use crate::hub::{ConnKey, TopicKey};
use crate::outbox::{Duty, Outbox, Written};
use crate::protocol::{self, encode, ClientOp, ErrorCode};

/// How long a closing connection may take to take its last bytes (and, after the close frame,
/// to close its side); a client stuck longer is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Failed `?channel=` entries answered one by one; the rest are summed up in one error.
const QUERY_ERRORS_SHOWN: usize = 16;

/// What the upgrade request asked for.
struct Params {
    identity: Identity,
    batch: bool,
    channels: Vec<String>,
}

/// Answers `GET /ws`: checks the token and capacity, then switches protocols and starts the
/// session once hyper hands over the socket.
pub fn upgrade(broker: Arc<Broker>, mut req: Request<Incoming>) -> Response<Body> {
    if !hyper_tungstenite::is_upgrade_request(&req) {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "expected a WebSocket upgrade request",
        );
    }
    let version_ok = req.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "missing Sec-WebSocket-Key");
    };
    if !wsframe::valid_key(key.as_bytes()) {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "Sec-WebSocket-Key must be the base64 of 16 bytes",
        );
    }
    if !version_ok {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::BadRequest,
            "only WebSocket version 13 is supported",
        );
        r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let mut token = None;
    let mut batch = false;
    let mut channels = Vec::new();
    let query = req.uri().query().unwrap_or("");
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "token" => token = Some(v.into_owned()),
            "batch" => batch = v == "1" || v == "true",
            "channel" => {
                channels.extend(v.split(',').filter(|c| !c.is_empty()).map(str::to_string))
            }
            _ => {}
        }
    }
    if token.is_none() {
        token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
    }
    let identity = match (&broker.auth, token) {
        (_, None) => Identity::anonymous(),
        (None, Some(_)) => return unauthorized(&broker, &TokenError::NotAccepted),
        (Some(auth), Some(t)) => match auth.verify(&t) {
            Ok(id) => id,
            Err(e) => return unauthorized(&broker, &e),
        },
    };
    if broker.shutdown.is_cancelled() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "broker shutting down",
        );
    }
    if broker.hub.connection_count() >= broker.server.max_connections {
        broker.metrics.refused_capacity.increment(1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "connection limit reached",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let params = Params { identity, batch, channels };
    let tracker = broker.tracker.clone();
    tracker.spawn(run(broker, on_upgrade, params));

    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    r
}

fn unauthorized(broker: &Broker, e: &TokenError) -> Response<Body> {
    broker.metrics.refused_auth.increment(1);
    error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, &e.to_string())
}

async fn run(broker: Arc<Broker>, on_upgrade: OnUpgrade, params: Params) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream");
            return;
        }
    };
    // Shared with the outbox, which writes into it from the hub's thread (`Outbox::kick`).
    let stream = Arc::new(parts.io.into_inner());
    // Copy what hyper read past the request, then let go of hyper's whole read buffer (it is
    // several KiB that would otherwise live as long as the connection).
    let read_buf = BytesMut::from(&parts.read_buf[..]);
    drop(parts.read_buf);
    let mut session = Session::new(broker, params.identity, params.batch, stream.clone());
    session.serve(&stream, read_buf, params.channels).await;
    drop(stream);
    session.cleanup().await;
}

/// Whether the loop goes on after handling an event.
enum Flow {
    Continue,
    Closed,
}

/// Keepalive bookkeeping. Reads only record the time; the timer is re-armed when it fires, so
/// a busy connection costs no timer work per frame.
struct Keepalive {
    interval: Duration,
    last_heard: tokio::time::Instant,
    pinged_at: Option<tokio::time::Instant>,
}

/// What the keepalive timer asks for when it fires.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// Heard from recently: sleep until then.
    Wait(tokio::time::Instant),
    /// Silent for an interval: ping, and look again then.
    Ping(tokio::time::Instant),
    /// Silent since the last ping: the peer is gone.
    Dead,
}

impl Keepalive {
    fn new(interval: Duration) -> Keepalive {
        Keepalive { interval, last_heard: tokio::time::Instant::now(), pinged_at: None }
    }

    fn heard(&mut self, now: tokio::time::Instant) {
        self.last_heard = now;
    }

    fn tick(&mut self, now: tokio::time::Instant) -> Tick {
        if let Some(at) = self.pinged_at.take() {
            if self.last_heard < at {
                return Tick::Dead;
            }
        }
        let due = self.last_heard + self.interval;
        if now < due {
            return Tick::Wait(due);
        }
        self.pinged_at = Some(now);
        Tick::Ping(now + self.interval)
    }
}

/// A token bucket per connection; the rate and burst come from the live limits at each take,
/// so a reload applies at once.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64) -> Bucket {
        Bucket { tokens: burst, last: Instant::now() }
    }

    /// Takes one token; false when the bucket is empty.
    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

struct Session {
    broker: Arc<Broker>,
    key: ConnKey,
    /// The connection id clients see: `<node>:<16 hex digits of the key>`.
    id: String,
    user: Option<Arc<str>>,
    expires_at: Option<SystemTime>,
    outbox: Arc<Outbox>,
    /// Client channel → the topic it is carried on.
    subscriptions: HashMap<ChannelName, TopicKey>,
    /// How many of this connection's client channels share each topic.
    topic_refs: HashMap<TopicKey, usize>,
    /// Publishes and sends.
    publish_bucket: Bucket,
    /// Subscribes and unsubscribes, `?channel=` included.
    subscribe_bucket: Bucket,
    reader: FrameReader,
    /// The session owns the socket's write side (see `outbox`): it waits for `writable()`.
    writing: bool,
    /// Set once the close frame is queued: past it, the socket is dropped unwritten.
    close_by: Option<tokio::time::Instant>,
}

impl Session {
    fn new(
        broker: Arc<Broker>,
        identity: Identity,
        batch: bool,
        socket: Arc<TcpStream>,
    ) -> Session {
        let outbox = Outbox::new(broker.server.outbound_queue, batch, Some(socket))
            .with_max_bytes(broker.server.outbound_queue_bytes);
        let outbox = Arc::new(outbox);
        // 64 random bits collide with a live connection next to never; a collision re-draws.
        let key = loop {
            let key = broker.next_conn();
            if broker.hub.register(key, outbox.clone()) {
                break key;
            }
        };
        let id = ops::conn_id(&broker.node, key);
        broker.metrics.connections.increment(1.0);
        broker.metrics.connections_total.increment(1);
        let limits = broker.live.load().limits.clone();
        let reader = FrameReader::new(broker.server.max_frame_bytes);
        Session {
            broker,
            key,
            id,
            user: identity.user,
            expires_at: identity.expires_at,
            outbox,
            subscriptions: HashMap::new(),
            topic_refs: HashMap::new(),
            publish_bucket: Bucket::full(limits.publish_burst),
            subscribe_bucket: Bucket::full(limits.subscribe_burst),
            reader,
            writing: false,
            close_by: None,
        }
    }

    fn reply(&self, json: Bytes) {
        self.outbox.send(wsframe::text_frame(&json));
    }

    fn reply_error(&self, id: Option<&RawValue>, code: ErrorCode, message: &str) {
        crate::metrics::Metrics::client_error(code);
        self.reply(encode::error(id, code, message));
    }

    /// Subscribes the `?channel=` list, answering failures (each draws a subscribe token).
    async fn join(&mut self, channels: Vec<String>) {
        let mut failed = 0;
        for channel in &channels {
            let subscribed = match self.take_subscribe_token() {
                Ok(()) => self.subscribe(channel).await,
                Err(e) => Err(e),
            };
            if let Err(e) = subscribed {
                failed += 1;
                // A long bad list must not fill the outbox before the client can read it.
                if failed <= QUERY_ERRORS_SHOWN {
                    self.reply_error(None, e.code, &format!("{channel}: {}", e.message));
                }
            }
        }
        if failed > QUERY_ERRORS_SHOWN {
            let more = failed - QUERY_ERRORS_SHOWN;
            let message = format!("{more} more channels in ?channel= failed");
            self.reply_error(None, ErrorCode::BadRequest, &message);
        }
    }

    async fn serve(&mut self, stream: &TcpStream, mut read_buf: BytesMut, channels: Vec<String>) {
        self.reply(encode::welcome(&self.id, &self.broker.node));
        self.join(channels).await;
        let shutdown = self.broker.shutdown.clone();
        let mut rules_version = self.broker.rules_version.subscribe();
        let expiry = self.expires_at.map(|t| {
            let left = t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
            tokio::time::Instant::now() + left
        });
        let expired = tokio::time::sleep_until(expiry.unwrap_or_else(far_future));
        tokio::pin!(expired);
        let mut alive = Keepalive::new(self.broker.server.ping_interval);
        let keepalive = tokio::time::sleep(self.broker.server.ping_interval);
        tokio::pin!(keepalive);
        let close_timer = tokio::time::sleep_until(far_future());
        tokio::pin!(close_timer);
        // Frames the client sent together with the upgrade request arrive in hyper's buffer.
        let mut reading = read_buf.is_empty() || self.on_bytes(&mut read_buf).await;
        loop {
            let closing = self.close_by.is_some();
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !self.outbox.is_closing() => {
                    self.outbox.close(close::GOING_AWAY, "broker shutting down");
                }
                _ = &mut expired, if expiry.is_some() && !self.outbox.is_closing() => {
                    self.outbox.close(close::TOKEN_EXPIRED, "token expired");
                }
                _ = &mut keepalive, if !self.outbox.is_closing() => {
                    match alive.tick(tokio::time::Instant::now()) {
                        Tick::Wait(until) => keepalive.as_mut().reset(until),
                        Tick::Ping(until) => {
                            self.outbox.send(wsframe::control_frame(wsframe::OP_PING, b""));
                            keepalive.as_mut().reset(until);
                        }
                        Tick::Dead => self.outbox.close(close::NORMAL, "ping timeout: nothing heard from the client"),
                    }
                }
                // The close frame could not get out in time: the client is stuck, drop it.
                _ = &mut close_timer, if closing => return,
                _ = self.outbox.ready() => {
                    if let Some(at) = self.on_ready() {
                        close_timer.as_mut().reset(at);
                    }
                }
                writable = stream.writable(), if self.writing => {
                    if let Flow::Closed = self.on_writable(stream, writable.is_ok()).await {
                        return;
                    }
                }
                Ok(()) = rules_version.changed(), if !closing => self.revalidate().await,
                readable = stream.readable(), if reading && !closing => {
                    if readable.is_err() {
                        return;
                    }
                    match read_some(stream, &mut read_buf) {
                        Ok(0) => return,
                        Ok(_) => {
                            alive.heard(tokio::time::Instant::now());
                            reading = self.on_bytes(&mut read_buf).await;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            }
        }
    }

    /// The outbox woke the session: a kick left bytes behind, or a close was requested.
    /// Returns the deadline of the close frame when closing begins now.
    fn on_ready(&mut self) -> Option<tokio::time::Instant> {
        match self.outbox.duty() {
            Duty::Nothing => None,
            Duty::Write => {
                self.writing = true;
                None
            }
            Duty::Close(_) => {
                self.writing = true;
                self.close_by = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                self.close_by
            }
        }
    }

    /// The socket can take bytes: one non-blocking write of the backlog. Once a close frame
    /// is out, the connection ends.
    async fn on_writable(&mut self, stream: &TcpStream, ok: bool) -> Flow {
        if !ok {
            return Flow::Closed;
        }
        match self.outbox.write(stream) {
            Ok(Written::Blocked) => Flow::Continue,
            Ok(Written::All) if self.close_by.is_some() => {
                finish_close(stream).await;
                Flow::Closed
            }
            Ok(Written::All) => {
                self.writing = false;
                Flow::Continue
            }
            Err(_) => Flow::Closed,
        }
    }

    /// Handles every complete frame in `buf`; false once the connection must stop reading.
    async fn on_bytes(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            match self.reader.next(buf) {
                Ok(None) => {
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    return true;
                }
                Ok(Some(Received::Text(text))) => self.on_text(&text).await,
                Ok(Some(Received::Binary(_))) => self.reply_error(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                ),
                Ok(Some(Received::Ping(payload))) => {
                    self.outbox.send(wsframe::control_frame(wsframe::OP_PONG, &payload));
                }
                Ok(Some(Received::Pong)) => {}
                Ok(Some(Received::Close(code))) => {
                    // The reader refused codes that may not be sent, so echoing is safe.
                    self.outbox.close(code.unwrap_or(close::NORMAL), "");
                    return false;
                }
                Err(e) => {
                    self.outbox.close(e.close_code(), &e.reason());
                    return false;
                }
            }
        }
    }

    async fn on_text(&mut self, text: &[u8]) {
        // FrameReader has checked UTF-8 already.
        let Ok(text) = std::str::from_utf8(text) else { return };
        let frame = match protocol::decode(text) {
            Ok(f) => f,
            Err(e) => return self.reply_error(e.id, e.code, &e.message),
        };
        let id = frame.id;
        let result = match frame.op {
            ClientOp::Ping => {
                self.reply(encode::pong(id));
                return;
            }
            ClientOp::Subscribe { channel } => match self.take_subscribe_token() {
                Ok(()) => self.subscribe(&channel).await,
                Err(e) => Err(e),
            },
            ClientOp::Unsubscribe { channel } => match self.take_subscribe_token() {
                Ok(()) => self.unsubscribe(&channel).await,
                Err(e) => Err(e),
            },
            ClientOp::Publish { channel, data } => match self.take_publish_token() {
                Ok(()) => {
                    let caller = Caller::Client { user: self.user.as_deref() };
                    ops::publish(&self.broker, caller, &channel, data).await
                }
                Err(e) => Err(e),
            },
            ClientOp::Send { to, data } => {
                match ops::may_send(self.broker.send_permission(), self.user.as_deref())
                    .and_then(|()| self.take_publish_token())
                {
                    Ok(()) => {
                        ops::send(&self.broker, &self.id, self.user.as_deref(), &to, data).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) if id.is_some() => self.reply(encode::ok(id)),
            Ok(()) => {}
            Err(e) => self.reply_error(id, e.code, &e.message),
        }
    }

    fn take_publish_token(&mut self) -> Result<(), OpError> {
        let limits = &self.broker.live.load().limits;
        if self.publish_bucket.take(limits.publish_rate, limits.publish_burst) {
            return Ok(());
        }
        let message = format!("over {} publishes per second", limits.publish_rate);
        Err(OpError::new(ErrorCode::RateLimited, message))
    }

    /// Every subscribe or unsubscribe may cost a backend command, so they are paced too.
    fn take_subscribe_token(&mut self) -> Result<(), OpError> {
        let limits = &self.broker.live.load().limits;
        if self.subscribe_bucket.take(limits.subscribe_rate, limits.subscribe_burst) {
            return Ok(());
        }
        let message =
            format!("over {} subscribes and unsubscribes per second", limits.subscribe_rate);
        Err(OpError::new(ErrorCode::RateLimited, message))
    }

    async fn subscribe(&mut self, channel: &str) -> Result<(), OpError> {
        let name = ops::parse_channel(channel)?;
        if self.subscriptions.contains_key(&name) {
            return Ok(());
        }
        let live = self.broker.live.load_full();
        let resolved = ops::route(&live.rules, &name)?;
        if !resolved.may_subscribe(self.user.as_deref()) {
            return Err(ops::forbidden("subscribing", &name, self.user.as_deref()));
        }
        if self.subscriptions.len() >= live.limits.max_subscriptions {
            return Err(OpError::new(
                ErrorCode::RateLimited,
                format!("subscription limit of {} channels reached", live.limits.max_subscriptions),
            ));
        }
        let key = TopicKey {
            backend: resolved.route.backend,
            channel: Arc::from(resolved.backend_channel(&name)),
        };
        self.hold(&key).await?;
        self.subscriptions.insert(name, key);
        self.broker.metrics.subscriptions.increment(1.0);
        Ok(())
    }

    /// Takes one reference on a topic, subscribing through the hub on the first.
    async fn hold(&mut self, key: &TopicKey) -> Result<(), OpError> {
        if let Some(n) = self.topic_refs.get_mut(key) {
            *n += 1;
            return Ok(());
        }
        self.broker
            .hub
            .subscribe(key, self.key, &self.outbox)
            .await
            .map_err(|e| OpError::new(ErrorCode::Unavailable, e.to_string()))?;
        self.topic_refs.insert(key.clone(), 1);
        Ok(())
    }

    /// Drops one reference on a topic, unsubscribing through the hub on the last.
    async fn release(&mut self, key: &TopicKey) {
        let last = match self.topic_refs.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            self.topic_refs.remove(key);
            self.broker.hub.unsubscribe(key, self.key).await;
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<(), OpError> {
        let name = ops::parse_channel(channel)?;
        if let Some(key) = self.subscriptions.remove(&name) {
            self.release(&key).await;
            self.broker.metrics.subscriptions.decrement(1.0);
        }
        Ok(())
    }

    /// After a reload: ends subscriptions the new rules no longer allow, and moves those whose
    /// backend channel changed.
    async fn revalidate(&mut self) {
        let live = self.broker.live.load_full();
        let names: Vec<ChannelName> = self.subscriptions.keys().cloned().collect();
        for name in names {
            let verdict = match live.rules.resolve(&name) {
                None => Err("no_route"),
                Some(r) if !r.may_subscribe(self.user.as_deref()) => Err("forbidden"),
                Some(r) => Ok(TopicKey {
                    backend: r.route.backend,
                    channel: Arc::from(r.backend_channel(&name)),
                }),
            };
            let Some(old) = self.subscriptions.get(&name).cloned() else { continue };
            match verdict {
                Ok(new) if new == old => {}
                Ok(new) => {
                    if self.hold(&new).await.is_ok() {
                        self.subscriptions.insert(name.clone(), new);
                        self.release(&old).await;
                    } else {
                        self.subscriptions.remove(&name);
                        self.release(&old).await;
                        self.broker.metrics.subscriptions.decrement(1.0);
                        self.reply(encode::unsubscribed(name.as_str(), "unavailable"));
                    }
                }
                Err(reason) => {
                    self.subscriptions.remove(&name);
                    self.release(&old).await;
                    self.broker.metrics.subscriptions.decrement(1.0);
                    self.reply(encode::unsubscribed(name.as_str(), reason));
                }
            }
        }
    }

    async fn cleanup(&mut self) {
        // Let go of the socket first: the backend calls below may take a while.
        self.outbox.detach();
        let keys: Vec<TopicKey> = self.topic_refs.drain().map(|(k, _)| k).collect();
        for key in keys {
            self.broker.hub.unsubscribe(&key, self.key).await;
        }
        self.broker.metrics.subscriptions.decrement(self.subscriptions.len() as f64);
        self.subscriptions.clear();
        self.broker.hub.deregister(self.key);
        self.broker.metrics.connections.decrement(1.0);
    }
}

/// Size of one read from the socket.
const READ_CHUNK: usize = 8192;

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

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_pings_the_silent_and_gives_up_on_the_unanswering() {
        let second = Duration::from_secs(1);
        let mut k = Keepalive::new(second);
        let t0 = k.last_heard;
        k.heard(t0 + second / 2);
        assert_eq!(k.tick(t0 + second), Tick::Wait(t0 + second * 3 / 2));
        assert_eq!(k.tick(t0 + second * 2), Tick::Ping(t0 + second * 3));
        k.heard(t0 + second * 2 + second / 10); // the pong
        assert_eq!(k.tick(t0 + second * 3), Tick::Wait(t0 + second * 3 + second / 10));
        assert_eq!(k.tick(t0 + second * 4), Tick::Ping(t0 + second * 5));
        assert_eq!(k.tick(t0 + second * 5), Tick::Dead);
    }
}
