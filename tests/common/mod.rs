//! Test helpers: a broker on 127.0.0.1:0 and a WebSocket client with timeouts.
//!
//! Every wait is bounded: a test that waits for a frame that never comes fails with a message
//! saying what it waited for, instead of hanging.

#![allow(dead_code)]

pub mod cross_node;
mod http_client;
pub mod positions;
pub mod presence;
mod served;
// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use http_client::{http, http_response, try_http};
#[allow(unused_imports)]
pub use served::{sum_samples, ServedBroker};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchyard::broker::{Broker, BrokerHandle};
use switchyard::config::Config;
use switchyard_backend::Backend;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// A config that lets anonymous clients do everything, on the memory backend.
pub const OPEN_CONFIG: &str = open_config!("");

/// [`OPEN_CONFIG`] with more tables (`[server]`, `[limits]`, ...) in front, as a `&'static str`.
macro_rules! open_config {
    ($extra:expr) => {
        concat!(
            $extra,
            "\n[backends.local]\nkind = \"memory\"\n\n[[routes]]\nmatch = \"**\"\n",
            "subscribe = \"anyone\"\npublish = \"anyone\"\n"
        )
    };
}
pub(crate) use open_config;

pub fn config(toml: &str) -> Config {
    let mut c = Config::parse("test.toml", toml).unwrap_or_else(|e| panic!("test config: {e}"));
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c
}

/// Secrets in files of their own, as an operator mounts them (`auth.*_file`), so no test sets
/// an environment variable while other test threads read the environment. The files live as
/// long as this value; keep it until the broker is shut down (it rereads them on reload).
pub struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    pub fn new() -> Secrets {
        Secrets { dir: tempfile::tempdir().expect("tempdir for secrets") }
    }

    /// `jwt_hs256_secret_file = "…"`, for an `[auth]` table, with `secret` in the file.
    pub fn jwt(&self, secret: &str) -> String {
        format!("jwt_hs256_secret_file = {:?}\n", self.write("jwt", secret))
    }

    /// `api_keys_file = "…"`, for an `[auth]` table, with `keys` (comma-separated) in the file.
    pub fn api_keys(&self, keys: &str) -> String {
        format!("api_keys_file = {:?}\n", self.write("api-keys", keys))
    }

    /// Writes `contents` with a trailing newline, as `echo` or an editor leaves it.
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{contents}\n")).expect("write secret file");
        path.to_str().expect("utf-8 temp path").to_string()
    }
}

/// Waits until every broker in `brokers` answers `/readyz` with 200 (its backends are up).
pub async fn wait_ready(brokers: &[&TestBroker]) {
    for broker in brokers {
        let addr = broker.addr;
        eventually("the node is ready", || async move {
            http(addr, "GET", "/readyz", &[], "").await.0 == 200
        })
        .await;
    }
}

pub struct TestBroker {
    pub handle: BrokerHandle,
    pub addr: SocketAddr,
    /// Secret files the config names, kept as long as the broker runs.
    secrets: Option<Secrets>,
}

impl TestBroker {
    pub async fn start(toml: &str) -> TestBroker {
        TestBroker::from_config(config(toml)).await
    }

    pub async fn from_config(config: Config) -> TestBroker {
        let handle = Broker::start(config).await.unwrap_or_else(|e| panic!("broker start: {e}"));
        let addr = handle.local_addr();
        TestBroker { handle, addr, secrets: None }
    }

    /// A broker whose config names files in `secrets`; they are kept until it is dropped.
    pub async fn start_with_secrets(toml: &str, secrets: Secrets) -> TestBroker {
        let mut broker = TestBroker::start(toml).await;
        broker.secrets = Some(secrets);
        broker
    }

    /// A broker on backends the test built (e.g. memory backends sharing one bus).
    pub async fn with_backends(config: Config, backends: Vec<Arc<dyn Backend>>) -> TestBroker {
        let handle = Broker::start_with_backends(config, backends)
            .await
            .unwrap_or_else(|e| panic!("broker start: {e}"));
        let addr = handle.local_addr();
        TestBroker { handle, addr, secrets: None }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects to `/ws?<query>` and reads the welcome frame.
    pub async fn connect(&self, query: &str) -> Client {
        let url =
            if query.is_empty() { self.url("/ws") } else { self.url(&format!("/ws?{query}")) };
        Client::connect(&url).await
    }

    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub conn: String,
    pub node: String,
    /// Frames read while looking for a reply, kept for the next `recv`.
    backlog: VecDeque<Value>,
    next_id: u64,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"))
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client::from_stream(ws).await
    }

    /// A client on an upgraded WebSocket (a handshake the test made itself); reads the
    /// welcome frame.
    pub async fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        let mut c = Client {
            ws,
            conn: String::new(),
            node: String::new(),
            backlog: VecDeque::new(),
            next_id: 1,
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["op"], "welcome", "first frame must be welcome: {welcome}");
        c.conn = welcome["conn"].as_str().expect("welcome.conn").to_string();
        c.node = welcome["node"].as_str().expect("welcome.node").to_string();
        c
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send frame");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send frame");
    }

    /// The next server text frame (one JSON object), or panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for a frame on {}", self.conn))
                .unwrap_or_else(|| {
                    panic!("connection {} ended while waiting for a frame", self.conn)
                })
                .unwrap_or_else(|e| panic!("connection {} failed: {e}", self.conn));
            match m {
                Message::Text(t) => {
                    // `?batch=1` connections may get several objects per frame.
                    let mut objects = t.as_str().split('\n').map(|line| {
                        serde_json::from_str::<Value>(line)
                            .unwrap_or_else(|e| panic!("server sent non-JSON {line:?}: {e}"))
                    });
                    let first = objects.next().expect("at least one object");
                    self.backlog.extend(objects);
                    return first;
                }
                Message::Close(c) => {
                    panic!("connection {} closed while waiting for a frame: {c:?}", self.conn)
                }
                _ => continue,
            }
        }
    }

    /// The next raw text frame, unsplit (for checking batching).
    pub async fn recv_text_frame(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("connection failed");
            if let Message::Text(t) = m {
                return t.to_string();
            }
        }
    }

    /// Sends `v` with a fresh id and returns the `ok`/`error` answering it; other frames that
    /// arrive first are kept for `recv`.
    pub async fn request(&mut self, mut v: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = json!(id);
        self.send_json(v).await;
        let mut skipped = VecDeque::new();
        let answer = loop {
            let f = self.recv_direct().await;
            if f["id"] == json!(id)
                && ["ok", "error", "presence"].contains(&f["op"].as_str().unwrap_or(""))
            {
                break f;
            }
            skipped.push_back(f);
        };
        skipped.extend(self.backlog.drain(..));
        self.backlog = skipped;
        answer
    }

    async fn recv_direct(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv().await
    }

    /// Sends `v` and asserts it is answered `ok`.
    pub async fn ok(&mut self, v: Value) {
        let answer = self.request(v.clone()).await;
        assert_eq!(answer["op"], "ok", "{v} was answered {answer}");
    }

    /// Sends `v` and asserts it is answered with error `code`; returns the error frame.
    pub async fn error(&mut self, v: Value, code: &str) -> Value {
        let answer = self.request(v.clone()).await;
        assert_eq!(answer["op"], "error", "{v} should fail with {code}, was answered {answer}");
        assert_eq!(answer["code"], code, "{v}: {answer}");
        answer
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.ok(json!({"op":"subscribe","channel":channel})).await;
    }

    pub async fn publish(&mut self, channel: &str, data: Value) {
        self.ok(json!({"op":"publish","channel":channel,"data":data})).await;
    }

    /// Reads frames until the connection closes; returns the close code (panics on timeout).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match m {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Polls `f` until it returns true, for up to [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

// ---- Helpers added for the protocol, fan-out, robustness and HTTP suites. ----

impl Client {
    /// Sends every text as its own frame, flushing once at the end (a pipelined burst).
    pub async fn send_texts(&mut self, texts: &[String]) {
        for t in texts {
            self.ws.feed(Message::text(t.as_str())).await.expect("feed frame");
        }
        self.ws.flush().await.expect("flush frames");
    }

    /// Reads every frame until the server closes: the JSON objects received first (batches
    /// split, backlog included) and the close code. Panics after [`WAIT`] without a close.
    pub async fn recv_until_close(&mut self) -> (Vec<Value>, u16) {
        let mut got: Vec<Value> = self.backlog.drain(..).collect();
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {} to close", self.conn));
            match m {
                Some(Ok(Message::Text(t))) => {
                    for line in t.as_str().split('\n') {
                        got.push(
                            serde_json::from_str(line)
                                .unwrap_or_else(|e| panic!("server sent non-JSON {line:?}: {e}")),
                        );
                    }
                }
                Some(Ok(Message::Close(Some(frame)))) => return (got, u16::from(frame.code)),
                Some(Ok(Message::Close(None))) => return (got, u16::from(CloseCode::Status)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection {} failed before a close frame: {e}", self.conn),
                None => panic!("connection {} ended without a close frame", self.conn),
            }
        }
    }
}

/// One masked client frame, built by hand (for frames a WebSocket library refuses to send).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_bytes(fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A frame with or without a mask; `mask: None` breaks RFC 6455 for client frames on purpose.
pub fn frame_bytes(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    switchyard::protocol::wire::encode_frame(fin, opcode, payload, mask)
}

/// A WebSocket client over a bare TCP stream: sends whatever bytes a test wants and reads
/// server frames itself, so it can break the protocol or simply stop reading.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub conn: String,
    /// The welcome frame, as received.
    pub welcome: Value,
}

impl RawWs {
    /// Upgrades `GET {path_and_query}` and reads the welcome frame.
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("timed out connecting")
            .expect("connect");
        let req = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write upgrade");
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("timed out reading the upgrade response")
                .expect("read upgrade response");
            assert!(n > 0, "connection closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept in {head}"
        );
        buf.drain(..head_end);
        let mut raw = RawWs { stream, buf, conn: String::new(), welcome: Value::Null };
        let (op, payload) = raw.read_frame().await;
        assert_eq!(op, 0x1, "first frame must be text");
        let welcome: Value = serde_json::from_slice(&payload).expect("welcome is JSON");
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        raw.conn = welcome["conn"].as_str().expect("welcome.conn").to_string();
        raw.welcome = welcome;
        raw
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_bytes(&client_frame(true, 0x1, text.as_bytes())).await;
    }

    /// The next server frame as (opcode, payload); panics after [`WAIT`] or at end of stream.
    pub async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        self.try_read_frame().await.expect("connection ended while waiting for a frame")
    }

    /// The next server frame, or `None` at end of stream (or a reset).
    pub async fn try_read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((op, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until a close frame; returns its code and reason (panics if the stream ends
    /// without one).
    pub async fn expect_close_with_reason(&mut self) -> (u16, String) {
        loop {
            match self.try_read_frame().await {
                Some((0x8, p)) => {
                    assert!(p.len() >= 2, "close frame without a code");
                    let reason = String::from_utf8_lossy(&p[2..]).into_owned();
                    return (u16::from_be_bytes([p[0], p[1]]), reason);
                }
                Some(_) => continue,
                None => panic!("connection {} ended without a close frame", self.conn),
            }
        }
    }

    /// Reads until a close frame; returns its code (panics if the stream ends without one).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.try_read_frame().await {
                Some((0x8, p)) => {
                    assert!(p.len() >= 2, "close frame without a code");
                    return u16::from_be_bytes([p[0], p[1]]);
                }
                Some(_) => continue,
                None => panic!("connection {} ended without a close frame", self.conn),
            }
        }
    }
}

/// Parses one unmasked server frame from the start of `buf`: (opcode, payload, bytes used).
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    Some((buf[0] & 0x0f, buf[header..header + len].to_vec(), header + len))
}
