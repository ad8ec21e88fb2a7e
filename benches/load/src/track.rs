//! Per-receiver accounting: deliveries, duplicates, out-of-order arrivals, latency.
//!
//! Each receiving connection owns one `Receiver` (no sharing on the hot path); they are merged
//! into a `Totals` once the run is over.

use std::collections::HashMap;

use hdrhistogram::Histogram;

use crate::parse::Stamp;

/// Latency histograms count microseconds from 1 µs to 60 s at 2 significant figures (1%):
/// about 10 KiB per receiver with u32 counters, so a thousand receivers stay cheap.
pub const HIST_MAX_US: u64 = 60_000_000;
const HIST_SIGFIG: u8 = 2;

pub fn new_histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    // The bounds are constants known to be valid, so this cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("valid histogram bounds")
}

/// Last sequence number seen per publisher stream. Fan-out receivers see a handful of dense
/// stream ids (a Vec), chat-shaped receivers see a few sparse ones (a map).
#[derive(Debug, Default)]
pub struct SeqTracker {
    dense: Vec<u64>,
    sparse: HashMap<u32, u64>,
}

/// Streams below this id are tracked in the dense Vec.
const DENSE_LIMIT: u32 = 64;
/// Marker for "nothing seen yet" (seq 0 is a valid first message).
const NONE: u64 = u64::MAX;

/// What one arrival means for ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The next expected sequence number, or a jump forward (the gap may still arrive late).
    Next,
    /// Earlier than something already seen from the same stream.
    Late,
    /// The same sequence number again.
    Duplicate,
}

impl SeqTracker {
    pub fn observe(&mut self, stream: u32, seq: u64) -> Order {
        let slot = if stream < DENSE_LIMIT {
            let i = stream as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, NONE);
            }
            &mut self.dense[i]
        } else {
            self.sparse.entry(stream).or_insert(NONE)
        };
        if *slot == NONE || seq > *slot {
            *slot = seq;
            Order::Next
        } else if seq == *slot {
            Order::Duplicate
        } else {
            Order::Late
        }
    }
}

/// Everything one receiving connection counted.
#[derive(Debug)]
pub struct Receiver {
    pub delivered: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub foreign: u64,
    /// Latency in µs; allocated on the first stamped delivery so idle connections cost nothing.
    pub latency: Option<Histogram<u32>>,
    seq: SeqTracker,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub fn new() -> Self {
        Self {
            delivered: 0,
            out_of_order: 0,
            duplicates: 0,
            foreign: 0,
            latency: None,
            seq: SeqTracker::default(),
        }
    }

    /// Records one delivery received at `now_ns` (Unix nanoseconds).
    pub fn record(&mut self, stamp: Stamp, now_ns: u64) {
        match self.seq.observe(stamp.stream, stamp.seq) {
            Order::Next => {}
            Order::Late => self.out_of_order += 1,
            // A duplicate is not a second delivery of useful work; keep it out of `delivered`
            // so that lost = expected - delivered stays honest.
            Order::Duplicate => {
                self.duplicates += 1;
                return;
            }
        }
        self.delivered += 1;
        let us = (now_ns.saturating_sub(stamp.sent_ns) / 1_000).clamp(1, HIST_MAX_US);
        let h = self.latency.get_or_insert_with(new_histogram);
        // Saturating record: a u32 bucket overflowing after 4 billion hits is not a concern
        // worth failing a run over.
        h.saturating_record(us);
    }
}

/// Sum over receivers.
#[derive(Debug)]
pub struct Totals {
    pub delivered: u64,
    pub expected: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub foreign: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            delivered: 0,
            expected: 0,
            out_of_order: 0,
            duplicates: 0,
            foreign: 0,
            latency_us: new_histogram(),
        }
    }
}

impl Totals {
    /// Adds one receiver that should have received `expected` messages.
    pub fn add(&mut self, r: &Receiver, expected: u64) {
        self.delivered += r.delivered;
        self.expected += expected;
        self.out_of_order += r.out_of_order;
        self.duplicates += r.duplicates;
        self.foreign += r.foreign;
        if let Some(h) = &r.latency {
            // Counter types differ (u32 per receiver, u64 in total), so copy bucket by bucket.
            // Same bounds on both sides: recording cannot fail; ignore rather than panic.
            for v in h.iter_recorded() {
                let _ =
                    self.latency_us.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
            }
        }
    }

    /// Lost = what should have arrived and did not. Per receiver it is expected - delivered, so
    /// summing the two sides first is the same as summing per-receiver losses as long as no
    /// receiver got more than it should (extra deliveries show up as duplicates instead).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// Percentile summary of a µs histogram.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(stream: u32, seq: u64) -> Stamp {
        Stamp { stream, seq, sent_ns: 0 }
    }

    #[test]
    fn in_order_stream_has_no_anomalies() {
        let mut r = Receiver::new();
        for s in 0..100 {
            r.record(stamp(0, s), 5_000);
        }
        assert_eq!((r.delivered, r.out_of_order, r.duplicates), (100, 0, 0));
    }

    #[test]
    fn late_arrival_is_out_of_order_and_gap_is_loss() {
        let mut r = Receiver::new();
        for s in [0, 1, 3, 2, 5] {
            r.record(stamp(1, s), 0);
        }
        // 2 came after 3: out of order; 4 never came: lost.
        assert_eq!(r.out_of_order, 1);
        let mut t = Totals::default();
        t.add(&r, 6);
        assert_eq!(t.delivered, 5);
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn duplicates_do_not_hide_loss() {
        let mut r = Receiver::new();
        for s in [0, 0, 1] {
            r.record(stamp(2, s), 0);
        }
        assert_eq!(r.duplicates, 1);
        let mut t = Totals::default();
        t.add(&r, 3);
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn streams_are_independent_dense_and_sparse() {
        let mut r = Receiver::new();
        for (p, s) in [(0, 0), (1_000_000, 5), (0, 1), (1_000_000, 6), (3, 0)] {
            r.record(stamp(p, s), 0);
        }
        assert_eq!((r.delivered, r.out_of_order), (5, 0));
        r.record(stamp(1_000_000, 4), 0);
        assert_eq!(r.out_of_order, 1);
    }

    #[test]
    fn percentiles_from_histogram() {
        let mut r = Receiver::new();
        // 1..=1000 µs latencies, one each.
        for i in 1..=1000u64 {
            r.record(Stamp { stream: 0, seq: i, sent_ns: 0 }, i * 1_000);
        }
        let mut t = Totals::default();
        t.add(&r, 1000);
        let p = Percentiles::of(&t.latency_us);
        assert_eq!(p.count, 1000);
        // 2 significant figures: within 1% of the true value.
        let near = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
        assert!(near(p.p50_us, 500), "p50 {}", p.p50_us);
        assert!(near(p.p90_us, 900), "p90 {}", p.p90_us);
        assert!(near(p.p99_us, 990), "p99 {}", p.p99_us);
        assert!(near(p.p999_us, 999), "p99.9 {}", p.p999_us);
        assert!(near(p.max_us, 1000));
        assert_eq!(p.min_us, 1);
    }

    #[test]
    fn empty_histogram_gives_zeroes() {
        let p = Percentiles::of(&Totals::default().latency_us);
        assert_eq!(p.count, 0);
        assert_eq!(p.p99_us, 0);
    }
}
