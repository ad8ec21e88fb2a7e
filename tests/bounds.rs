//! What one connection may hold, over real sockets: a client that never reads is closed with
//! 4001 once its queue passes `server.outbound_queue_bytes`, and a client stuck in a write
//! (its socket buffers full, its queue under the bounds) is still closed on time by the ping
//! timeout, token expiry and shutdown.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, RawWs, TestBroker};
use serde_json::json;
use tokio::time::Instant;

/// The broker's close grace for a stuck client (see `session.rs`), plus room for a busy CI box.
const GRACE_AND_SLACK: Duration = Duration::from_secs(4);
/// A userland backlog this large means the socket buffers are full: the client is stuck.
const STUCK_BACKLOG: usize = 2 * 1024 * 1024;

/// Bounds far above what the stuck tests queue, so nothing closes them but the timer under test.
const LOOSE_QUEUE: &str = r#"
[server]
outbound_queue = 100000
outbound_queue_bytes = 67108864
"#;

/// One connection's queue, as the broker reports it.
struct Watched<'a> {
    broker: &'a TestBroker,
    conn: String,
}

impl Watched<'_> {
    /// Bytes queued to it; 0 once it is gone.
    fn queued_bytes(&self) -> usize {
        self.broker.handle.connection(&self.conn).map_or(0, |c| c.queued_bytes)
    }

    /// Whether a close was requested (or it is gone already).
    fn is_closing(&self) -> bool {
        self.broker.handle.connection(&self.conn).is_none_or(|c| c.closing)
    }
}

fn outbox_of<'a>(broker: &'a TestBroker, conn: &str) -> Watched<'a> {
    assert!(broker.handle.connection(conn).is_some(), "{conn} is not registered");
    Watched { broker, conn: conn.to_string() }
}

/// A message of about `bytes` bytes of `data`.
fn big(seq: u64, bytes: usize) -> serde_json::Value {
    json!({"seq": seq, "pad": "x".repeat(bytes)})
}

/// Publishes 60 KB messages until every outbox in `stuck` holds a backlog the socket refused;
/// returns how many were published.
async fn fill_until_stuck(publisher: &mut Client, channel: &str, stuck: &[&Watched<'_>]) -> u64 {
    for seq in 0..2000 {
        if stuck.iter().all(|o| o.queued_bytes() > STUCK_BACKLOG) {
            return seq;
        }
        publisher.publish(channel, big(seq, 60_000)).await;
    }
    panic!("120 MB published and the socket buffers never filled");
}

/// Polls until `outbox` has a close requested; returns when that was seen.
async fn closing_seen(outbox: &Watched<'_>) -> Instant {
    common::eventually("the stuck connection is closing", || async { outbox.is_closing() }).await;
    Instant::now()
}

/// Reads everything left until the stream ends: (close code if a close frame came, bytes).
async fn drain(raw: &mut RawWs) -> (Option<u16>, usize) {
    let mut bytes = 0;
    while let Some((op, payload)) = raw.try_read_frame().await {
        if op == 0x8 {
            return (payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])), bytes);
        }
        bytes += payload.len();
    }
    (None, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4001_past_the_byte_bound() {
    const BOUND: usize = 256 * 1024;
    let broker = TestBroker::start(common::open_config!(
        r#"
[server]
outbound_queue = 100000
outbound_queue_bytes = 262144

[limits]
publish_rate = 100000
publish_burst = 100000
"#
    ))
    .await;
    let mut slow = RawWs::connect(broker.addr, "/ws?channel=flood").await;
    let mut bystander = broker.connect("channel=flood").await;
    let mut publisher = broker.connect("").await;
    let outbox = outbox_of(&broker, &slow.conn);
    // Lock-step with the bystander, so its queue stays short while the slow one grows.
    let mut most = 0;
    let mut seq = 0;
    while !outbox.is_closing() {
        assert!(seq < 4000, "never closed after {seq} messages of 30 KB");
        publisher.publish("flood", big(seq, 30_000)).await;
        assert_eq!(bystander.recv().await["data"]["seq"], json!(seq));
        most = most.max(outbox.queued_bytes());
        seq += 1;
    }
    assert!(most <= BOUND, "{most} bytes were queued under a bound of {BOUND}");
    // Everything before the overflow still arrives, then the close.
    let (code, _) = drain(&mut slow).await;
    assert_eq!(code, Some(4001), "slow consumer close code");
    for n in seq..seq + 20 {
        publisher.publish("flood", json!({"seq": n})).await;
        assert_eq!(bystander.recv().await["data"]["seq"], json!(n), "the bystander kept receiving");
    }
    drop((bystander, publisher));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stuck_in_a_write_still_gets_its_ping_timeout() {
    const INTERVAL: Duration = Duration::from_millis(1000);
    let broker = TestBroker::start(&format!(
        "{LOOSE_QUEUE}ping_interval_ms = 1000\n{}",
        common::open_config!("")
    ))
    .await;
    let connected = Instant::now();
    let mut stuck = RawWs::connect(broker.addr, "/ws?channel=flood").await;
    let mut bystander = broker.connect("").await;
    let outbox = outbox_of(&broker, &stuck.conn);
    fill_until_stuck(&mut bystander, "flood", &[&outbox]).await;
    assert!(!outbox.is_closing(), "closed before the ping timeout could be tested");
    // Silent since it connected: pinged after one interval, closed after the next.
    let closed = closing_seen(&outbox).await;
    assert!(
        closed - connected < 2 * INTERVAL + GRACE_AND_SLACK,
        "ping timeout came {:?} after the last frame",
        closed - connected
    );
    // Meanwhile everyone else is served.
    bystander.send_text(r#"{"op":"ping","id":"alive"}"#).await;
    assert_eq!(bystander.recv().await, json!({"op":"pong","id":"alive"}));
    let (code, _) = drain(&mut stuck).await;
    assert_eq!(code, Some(1000), "ping timeout close code");
    drop(bystander);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stuck_in_a_write_still_gets_4003_when_its_token_expires() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secrets = common::Secrets::new();
    let toml = format!(
        "{LOOSE_QUEUE}\n[auth]\n{}\n[backends.local]\n\
         kind = \"memory\"\n\n[[routes]]\nmatch = \"**\"\nsubscribe = \"anyone\"\n\
         publish = \"anyone\"\n",
        secrets.jwt("bounds-secret")
    );
    let broker = TestBroker::start_with_secrets(&toml, secrets).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let exp = now + 3;
    let token = encode(
        &Header::default(),
        &json!({"sub":"alice","exp":exp}),
        &EncodingKey::from_secret(b"bounds-secret"),
    )
    .expect("encode token");
    let mut stuck = RawWs::connect(broker.addr, &format!("/ws?channel=flood&token={token}")).await;
    let mut publisher = broker.connect("").await;
    let outbox = outbox_of(&broker, &stuck.conn);
    fill_until_stuck(&mut publisher, "flood", &[&outbox]).await;
    assert!(!outbox.is_closing(), "closed before the expiry could be tested");
    closing_seen(&outbox).await;
    let expiry = UNIX_EPOCH + Duration::from_secs(exp);
    let late = SystemTime::now().duration_since(expiry).unwrap_or(Duration::ZERO);
    assert!(late < GRACE_AND_SLACK, "closed {late:?} after the token expired");
    let (code, _) = drain(&mut stuck).await;
    assert_eq!(code, Some(4003), "token expiry close code");
    drop(publisher);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stuck_in_a_write_get_1001_at_shutdown_or_are_dropped_after_a_grace() {
    const SHUTDOWN: Duration = Duration::from_millis(500);
    let broker = TestBroker::start(&format!(
        "{LOOSE_QUEUE}shutdown_timeout_ms = 500\n{}",
        common::open_config!("")
    ))
    .await;
    // `reads_late` starts reading once the close is due; `never_reads` does not.
    let mut reads_late = RawWs::connect(broker.addr, "/ws?channel=flood").await;
    let mut never_reads = RawWs::connect(broker.addr, "/ws?channel=flood").await;
    let mut publisher = broker.connect("").await;
    let late_box = outbox_of(&broker, &reads_late.conn);
    let never_box = outbox_of(&broker, &never_reads.conn);
    let published = fill_until_stuck(&mut publisher, "flood", &[&late_box, &never_box]).await;
    drop((publisher, late_box));
    let started = Instant::now();
    broker.handle.shutdown().await;
    assert!(
        started.elapsed() < SHUTDOWN + GRACE_AND_SLACK,
        "shutdown took {:?}",
        started.elapsed()
    );
    let (code, _) = drain(&mut reads_late).await;
    assert_eq!(code, Some(1001), "shutdown close code");
    // The other one is let go once the grace is over; what it then reads ends without a close
    // frame, short of what was queued for it.
    common::eventually("the stuck connection is dropped", || async {
        broker.handle.connection(&never_box.conn).is_none()
    })
    .await;
    assert!(started.elapsed() < GRACE_AND_SLACK, "dropped {:?} after shutdown", started.elapsed());
    let (code, read) = drain(&mut never_reads).await;
    assert_eq!(code, None, "a close frame cannot have passed a full socket");
    let sent = published as usize * 60_000;
    assert!(
        read + STUCK_BACKLOG / 2 < sent,
        "read {read} of {sent} bytes: the backlog still queued at shutdown was not dropped"
    );
}
