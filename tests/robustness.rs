//! Hostile and broken clients: oversized, non-UTF-8, unmasked and otherwise malformed frames
//! close only the connection that sent them (with the right close code), garbage never closes
//! anything, other connections keep publishing and receiving, and shutdown closes everyone with
//! 1001.

mod common;

use common::{client_frame, frame_bytes, Client, RawWs, TestBroker};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ABUSE_CONFIG: &str = common::open_config!(
    r#"
[server]
max_frame_bytes = 65536

[limits]
publish_rate = 100000
publish_burst = 100000
"#
);

const OP_TEXT: u8 = 0x1;
const OP_CONTINUATION: u8 = 0x0;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const OP_CLOSE: u8 = 0x8;

/// Two bystanders that must not notice anything: `watcher` is subscribed to `calm`, and
/// `talker` publishes there. `check` proves both still work, with a fresh sequence number.
struct Bystanders {
    watcher: Client,
    talker: Client,
    seq: u64,
}

impl Bystanders {
    async fn new(broker: &TestBroker) -> Bystanders {
        let watcher = broker.connect("channel=calm").await;
        let talker = broker.connect("").await;
        Bystanders { watcher, talker, seq: 0 }
    }

    async fn check(&mut self, after: &str) {
        self.seq += 1;
        let data = json!({"after":after,"seq":self.seq});
        self.talker.publish("calm", data.clone()).await;
        let m = self.watcher.recv().await;
        assert_eq!(m, json!({"op":"message","channel":"calm","data":data}), "after {after}");
        // The watcher can still talk too.
        self.watcher.send_text(r#"{"op":"ping","id":"w"}"#).await;
        assert_eq!(self.watcher.recv().await, json!({"op":"pong","id":"w"}), "after {after}");
    }
}

/// Sends `bytes` on a fresh raw connection and returns the close code the broker answers.
async fn close_code_for(broker: &TestBroker, bytes: &[u8]) -> u16 {
    let mut raw = RawWs::connect(broker.addr, "/ws").await;
    raw.send_bytes(bytes).await;
    raw.expect_close().await
}

#[tokio::test]
async fn oversized_frames_close_only_their_connection_with_1009() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut calm = Bystanders::new(&broker).await;

    // A real client sending a text frame over max_frame_bytes.
    let mut big = broker.connect("channel=calm").await;
    let text = format!(r#"{{"op":"publish","channel":"calm","data":"{}"}}"#, "z".repeat(70_000));
    big.send_text(&text).await;
    assert_eq!(big.expect_close().await, 1009);
    calm.check("a 70 kB text frame").await;

    // A binary frame over the limit is refused the same way.
    let mut big_binary = broker.connect("").await;
    big_binary.send_raw(Message::binary(vec![0u8; 70_000])).await;
    assert_eq!(big_binary.expect_close().await, 1009);
    calm.check("a 70 kB binary frame").await;

    // A header that announces 1 TB is refused from the header alone.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(close_code_for(&broker, &header).await, 1009);
    calm.check("a header announcing 1 TB").await;

    // Fragments that add up to more than the limit.
    let mut fragments = client_frame(false, OP_TEXT, &[b' '; 40_000]);
    fragments.extend(client_frame(true, OP_CONTINUATION, &[b' '; 40_000]));
    assert_eq!(close_code_for(&broker, &fragments).await, 1009);
    calm.check("fragments over the limit").await;

    // Exactly at the limit is fine.
    let mut at_limit = broker.connect("").await;
    let prefix = r#"{"op":"ping","id":1,"pad":""#;
    let pad = "p".repeat(65_536 - prefix.len() - 2);
    let exact = format!("{prefix}{pad}\"}}");
    assert_eq!(exact.len(), 65_536);
    at_limit.send_text(&exact).await;
    assert_eq!(at_limit.recv().await, json!({"op":"pong","id":1}));
    drop((calm, at_limit));
    broker.shutdown().await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_bad_utf8_with_1007() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut calm = Bystanders::new(&broker).await;
    let mut new_message_mid_fragment = client_frame(false, OP_TEXT, b"{\"op\":");
    new_message_mid_fragment.extend(client_frame(true, OP_TEXT, b"{}"));
    let mut split_utf8 = client_frame(false, OP_TEXT, &[b'"', 0xE2, 0x82]);
    split_utf8.extend(client_frame(true, OP_CONTINUATION, &[0x28, b'"']));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "an unmasked text frame",
            frame_bytes(true, OP_TEXT, br#"{"op":"ping","id":1}"#, None),
            1002,
        ),
        (
            "reserved bit RSV1",
            {
                let mut f = client_frame(true, OP_TEXT, b"{}");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("unknown opcode 0x3", client_frame(true, 0x3, b"x"), 1002),
        ("unknown control opcode 0xB", client_frame(true, 0xB, b""), 1002),
        ("a ping over 125 bytes", client_frame(true, OP_PING, &[0u8; 126]), 1002),
        ("a fragmented ping", client_frame(false, OP_PING, b"p"), 1002),
        ("a continuation without a message", client_frame(true, OP_CONTINUATION, b"x"), 1002),
        ("a new message inside a fragmented one", new_message_mid_fragment, 1002),
        ("invalid UTF-8", client_frame(true, OP_TEXT, &[b'{', 0xff, 0xfe, b'}']), 1007),
        ("an overlong UTF-8 encoding", client_frame(true, OP_TEXT, &[0xC0, 0xAF]), 1007),
        ("a UTF-16 surrogate", client_frame(true, OP_TEXT, &[0xED, 0xA0, 0x80]), 1007),
        ("UTF-8 broken across fragments", split_utf8, 1007),
    ];
    for (what, bytes, code) in cases {
        assert_eq!(close_code_for(&broker, &bytes).await, code, "{what}");
        calm.check(what).await;
    }
    drop(calm);
    broker.shutdown().await;
}

#[tokio::test]
async fn garbage_frames_are_answered_and_never_close_anything() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut calm = Bystanders::new(&broker).await;
    let mut noisy = broker.connect("").await;
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let garbage: Vec<String> = vec![
        "\u{0}\u{1}\u{2}".into(),
        "}{".into(),
        "{\"op\":\"publish\",\"channel\":\"calm\",\"data\":}".into(),
        "{\"op\":\"publish\",\"channel\":\"calm\",\"data\":1} trailing".into(),
        "{\"op\":\"subscribe\",\"channel\":\"a\",\"channel\":\"b\"}".into(),
        "\u{feff}{\"op\":\"ping\"}".into(),
        "💥".repeat(1000),
        nested(20_000),
        format!("{{\"op\":\"ping\",\"deep\":{}}}", nested(20_000)),
        format!("{{\"op\":{}}}", nested(20_000)),
        format!("{{\"op\":\"subscribe\",\"channel\":{}}}", nested(20_000)),
    ];
    for g in &garbage {
        noisy.send_text(g).await;
        noisy.send_text(r#"{"op":"ping","id":"after"}"#).await;
        let mut answers = Vec::new();
        loop {
            let f = noisy.recv().await;
            if f == json!({"op":"pong","id":"after"}) {
                break;
            }
            answers.push(f);
        }
        assert!(
            answers.len() <= 1 && answers.iter().all(|a| a["op"] == "error" || a["op"] == "pong"),
            "{:.80}: {answers:?}",
            g
        );
        calm.check(&format!("garbage {:.20}", g)).await;
    }
    // Deeply nested data on a channel nobody reads is a normal publish (or a refusal), never
    // a crash.
    let deep = format!(r#"{{"op":"publish","channel":"deep","data":{},"id":9}}"#, nested(30_000));
    noisy.send_text(&deep).await;
    let answer = noisy.recv().await;
    assert_eq!(answer["id"], 9, "{answer}");
    calm.check("deeply nested data").await;

    // A binary frame is answered bad_request and the connection stays.
    noisy.send_raw(Message::binary(b"\x00\x01binary".to_vec())).await;
    assert_eq!(noisy.recv().await["code"], "bad_request");
    // Pings with payload are answered with the same payload; pongs are ignored.
    let mut raw = RawWs::connect(broker.addr, "/ws").await;
    raw.send_bytes(&client_frame(true, OP_PONG, b"unsolicited")).await;
    raw.send_bytes(&client_frame(true, OP_PING, b"are you there")).await;
    assert_eq!(raw.read_frame().await, (OP_PONG, b"are you there".to_vec()));
    // A message fragmented around a ping is reassembled and served.
    let mut bytes = client_frame(false, OP_TEXT, br#"{"op":"publish","chan"#);
    bytes.extend(client_frame(true, OP_PING, b"mid"));
    bytes.extend(client_frame(false, OP_CONTINUATION, br#"nel":"calm","data":"frag"#));
    bytes.extend(client_frame(true, OP_CONTINUATION, br#"mented","id":3}"#));
    raw.send_bytes(&bytes).await;
    assert_eq!(raw.read_frame().await, (OP_PONG, b"mid".to_vec()));
    let (op, ok) = raw.read_frame().await;
    assert_eq!(
        (op, serde_json::from_slice::<Value>(&ok).ok()),
        (OP_TEXT, Some(json!({"op":"ok","id":3})))
    );
    assert_eq!(
        calm.watcher.recv().await,
        json!({"op":"message","channel":"calm","data":"fragmented"})
    );
    // A frame trickled in one byte at a time is served too.
    for b in client_frame(true, OP_TEXT, br#"{"op":"ping","id":"slow"}"#) {
        raw.send_bytes(&[b]).await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (_, pong) = raw.read_frame().await;
    assert_eq!(serde_json::from_slice::<Value>(&pong).ok(), Some(json!({"op":"pong","id":"slow"})));
    // Empty binary frames and empty pings are harmless.
    raw.send_bytes(&client_frame(true, OP_PING, b"")).await;
    assert_eq!(raw.read_frame().await, (OP_PONG, Vec::new()));
    calm.check("fragments, pings and trickled bytes").await;
    drop((calm, noisy, raw));
    broker.shutdown().await;
}

#[tokio::test]
async fn abrupt_disconnects_and_broken_requests_leave_the_broker_serving() {
    use tokio::io::AsyncWriteExt;
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut calm = Bystanders::new(&broker).await;

    // Half a frame, then the socket goes away.
    let mut raw = RawWs::connect(broker.addr, "/ws").await;
    raw.send_bytes(&client_frame(true, OP_TEXT, br#"{"op":"subscribe","channel":"calm"}"#)[..9])
        .await;
    drop(raw);
    calm.check("half a frame then EOF").await;

    // A subscriber that vanishes without a close frame while messages flow to it.
    let mut raw = RawWs::connect(broker.addr, "/ws?channel=calm").await;
    raw.stream.shutdown().await.expect("shutdown");
    drop(raw);
    for _ in 0..20 {
        calm.check("a subscriber vanishing").await;
    }

    // A close frame followed by more data: the broker answers the close and ignores the rest.
    let mut raw = RawWs::connect(broker.addr, "/ws").await;
    let mut bytes = client_frame(true, OP_CLOSE, &1000u16.to_be_bytes());
    bytes.extend(client_frame(true, OP_TEXT, br#"{"op":"ping","id":1}"#));
    raw.send_bytes(&bytes).await;
    assert_eq!(raw.expect_close().await, 1000);
    calm.check("data after a close frame").await;

    // A close frame with a code that may not be sent on the wire is a protocol error.
    let mut raw = RawWs::connect(broker.addr, "/ws").await;
    raw.send_bytes(&client_frame(true, OP_CLOSE, &1005u16.to_be_bytes())).await;
    assert_eq!(raw.expect_close().await, 1002);

    // Not HTTP at all, an upgrade without a key, a wrong version, a plain GET /ws.
    let mut junk = tokio::net::TcpStream::connect(broker.addr).await.expect("connect");
    junk.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n").await.ok();
    drop(junk);
    let upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade")];
    let (status, body) = common::http(broker.addr, "GET", "/ws", &upgrade, "").await;
    assert_eq!(status, 400, "{body}");
    let with_version = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "8"),
    ];
    let (status, _) = common::http(broker.addr, "GET", "/ws", &with_version, "").await;
    assert_eq!(status, 426);
    let (status, body) = common::http(broker.addr, "GET", "/ws", &[], "").await;
    assert_eq!(status, 400, "{body}");
    calm.check("broken HTTP requests").await;

    // After all of it: healthy, and new connections work end to end.
    let (status, _) = common::http(broker.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200);
    let mut fresh = broker.connect("channel=calm").await;
    calm.talker.publish("calm", json!("for everyone")).await;
    assert_eq!(fresh.recv().await["data"], "for everyone");
    assert_eq!(calm.watcher.recv().await["data"], "for everyone");
    drop((calm, fresh));
    broker.shutdown().await;
}

#[tokio::test]
async fn connections_over_max_connections_are_refused_503() {
    let broker = TestBroker::start(common::open_config!(
        r#"
[server]
max_connections = 2
"#
    ))
    .await;
    let a = broker.connect("").await;
    let b = broker.connect("").await;
    let url = broker.url("/ws");
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third connection should get 503, got {:?}", other.map(|_| ())),
    }
    a.close().await;
    // Once one leaves, there is room again.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let mut c = loop {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            break ws;
        }
        assert!(tokio::time::Instant::now() < deadline, "no room after a client left");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    use futures_util::StreamExt;
    let welcome = c.next().await.expect("frame").expect("frame");
    assert!(welcome.to_text().expect("text").contains("welcome"));
    drop((b, c));
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let query = match i % 3 {
            0 => "",
            1 => "channel=calm",
            _ => "batch=1&channel=calm",
        };
        clients.push(broker.connect(query).await);
    }
    let mut raw = RawWs::connect(broker.addr, "/ws?channel=calm").await;
    // Messages in flight at shutdown do not prevent the close.
    clients[0].publish("calm", json!("before shutdown")).await;
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.recv_until_close().await.1 }))
        .collect();
    let raw_close = tokio::spawn(async move { raw.expect_close().await });
    let addr = broker.addr;
    tokio::time::timeout(common::WAIT, broker.shutdown()).await.expect("shutdown took too long");
    for w in waiting {
        assert_eq!(w.await.expect("client task"), 1001);
    }
    assert_eq!(raw_close.await.expect("raw task"), 1001);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}

/// A client may send its first frames in the same write as the upgrade request: the bytes hyper
/// read past the request must reach the session.
#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut stream = tokio::net::TcpStream::connect(broker.addr).await.expect("connect");
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        broker.addr
    )
    .into_bytes();
    bytes.extend(client_frame(true, OP_TEXT, br#"{"op":"ping","id":"early"}"#));
    stream.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let needle = br#"{"op":"pong","id":"early"}"#;
    while !got.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(common::WAIT, stream.read(&mut chunk))
            .await
            .expect("timed out waiting for the pong to a pipelined frame")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    drop(stream);
    broker.shutdown().await;
}

/// The header of a masked frame announcing `len` payload bytes (the 8-byte length form), with
/// a zero mask so the payload that follows can be sent as is.
fn header_announcing(opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![0x80 | opcode, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// With a limit that allows it, a header announcing a terabyte is no reason to reserve one
/// (that allocation would abort the whole broker): the payload is held only as it arrives, is
/// checked as it arrives, and every other connection carries on.
#[tokio::test]
async fn a_frame_header_never_reserves_its_declared_length() {
    let broker =
        TestBroker::start(common::open_config!("[server]\nmax_frame_bytes = 4398046511104\n"))
            .await;
    let mut calm = Bystanders::new(&broker).await;
    let mut pending = Vec::new();
    for _ in 0..4 {
        let mut raw = RawWs::connect(broker.addr, "/ws").await;
        let mut bytes = header_announcing(OP_TEXT, 1 << 40);
        bytes.extend_from_slice(&[b' '; 256 * 1024]);
        raw.send_bytes(&bytes).await;
        pending.push(raw);
    }
    calm.check("headers announcing 1 TiB").await;
    // Those connections are still read: bad UTF-8 deep inside the unfinished frame ends one.
    for raw in &mut pending {
        raw.send_bytes(&[b' ', 0xC0, 0x80]).await;
        assert_eq!(raw.expect_close().await, 1007);
    }
    calm.check("1 TiB frames ended by bad UTF-8").await;
    drop((calm, pending));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() {
    for config in
        [ABUSE_CONFIG, common::open_config!("[server]\nmax_frame_bytes = 9223372036854775807\n")]
    {
        let broker = TestBroker::start(config).await;
        for len in [1u64 << 63, u64::MAX] {
            assert_eq!(close_code_for(&broker, &header_announcing(OP_TEXT, len)).await, 1002);
        }
        broker.shutdown().await;
    }
}

/// A reserved opcode fails from its header: the payload it announces never has to arrive.
#[tokio::test]
async fn reserved_opcodes_fail_before_their_payload() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut calm = Bystanders::new(&broker).await;
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        let header = &client_frame(true, opcode, &[0u8; 100])[..6];
        assert_eq!(close_code_for(&broker, header).await, 1002, "opcode {opcode:#x}");
    }
    calm.check("reserved opcodes").await;
    drop(calm);
    broker.shutdown().await;
}

/// Invalid UTF-8 closes with 1007 as soon as it arrives, in an unfinished fragmented message
/// or an unfinished frame; a code point split across fragments is fine.
#[tokio::test]
async fn invalid_utf8_fails_as_soon_as_it_is_seen() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let mut calm = Bystanders::new(&broker).await;
    let first_fragment = client_frame(false, OP_TEXT, b"{\"op\":\"ping\",\"x\":\"\xED\xA0\x80");
    assert_eq!(close_code_for(&broker, &first_fragment).await, 1007);
    let mut second_fragment = client_frame(false, OP_TEXT, b"{\"op\":");
    second_fragment.extend(client_frame(false, OP_CONTINUATION, b"\"\xF8\""));
    assert_eq!(close_code_for(&broker, &second_fragment).await, 1007);
    let unfinished_frame =
        &client_frame(true, OP_TEXT, b"{\"x\":\"\xFF and much more to come")[..13];
    assert_eq!(close_code_for(&broker, unfinished_frame).await, 1007);
    calm.check("invalid UTF-8 in unfinished messages").await;

    // "€" is E2 82 AC: one byte per fragment.
    let mut raw = RawWs::connect(broker.addr, "/ws").await;
    let mut bytes =
        client_frame(false, OP_TEXT, b"{\"op\":\"publish\",\"channel\":\"calm\",\"data\":\"\xE2");
    bytes.extend(client_frame(false, OP_CONTINUATION, b"\x82"));
    bytes.extend(client_frame(true, OP_CONTINUATION, b"\xAC\",\"id\":1}"));
    raw.send_bytes(&bytes).await;
    let (op, ok) = raw.read_frame().await;
    assert_eq!(
        (op, serde_json::from_slice::<Value>(&ok).ok()),
        (OP_TEXT, Some(json!({"op":"ok","id":1})))
    );
    assert_eq!(calm.watcher.recv().await, json!({"op":"message","channel":"calm","data":"€"}));
    drop((calm, raw));
    broker.shutdown().await;
}

/// Close frames: a valid code is echoed; a 1-byte payload or a code that may not be sent is a
/// protocol error (1002); a reason that is not UTF-8 is 1007.
#[tokio::test]
async fn close_frames_are_checked_and_valid_codes_echoed() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    let close = |payload: Vec<u8>| client_frame(true, OP_CLOSE, &payload);
    let code = |c: u16| c.to_be_bytes().to_vec();
    assert_eq!(close_code_for(&broker, &close(vec![0x03])).await, 1002, "1-byte payload");
    for c in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        assert_eq!(close_code_for(&broker, &close(code(c))).await, 1002, "close code {c}");
    }
    let mut bad_reason = code(1000);
    bad_reason.extend_from_slice(b"bye \xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80");
    assert_eq!(close_code_for(&broker, &close(bad_reason)).await, 1007, "bad reason");
    for c in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 3999, 4999] {
        let mut with_reason = code(c);
        with_reason.extend_from_slice("bye κόσμε".as_bytes());
        assert_eq!(close_code_for(&broker, &close(with_reason)).await, c, "echo {c}");
    }
    assert_eq!(close_code_for(&broker, &close(Vec::new())).await, 1000, "no code");
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_sec_websocket_keys_get_400_before_the_upgrade() {
    let broker = TestBroker::start(ABUSE_CONFIG).await;
    for key in [
        "",
        "x",
        "dGhlIHNhbXBsZSBub25jZQ",   // no padding
        "dGhlIHNhbXBsZSBub25j",     // 15 bytes
        "dGhlIHNhbXBsZSBub25jZSE=", // 17 bytes
        "dGhlIHNhbXBsZSBub25jZR==", // bits past the 16th byte
        "dGhlIHNhbXBsZSBub2%jZQ==",
        "the sample nonce",
    ] {
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ];
        let (status, body) = common::http(broker.addr, "GET", "/ws", &headers, "").await;
        assert_eq!(status, 400, "key {key:?}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON error body");
        assert_eq!(body["code"], "bad_request", "key {key:?}");
    }
    // The RFC's sample key still upgrades.
    let raw = RawWs::connect(broker.addr, "/ws").await;
    drop(raw);
    broker.shutdown().await;
}
