//! The result of a run: printed as a table, written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::Common;
use crate::live::Point;
use crate::procfs::ProcSample;
use crate::redis::RedisEconomy;
use crate::scenario::presence::PresenceStats;
use crate::track::{Percentiles, Totals};

#[derive(Debug, Default, Serialize)]
pub struct ConnStats {
    pub requested: u64,
    pub opened: u64,
    pub failed: u64,
    pub retried: u64,
    pub seconds: f64,
    pub per_s: f64,
    pub source_addrs: u64,
}

#[derive(Debug, Serialize)]
pub struct Broker {
    /// Every broker process measured (their CPU and RSS are summed).
    pub pids: Vec<u32>,
    /// Broker CPU (user + system) over the measured window, seconds.
    pub cpu_s: f64,
    pub cpu_s_per_million_deliveries: Option<f64>,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub rss_per_connection_bytes: Option<f64>,
}

impl Broker {
    pub fn from_samples(
        pids: Vec<u32>,
        before: ProcSample,
        after: ProcSample,
        deliveries: u64,
        connections: Option<u64>,
    ) -> Self {
        let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
        Self {
            pids,
            cpu_s,
            cpu_s_per_million_deliveries: (deliveries > 0)
                .then(|| cpu_s / (deliveries as f64 / 1e6)),
            rss_before_bytes: before.rss_bytes,
            rss_after_bytes: after.rss_bytes,
            rss_per_connection_bytes: connections
                .filter(|&c| c > 0)
                .map(|c| (after.rss_bytes as f64 - before.rss_bytes as f64) / c as f64),
        }
    }
}

/// What a `slowloris` run held and how legitimate clients fared meanwhile.
#[derive(Debug, Default, Serialize)]
pub struct SlowlorisStats {
    /// Slow sockets asked for.
    pub sockets: u64,
    /// Seconds until every slow socket had tried its first connect.
    pub setup_s: f64,
    /// Slow sockets open when the legitimate clients started, and when they were done.
    pub held_at_start: u64,
    pub held_at_end: u64,
    /// Slow-socket connects that succeeded (replacements included) and that failed.
    pub opened: u64,
    pub connect_failed: u64,
    /// Slow sockets the broker closed (each then replaced, unless --no-reconnect).
    pub closed_by_broker: u64,
    pub clients: u64,
    pub clients_failed: u64,
    /// Legitimate clients: TCP connect to `welcome`.
    pub connect: Percentiles,
}

/// What a `recover` run measured.
#[derive(Debug, Default, Serialize)]
pub struct RecoverStats {
    pub channel: String,
    pub clients: u64,
    /// Messages published before the clients subscribed, which each must get back.
    pub missed: u64,
    /// The position the clients recovered from: the offset before the first missed message.
    pub since_offset: u64,
    pub epoch: String,
    /// Seconds to publish the missed messages and get every ack.
    pub publish_s: f64,
    /// `subscribe` (a `subscribe` frame with `since` on an open connection) or `connect`
    /// (`?channel=&since=` on the URL: the clock starts before the TCP connect).
    pub timed_from: String,
    /// Got `recovered: true` and exactly the missed offsets, in order.
    pub recovered: u64,
    /// Got `recovered: false`, an error, a close, no connection, or not everything in time.
    pub not_recovered: u64,
    /// Got `recovered: true` but a gap, a duplicate, a wrong order or epoch, or extra messages.
    pub wrong: u64,
    /// Why clients did not recover or were wrong, by reason.
    pub reasons: BTreeMap<String, u64>,
    /// Per recovered client: `timed_from` to its last missed message.
    pub recovery: Percentiles,
    /// From the moment every client was let go to the last one recovered, seconds.
    pub all_recovered_s: f64,
    /// `switchyard_history_backend_reads_total` summed over the brokers, before and after the
    /// clients subscribed (absent if `/metrics` could not be read).
    pub backend_reads_before: Option<f64>,
    pub backend_reads_after: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub client: String,
    pub batch: bool,
    /// Unix seconds at the start of the run.
    pub started_at: u64,
    pub params: serde_json::Value,
    pub connections: ConnStats,
    /// Connections still open at the end of a `connections` hold.
    pub held: u64,
    pub published: u64,
    pub acked: u64,
    /// Error frames (and HTTP errors) by code.
    pub errors: BTreeMap<String, u64>,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub foreign: u64,
    pub frames: u64,
    pub objects_per_frame: f64,
    pub slow_consumer_closes: u64,
    pub other_closes: u64,
    pub connection_errors: u64,
    /// First publish to last delivery, seconds.
    pub duration_s: f64,
    /// Whole measured phase including the drain, seconds.
    pub elapsed_s: f64,
    pub deliveries_per_s: f64,
    pub publishes_per_s: f64,
    pub latency: Percentiles,
    /// (upper bound µs, count) per histogram bucket, for plotting elsewhere.
    pub latency_buckets: Vec<(u64, u64)>,
    pub broker: Option<Broker>,
    /// This load generator's own CPU over the measured window (to show it was not the limit).
    pub loadgen_cpu_s: f64,
    pub loadgen_cpu_s_per_million_deliveries: Option<f64>,
    pub throughput: Vec<Point>,
    /// Set by the `slowloris` scenario only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowloris: Option<SlowlorisStats>,
    /// Set by the `recover` scenario only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover: Option<RecoverStats>,
    /// The Redis servers' reads, writes and CPU per publish (with `--redis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisEconomy>,
    /// Set by the `presence` scenario only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceStats>,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub latency_hist: Option<Histogram<u64>>,
}

impl Report {
    pub fn new(scenario: &str, common: &Common, params: serde_json::Value) -> Self {
        Self {
            scenario: scenario.into(),
            url: common.url.clone(),
            client: format!("{:?}", common.client).to_lowercase(),
            batch: common.batch,
            started_at: crate::client::now_ns() / 1_000_000_000,
            params,
            ..Default::default()
        }
    }

    pub fn set_totals(&mut self, t: &Totals) {
        self.expected = t.expected;
        self.delivered = t.delivered;
        self.lost = t.lost();
        self.out_of_order = t.out_of_order;
        self.duplicates = t.duplicates;
        self.foreign = t.foreign;
        self.latency = Percentiles::of(&t.latency_us);
    }

    /// Fills the derived fields that depend on the histogram.
    pub fn finish(&mut self) {
        if let Some(h) = &self.latency_hist {
            self.latency = Percentiles::of(h);
            self.latency_buckets = h
                .iter_log(1, 1.25)
                .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
                .collect();
        }
    }

    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", format!("{} ({} client{})", self.scenario, self.client, if self.batch { ", batch=1" } else { "" })),
            ("connections", format!(
                "{} opened / {} requested, {} failed, {} retries, {:.1} s ({:.0}/s) from {} source addrs",
                self.connections.opened, self.connections.requested, self.connections.failed,
                self.connections.retried, self.connections.seconds, self.connections.per_s,
                self.connections.source_addrs
            )),
        ];
        if let Some(sl) = &self.slowloris {
            rows.extend(slowloris_rows(sl));
        } else if let Some(r) = &self.recover {
            rows.extend(recover_rows(r));
        } else if let Some(p) = &self.presence {
            rows.extend(p.rows());
        } else if self.scenario == "connections" {
            rows.push(("held", format!("{} still open at the end", self.held)));
        } else {
            rows.extend([
                ("published", format!("{} ({} acked)", self.published, self.acked)),
                ("expected", self.expected.to_string()),
                ("delivered", self.delivered.to_string()),
                ("lost", self.lost.to_string()),
                ("out of order", self.out_of_order.to_string()),
                ("duplicates", self.duplicates.to_string()),
                ("duration", format!("{:.3} s (first publish to last delivery)", self.duration_s)),
                ("deliveries/s", format!("{:.0}", self.deliveries_per_s)),
                ("publishes/s", format!("{:.0}", self.publishes_per_s)),
                ("objects/frame", format!("{:.2}", self.objects_per_frame)),
            ]);
            let l = &self.latency;
            rows.push((
                "latency",
                format!(
                    "p50 {} p90 {} p99 {} p99.9 {} max {}  (n={})",
                    us(l.p50_us),
                    us(l.p90_us),
                    us(l.p99_us),
                    us(l.p999_us),
                    us(l.max_us),
                    l.count
                ),
            ));
        }
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
        };
        rows.push(("errors", errors));
        rows.push((
            "closes",
            format!(
                "{} slow consumer (4001), {} other; {} connection errors",
                self.slow_consumer_closes, self.other_closes, self.connection_errors
            ),
        ));
        if let Some(b) = &self.broker {
            let pids: Vec<String> = b.pids.iter().map(u32::to_string).collect();
            let mut s = format!("pid {} cpu {:.2} s", pids.join(","), b.cpu_s);
            if let Some(c) = b.cpu_s_per_million_deliveries {
                let _ = write!(s, ", {c:.3} CPU-s per million deliveries");
            }
            let _ = write!(s, ", RSS {} -> {}", mib(b.rss_before_bytes), mib(b.rss_after_bytes));
            if let Some(r) = b.rss_per_connection_bytes {
                let _ = write!(s, " ({:.2} KiB per connection)", r / 1024.0);
            }
            rows.push(("broker", s));
        }
        if let Some(r) = &self.redis {
            rows.push(("redis", redis_row(r)));
        }
        if let Some(c) = self.loadgen_cpu_s_per_million_deliveries {
            rows.push((
                "load generator",
                format!("cpu {:.2} s, {c:.3} CPU-s per million deliveries", self.loadgen_cpu_s),
            ));
        }
        for n in &self.notes {
            rows.push(("note", n.clone()));
        }
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<w$}  {v}");
        }
        out
    }
}

fn slowloris_rows(sl: &SlowlorisStats) -> Vec<(&'static str, String)> {
    let c = &sl.connect;
    vec![
        (
            "slow sockets",
            format!(
                "{} held at start, {} at end (of {}); {} opened in {:.1} s set-up and after, \
                 {} closed by the broker, {} connects failed",
                sl.held_at_start,
                sl.held_at_end,
                sl.sockets,
                sl.opened,
                sl.setup_s,
                sl.closed_by_broker,
                sl.connect_failed
            ),
        ),
        (
            "legit connect",
            format!(
                "p50 {} p99 {} max {}  ({} of {} connected, {} failed)",
                us(c.p50_us),
                us(c.p99_us),
                us(c.max_us),
                c.count,
                sl.clients,
                sl.clients_failed
            ),
        ),
    ]
}

fn recover_rows(r: &RecoverStats) -> Vec<(&'static str, String)> {
    let c = &r.recovery;
    let reads = match (r.backend_reads_before, r.backend_reads_after) {
        (Some(b), Some(a)) => format!("{b} -> {a} ({} during the recovery)", a - b),
        _ => "unknown (/metrics not read)".into(),
    };
    let reasons = if r.reasons.is_empty() {
        String::new()
    } else {
        let v: Vec<String> = r.reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" ({})", v.join(", "))
    };
    vec![
        (
            "missed",
            format!(
                "{} messages on {} published in {:.3} s; recovering from offset {} epoch {}",
                r.missed, r.channel, r.publish_s, r.since_offset, r.epoch
            ),
        ),
        (
            "clients",
            format!(
                "{} recovered, {} not recovered, {} wrong (of {}){reasons}",
                r.recovered, r.not_recovered, r.wrong, r.clients
            ),
        ),
        (
            "recovery time",
            format!(
                "p50 {} p99 {} max {}  (from {} to the last missed message, n={})",
                us(c.p50_us),
                us(c.p99_us),
                us(c.max_us),
                r.timed_from,
                c.count
            ),
        ),
        ("all recovered", format!("{:.3} s after the clients were let go", r.all_recovered_s)),
        ("backend reads", reads),
    ]
}

fn redis_row(r: &RedisEconomy) -> String {
    let f = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    let mut s = format!(
        "{} reads, {} writes, {:.2} CPU-s over {} publishes: per publish {} reads, {} writes, \
         {} CPU-µs",
        r.reads,
        r.writes,
        r.cpu_s,
        r.publishes,
        f(r.reads_per_publish, 3),
        f(r.writes_per_publish, 3),
        f(r.cpu_us_per_publish, 2),
    );
    if let Some(p) = r.process_cpu_s {
        let _ = write!(
            s,
            "; process CPU {p:.2} s ({} µs per publish)",
            f(r.process_cpu_us_per_publish, 2)
        );
    }
    let _ = write!(s, " [{}]", r.addrs.join(","));
    s
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}µs")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}
