//! Bounds before the WebSocket upgrade, over real sockets: header and body timeouts, the
//! header size cap, idle keep-alive, and sockets counted against `server.max_connections`.

mod common;

use std::net::SocketAddr;

use common::{eventually, TestBroker, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request line and one header, but not the blank line that ends the head.
const HALF_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n";

async fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("timed out connecting")
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    s
}

/// Everything the server sends until it closes the connection (a reset also counts as
/// closed); panics if it is still open after [`WAIT`].
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("the server should have closed the connection")
            .unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&out).into_owned();
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// One response read from a connection that stays open: (status, body).
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("content-length");
            if body.len() >= len {
                return (status_of(head), body[..len].to_string());
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("timed out reading a response")
            .expect("read");
        assert!(n > 0, "connection closed before a full response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn open_sockets(broker: &TestBroker) -> usize {
    broker.handle.open_sockets()
}

async fn until_open_sockets(broker: &TestBroker, n: usize) {
    eventually(&format!("{n} sockets are open before the upgrade"), || async {
        open_sockets(broker) == n
    })
    .await;
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let broker =
        TestBroker::start(common::open_config!("[server]\nheader_timeout_ms = 300\n")).await;
    let mut s = open(broker.addr, HALF_REQUEST).await;
    let answer = read_until_closed(&mut s).await;
    assert_eq!(answer, "", "a timed-out head gets no response, only a close");
    until_open_sockets(&broker, 0).await;
    // That it is counted is checked in tests/metrics.rs, in a process of its own.
    broker.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_a_normal_head_still_fits() {
    let broker =
        TestBroker::start(common::open_config!("[server]\nmax_header_bytes = 8192\n")).await;
    // A head of ~6 KB is under the cap.
    let fits = format!("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n", "p".repeat(6000));
    let mut s = open(broker.addr, fits.as_bytes()).await;
    assert_eq!(read_response(&mut s).await.0, 200);
    drop(s);

    // 400 KB of one unterminated header: refused once the cap is reached.
    let mut s = open(broker.addr, b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ").await;
    let (mut rd, mut wr) = s.split();
    let big = vec![b'a'; 400 * 1024];
    let (_, answer) = tokio::join!(
        // The server stops reading; the write may end in a reset, which is the point.
        async { wr.write_all(&big).await },
        async {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    );
    assert!(answer.starts_with("HTTP/1.1 431 "), "expected 431, got {answer:?}");
    drop(s);
    until_open_sockets(&broker, 0).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let broker =
        TestBroker::start(common::open_config!("[server]\nheader_timeout_ms = 300\n")).await;
    let mut s = open(broker.addr, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let (status, body) = read_response(&mut s).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // Kept alive after the response, but not forever.
    assert_eq!(read_until_closed(&mut s).await, "");
    until_open_sockets(&broker, 0).await;
    broker.shutdown().await;
}

/// A broker with the HTTP API on (key `slow-key`) and `extra` tables in front of its config.
async fn api_broker(extra: &str) -> TestBroker {
    let secrets = common::Secrets::new();
    let toml = format!("{extra}{}\n[auth]\n{}", common::OPEN_CONFIG, secrets.api_keys("slow-key"));
    TestBroker::start_with_secrets(&toml, secrets).await
}

#[tokio::test]
async fn a_dribbled_api_body_gets_408_and_the_connection_closes() {
    let broker = api_broker("[server]\nbody_timeout_ms = 300\n").await;
    let head = "POST /api/publish HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer slow-key\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"channel\":";
    let mut s = open(broker.addr, head.as_bytes()).await;
    let answer = read_until_closed(&mut s).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").expect("body").1).expect("JSON body");
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("server.body_timeout_ms")),
        "{body}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn an_api_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    let broker = api_broker("[server]\nmax_frame_bytes = 1024\n").await;
    let head = "POST /api/publish HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer slow-key\r\n\
                Content-Length: 1000000\r\n\r\n";
    let mut s = open(broker.addr, head.as_bytes()).await;
    let answer = read_until_closed(&mut s).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer}");
    broker.shutdown().await;
}

#[tokio::test]
async fn sockets_before_the_upgrade_count_against_max_connections() {
    let broker = TestBroker::start(common::open_config!(
        "[server]\nmax_connections = 3\nheader_timeout_ms = 1500\n"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open(broker.addr, HALF_REQUEST).await);
    }
    until_open_sockets(&broker, 3).await;

    // The 4th socket is answered 503 at once, and so is a real WebSocket client.
    let mut fourth = open(broker.addr, b"").await;
    let answer = read_until_closed(&mut fourth).await;
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.ends_with(r#"{"code":"unavailable","message":"connection limit reached"}"#));
    match tokio_tungstenite::connect_async(broker.url("/ws").as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => {
            panic!("a WebSocket client over the cap should get 503, got {:?}", other.map(|_| ()))
        }
    }

    // Once the held sockets time out, a legitimate client gets in.
    for s in &mut held {
        assert_eq!(read_until_closed(s).await, "");
    }
    until_open_sockets(&broker, 0).await;
    let client = broker.connect("").await;
    assert!(client.conn.starts_with(&client.node), "{}", client.conn);
    until_open_sockets(&broker, 0).await;

    // One session and two sockets fill the 3 again.
    let _a = open(broker.addr, HALF_REQUEST).await;
    let _b = open(broker.addr, HALF_REQUEST).await;
    until_open_sockets(&broker, 2).await;
    let mut over = open(broker.addr, b"").await;
    assert_eq!(status_of(&read_until_closed(&mut over).await), 503);
    drop((client, _a, _b));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_client_connects_while_2000_slowloris_sockets_are_held() {
    const SLOW: usize = 2000;
    let broker = TestBroker::start(common::open_config!(
        "[server]\nmax_connections = 3000\nheader_timeout_ms = 60000\n"
    ))
    .await;
    let mut held = Vec::with_capacity(SLOW);
    // In waves, so the test's own connects stay within the listen backlog.
    for _ in 0..SLOW / 200 {
        let wave: Vec<_> =
            (0..200).map(|_| tokio::spawn(open(broker.addr, HALF_REQUEST))).collect();
        for t in wave {
            held.push(t.await.expect("connect task"));
        }
    }
    until_open_sockets(&broker, SLOW).await;

    let mut client = broker.connect("channel=lobby").await;
    client.publish("lobby", serde_json::json!("still here")).await;
    assert_eq!(client.recv().await["data"], "still here");
    assert_eq!(open_sockets(&broker), SLOW, "the slowloris sockets were all still held");

    drop((client, held));
    until_open_sockets(&broker, 0).await;
    broker.shutdown().await;
}
