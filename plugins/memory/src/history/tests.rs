//! The ring and its store on paused time: trimming, paging and expiry without waiting.

use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::Retention;
use tokio::time::{advance, Instant};

use super::*;

const KEEP: Retention = Retention { size: 5, ttl: Duration::from_secs(10) };

fn offsets(page: &Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.offset).collect()
}

fn filled(n: u64) -> Ring {
    let now = Instant::now();
    let mut ring = Ring::new(now, KEEP);
    for i in 1..=n {
        let at = ring.push(Bytes::from(format!("m{i}")), now, KEEP);
        assert_eq!(at.offset, i);
    }
    ring
}

#[tokio::test(start_paused = true)]
async fn ring_trims_to_size_and_keeps_counting() {
    let ring = filled(12);
    let page = ring.page(None, 100);
    assert_eq!(offsets(&page), vec![8, 9, 10, 11, 12]);
    assert_eq!(page.top, 12);
    assert_eq!(page.messages[0].payload, Bytes::from_static(b"m8"));
}

#[tokio::test(start_paused = true)]
async fn ring_pages_since_and_last() {
    let ring = filled(12);
    assert_eq!(offsets(&ring.page(Some(0), 2)), vec![8, 9], "older than kept: from the oldest");
    assert_eq!(offsets(&ring.page(Some(9), 2)), vec![10, 11]);
    assert_eq!(offsets(&ring.page(Some(11), 9)), vec![12]);
    assert_eq!(offsets(&ring.page(Some(12), 9)), Vec::<u64>::new());
    assert_eq!(offsets(&ring.page(Some(99), 9)), Vec::<u64>::new());
    assert_eq!(offsets(&ring.page(None, 2)), vec![11, 12]);
    assert_eq!(offsets(&ring.page(None, 0)), Vec::<u64>::new());
    assert_eq!(offsets(&ring.page(Some(u64::MAX), 3)), Vec::<u64>::new());
}

#[tokio::test(start_paused = true)]
async fn empty_ring_pages_nothing_at_top_zero() {
    let ring = filled(0);
    let page = ring.page(Some(3), 10);
    assert_eq!((page.top, page.messages.len()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn store_expires_a_stream_ttl_after_its_last_publish() {
    let mut store = Store::default();
    let first =
        store.ring("c", Instant::now(), KEEP).push(Bytes::from_static(b"a"), Instant::now(), KEEP);
    advance(Duration::from_secs(9)).await;
    // A publish just before the deadline renews it for a whole ttl.
    let second =
        store.ring("c", Instant::now(), KEEP).push(Bytes::from_static(b"b"), Instant::now(), KEEP);
    assert_eq!((second.offset, &second.epoch), (2, &first.epoch));
    advance(Duration::from_secs(9)).await;
    let page = store.ring("c", Instant::now(), KEEP).page(None, 10);
    assert_eq!((page.top, &page.epoch), (2, &first.epoch), "alive 9 s after the last publish");
    advance(Duration::from_secs(1)).await;
    let page = store.ring("c", Instant::now(), KEEP).page(None, 10);
    assert_ne!(page.epoch, first.epoch, "expired 10 s after the last publish: new epoch");
    assert_eq!((page.top, page.messages.len()), (0, 0));
    let next =
        store.ring("c", Instant::now(), KEEP).push(Bytes::from_static(b"c"), Instant::now(), KEEP);
    assert_eq!((next.offset, &next.epoch), (1, &page.epoch), "the read's epoch is carried on");
}

#[tokio::test(start_paused = true)]
async fn reads_do_not_extend_a_stream() {
    let mut store = Store::default();
    let created = store.ring("c", Instant::now(), KEEP).page(None, 0).epoch;
    advance(Duration::from_secs(6)).await;
    assert_eq!(store.ring("c", Instant::now(), KEEP).page(None, 0).epoch, created);
    advance(Duration::from_secs(4)).await;
    assert_ne!(store.ring("c", Instant::now(), KEEP).page(None, 0).epoch, created);
}

#[tokio::test(start_paused = true)]
async fn dead_channels_are_freed_on_a_later_access() {
    let mut store = Store::default();
    for i in 0..10 {
        store.ring(&format!("dead{i}"), Instant::now(), KEEP);
    }
    let live = store.ring("live", Instant::now(), KEEP).push(Bytes::new(), Instant::now(), KEEP);
    advance(Duration::from_secs(5)).await;
    store.ring("live", Instant::now(), KEEP).push(Bytes::new(), Instant::now(), KEEP);
    advance(Duration::from_secs(5)).await;
    assert_eq!(store.len(), 11, "nothing is freed without an access");
    let page = store.ring("live", Instant::now(), KEEP).page(None, 0);
    assert_eq!(store.len(), 1, "the ten dead channels are freed by the access");
    assert_eq!((page.top, page.epoch), (2, live.epoch), "the live one was rescheduled, not freed");
    advance(Duration::from_secs(5)).await;
    store.ring("other", Instant::now(), KEEP);
    assert_eq!(store.len(), 1, "the rescheduled one is freed at its own deadline");
}

#[tokio::test(start_paused = true)]
async fn sweep_is_bounded_per_access() {
    let mut store = Store::default();
    for i in 0..(SWEEP_PER_ACCESS + 10) {
        store.ring(&format!("dead{i}"), Instant::now(), KEEP);
    }
    advance(Duration::from_secs(10)).await;
    store.ring("a", Instant::now(), KEEP);
    assert_eq!(store.len(), 10 + 1, "one access frees at most SWEEP_PER_ACCESS rings");
    store.ring("a", Instant::now(), KEEP);
    assert_eq!(store.len(), 1);
}
