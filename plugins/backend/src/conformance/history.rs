//! The history section of the conformance suite: the contract of [`crate::history`], checked
//! on every backend whose `has_history()` is true.
//!
//! A backend's test file calls [`run_history`] with the same kind of factory it gives
//! [`super::run_all`]. The TTL checks use a short real TTL ([`SHORT`]) and real sleeps,
//! because the Redis backends expire on Redis's clock, which paused tokio time cannot move.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::{next, unique, Pair};
use crate::{Backend, BackendError, Incoming, Page, Position, Retention};

/// Retention of the checks that must not see anything expire.
pub const KEEP: Retention = Retention { size: 1000, ttl: Duration::from_secs(60) };

/// Retention of the expiry checks: long enough for a few publishes on a loaded machine,
/// short enough to wait out.
pub const SHORT: Retention = Retention { size: 1000, ttl: Duration::from_millis(300) };

/// How long past [`SHORT`]'s TTL the expiry checks wait before expecting the stream gone.
const PAST_TTL: Duration = Duration::from_millis(300 + 250);

/// Runs every history check, each on a fresh pair from `factory`. Panics if the backend has
/// no history: a backend without it is checked by [`super::run_all`] only (which checks that
/// it refuses history calls).
pub async fn run_history<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Pair>,
{
    let p = factory().await;
    assert!(
        p.a.has_history() && p.b.has_history(),
        "run_history needs a backend with has_history() == true ({} says false)",
        p.a.kind()
    );
    offsets_count_from_one_and_reach_the_other_node(p).await;
    both_nodes_share_one_stream(factory().await).await;
    since_returns_the_first_limit_after_it(factory().await).await;
    without_since_returns_the_last_limit(factory().await).await;
    limit_zero_returns_epoch_and_top_only(factory().await).await;
    history_is_trimmed_to_size(factory().await).await;
    reading_an_unknown_channel_makes_the_epoch(factory().await).await;
    concurrent_publishers_get_distinct_offsets_in_order(factory().await).await;
    history_expires_ttl_after_the_last_publish(factory().await).await;
    an_unread_unpublished_stream_expires_too(factory().await).await;
}

/// The payload the checks publish as message `i`, so a page can be checked message by
/// message.
fn payload(i: u64) -> Bytes {
    Bytes::from(format!("m{i}"))
}

async fn publish_n(b: &dyn Backend, ch: &str, n: u64, retention: Retention) -> Vec<Position> {
    let mut positions = Vec::new();
    for i in 1..=n {
        positions.push(b.publish_kept(ch, payload(i), retention).await.expect("publish_kept"));
    }
    positions
}

async fn read(b: &dyn Backend, ch: &str, since: Option<u64>, limit: usize) -> Page {
    b.history(ch, since, limit, KEEP).await.expect("history")
}

/// Asserts `page` is epoch `epoch`, top `top`, holding exactly the messages `offsets` (each
/// with the payload it was published with).
#[track_caller]
fn assert_page(page: &Page, epoch: &str, top: u64, offsets: &[u64], what: &str) {
    assert_eq!(&*page.epoch, epoch, "{what}: epoch");
    assert_eq!(page.top, top, "{what}: top offset");
    let got: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(got, offsets, "{what}: offsets of the returned messages, oldest first");
    for m in &page.messages {
        assert_eq!(m.payload, payload(m.offset), "{what}: payload of offset {}", m.offset);
    }
}

/// Receives the next message and asserts it is `ch`'s message `position.offset` with exactly
/// `position`.
async fn expect_delivery(incoming: &mut Incoming, ch: &str, position: &Position, what: &str) {
    let m = next(incoming, what).await;
    assert_eq!(&*m.channel, ch, "{what}: channel");
    assert_eq!(m.position.as_ref(), Some(position), "{what}: the position publish_kept returned");
    assert_eq!(m.payload, payload(position.offset), "{what}: payload");
}

/// Offsets are 1..=n in publish order within one epoch, and the subscriber on the other node
/// receives each message with the very position `publish_kept` returned.
pub async fn offsets_count_from_one_and_reach_the_other_node(mut p: Pair) {
    let ch = unique("conf.hist.offsets");
    p.b.subscribe(&ch).await.expect("subscribe b");
    let positions = publish_n(&*p.a, &ch, 5, KEEP).await;
    let offsets: Vec<u64> = positions.iter().map(|at| at.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5], "offsets of five publishes to a new channel");
    let epoch = positions[0].epoch.clone();
    for at in &positions {
        assert_eq!(at.epoch, epoch, "epoch changed between publishes at offset {}", at.offset);
    }
    for at in &positions {
        expect_delivery(&mut p.b_in, &ch, at, &format!("offset {} on b", at.offset)).await;
    }
    assert_page(&read(&*p.b, &ch, None, 10).await, &epoch, 5, &[1, 2, 3, 4, 5], "read on b");
}

/// Publishes from both nodes continue one stream: one epoch, one sequence of offsets.
pub async fn both_nodes_share_one_stream(mut p: Pair) {
    let ch = unique("conf.hist.shared");
    p.a.subscribe(&ch).await.expect("subscribe a");
    let mut positions = Vec::new();
    for i in 1..=6 {
        let node = if i % 2 == 0 { &p.b } else { &p.a };
        positions.push(node.publish_kept(&ch, payload(i), KEEP).await.expect("publish_kept"));
    }
    let offsets: Vec<u64> = positions.iter().map(|at| at.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5, 6], "offsets of publishes alternating a and b");
    let epoch = positions[0].epoch.clone();
    assert!(positions.iter().all(|at| at.epoch == epoch), "one epoch across nodes: {positions:?}");
    for at in &positions {
        expect_delivery(&mut p.a_in, &ch, at, &format!("offset {} on a", at.offset)).await;
    }
    let page = read(&*p.a, &ch, None, 10).await;
    assert_page(&page, &epoch, 6, &[1, 2, 3, 4, 5, 6], "read on a");
}

/// With `since`, the first `limit` messages after that offset, whatever the limit and
/// however close to the top.
pub async fn since_returns_the_first_limit_after_it(p: Pair) {
    let ch = unique("conf.hist.since");
    let epoch = publish_n(&*p.a, &ch, 10, KEEP).await[0].epoch.clone();
    let cases: [(u64, usize, &[u64]); 7] = [
        (0, 3, &[1, 2, 3]),
        (3, 4, &[4, 5, 6, 7]),
        (8, 100, &[9, 10]),
        (9, 1, &[10]),
        (10, 5, &[]),
        (0, 10, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (50, 5, &[]),
    ];
    for (since, limit, expected) in cases {
        let page = read(&*p.b, &ch, Some(since), limit).await;
        assert_page(&page, &epoch, 10, expected, &format!("since {since} limit {limit}"));
    }
}

/// Without `since`, the last `limit` messages, oldest first.
pub async fn without_since_returns_the_last_limit(p: Pair) {
    let ch = unique("conf.hist.last");
    let epoch = publish_n(&*p.a, &ch, 10, KEEP).await[0].epoch.clone();
    let cases: [(usize, &[u64]); 4] = [
        (1, &[10]),
        (3, &[8, 9, 10]),
        (10, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (100, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ];
    for (limit, expected) in cases {
        let page = read(&*p.b, &ch, None, limit).await;
        assert_page(&page, &epoch, 10, expected, &format!("last {limit}"));
    }
}

/// `limit` 0 returns no message but still the epoch and the top offset.
pub async fn limit_zero_returns_epoch_and_top_only(p: Pair) {
    let ch = unique("conf.hist.zero");
    let epoch = publish_n(&*p.a, &ch, 3, KEEP).await[0].epoch.clone();
    assert_page(&read(&*p.b, &ch, None, 0).await, &epoch, 3, &[], "last 0");
    assert_page(&read(&*p.b, &ch, Some(1), 0).await, &epoch, 3, &[], "since 1 limit 0");
}

/// At most `size` messages are kept, exactly the newest; offsets keep counting past the
/// dropped ones.
pub async fn history_is_trimmed_to_size(p: Pair) {
    let ch = unique("conf.hist.trim");
    let small = Retention { size: 5, ..KEEP };
    let positions = publish_n(&*p.a, &ch, 12, small).await;
    let epoch = positions[0].epoch.clone();
    let page = read(&*p.b, &ch, None, 100).await;
    assert_page(&page, &epoch, 12, &[8, 9, 10, 11, 12], "last 100 of 12 published, size 5");
    let page = read(&*p.b, &ch, Some(0), 100).await;
    assert_page(&page, &epoch, 12, &[8, 9, 10, 11, 12], "since 0 after trimming: oldest kept");
    let page = read(&*p.b, &ch, Some(9), 2).await;
    assert_page(&page, &epoch, 12, &[10, 11], "since 9 limit 2 after trimming");
    let at = p.b.publish_kept(&ch, payload(13), small).await.expect("publish_kept");
    assert_eq!((at.offset, &at.epoch), (13, &epoch), "offset after trimming keeps counting");
    let page = read(&*p.a, &ch, None, 100).await;
    assert_page(&page, &epoch, 13, &[9, 10, 11, 12, 13], "last 100 after one more publish");
}

/// Reading a channel nobody published to gives top 0 and an epoch, the same on the next read
/// and on either node, which the first publish then carries at offset 1.
pub async fn reading_an_unknown_channel_makes_the_epoch(p: Pair) {
    let ch = unique("conf.hist.unknown");
    let first = read(&*p.b, &ch, None, 10).await;
    assert_eq!((first.top, first.messages.len()), (0, 0), "unknown channel: top 0, no message");
    assert_page(&read(&*p.a, &ch, Some(0), 10).await, &first.epoch, 0, &[], "read again on a");
    let at = p.a.publish_kept(&ch, payload(1), KEEP).await.expect("publish_kept");
    assert_eq!(at.offset, 1, "first publish after a read: offset");
    assert_eq!(at.epoch, first.epoch, "first publish after a read carries the read's epoch");
    assert_page(&read(&*p.b, &ch, None, 10).await, &first.epoch, 1, &[1], "read after publish");
}

/// Several tasks on both nodes publishing to one channel at once get distinct offsets with no
/// hole, and every subscriber receives them in offset order, each with its returned position.
pub async fn concurrent_publishers_get_distinct_offsets_in_order(mut p: Pair) {
    const TASKS: usize = 8;
    const EACH: usize = 100;
    let ch = unique("conf.hist.conc");
    p.a.subscribe(&ch).await.expect("subscribe a");
    p.b.subscribe(&ch).await.expect("subscribe b");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let backend = if task % 2 == 0 { p.a.clone() } else { p.b.clone() };
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut returned = Vec::new();
            for i in 0..EACH {
                let body = Bytes::from(format!("{task}:{i}"));
                let at = backend.publish_kept(&ch, body.clone(), KEEP).await.expect("publish_kept");
                returned.push((body, at));
            }
            returned
        }));
    }
    let mut returned: HashMap<Bytes, Position> = HashMap::new();
    for t in tasks {
        returned.extend(t.await.expect("publisher task"));
    }
    let total = (TASKS * EACH) as u64;
    let offsets: BTreeSet<u64> = returned.values().map(|at| at.offset).collect();
    assert_eq!(offsets, (1..=total).collect(), "offsets returned to {TASKS} concurrent tasks");
    let epochs: BTreeSet<&str> = returned.values().map(|at| &*at.epoch).collect();
    assert_eq!(epochs.len(), 1, "one epoch across concurrent publishes: {epochs:?}");
    for (node, incoming) in [("a", &mut p.a_in), ("b", &mut p.b_in)] {
        for offset in 1..=total {
            let m = next(incoming, &format!("offset {offset} on {node}")).await;
            let at = m.position.as_ref().map(|at| at.offset);
            assert_eq!(at, Some(offset), "{node} received offsets out of order");
            assert_eq!(
                m.position.as_ref(),
                returned.get(&m.payload),
                "{node}: position of {:?}",
                m.payload
            );
        }
    }
}

/// Publishes closer together than the TTL keep a stream alive; `ttl` after the last one it is
/// gone, and a read or a publish starts a new epoch at offset 1. Real time: a machine that
/// stalls for more than two thirds of [`SHORT`]'s TTL between publishes fails the first part.
pub async fn history_expires_ttl_after_the_last_publish(mut p: Pair) {
    let ch = unique("conf.hist.ttl");
    p.b.subscribe(&ch).await.expect("subscribe b");
    let mut positions = Vec::new();
    for i in 1..=4 {
        positions.push(p.a.publish_kept(&ch, payload(i), SHORT).await.expect("publish_kept"));
        tokio::time::sleep(SHORT.ttl / 3).await;
    }
    let old = positions[0].epoch.clone();
    let offsets: Vec<u64> = positions.iter().map(|at| at.offset).collect();
    assert_eq!(
        offsets,
        vec![1, 2, 3, 4],
        "publishes {:?} apart, TTL {:?}",
        SHORT.ttl / 3,
        SHORT.ttl
    );
    assert!(positions.iter().all(|at| at.epoch == old), "epoch changed while kept alive");
    tokio::time::sleep(PAST_TTL).await;
    let page = p.b.history(&ch, None, 10, SHORT).await.expect("history");
    assert_ne!(page.epoch, old, "read {PAST_TTL:?} after the last publish: still the old epoch");
    assert_eq!((page.top, page.messages.len()), (0, 0), "read after expiry: top 0, no message");
    let at = p.a.publish_kept(&ch, payload(1), SHORT).await.expect("publish_kept");
    assert_eq!((at.offset, &at.epoch), (1, &page.epoch), "publish after expiry and a read");
    tokio::time::sleep(PAST_TTL).await;
    let fresh = p.b.publish_kept(&ch, payload(1), SHORT).await.expect("publish_kept");
    assert_eq!(fresh.offset, 1, "publish {PAST_TTL:?} after the last one, without a read");
    assert!(fresh.epoch != old && fresh.epoch != at.epoch, "publish after expiry: new epoch");
    for at in positions.iter().chain([&at, &fresh]) {
        expect_delivery(&mut p.b_in, &ch, at, &format!("offset {} of {}", at.offset, at.epoch))
            .await;
    }
}

/// The stream a read creates lives `ttl` too: with no publish, a later read finds a new epoch.
pub async fn an_unread_unpublished_stream_expires_too(p: Pair) {
    let ch = unique("conf.hist.ttlread");
    let first = p.a.history(&ch, None, 10, SHORT).await.expect("history");
    let again = p.b.history(&ch, None, 10, SHORT).await.expect("history");
    assert_eq!(again.epoch, first.epoch, "a second read at once: the created epoch");
    tokio::time::sleep(PAST_TTL).await;
    let later = p.b.history(&ch, None, 10, SHORT).await.expect("history");
    assert_ne!(later.epoch, first.epoch, "read {PAST_TTL:?} after the stream was created");
    assert_eq!((later.top, later.messages.len()), (0, 0), "read of an expired stream");
}

/// For [`super::run_all`]: a backend without history refuses history calls as `Invalid`
/// rather than dropping kept messages silently. Backends with history skip this.
pub async fn backends_without_history_refuse_it(p: Pair) {
    if p.a.has_history() {
        return;
    }
    let ch = unique("conf.hist.none");
    let kept = p.a.publish_kept(&ch, payload(1), KEEP).await;
    assert!(
        matches!(kept, Err(BackendError::Invalid(_))),
        "publish_kept without history: {kept:?}"
    );
    let read = p.a.history(&ch, None, 10, KEEP).await;
    assert!(matches!(read, Err(BackendError::Invalid(_))), "history without history: {read:?}");
}
