//! `presence counts`: `--members` connections subscribe to one presence channel (spread over
//! the URLs); once the counts say so, one more connection (the reader) sends `--queries`
//! counts queries, at most `--in-flight` unanswered, each timed from its send to its answer.
//! Then it walks the channel's members by cursor, `--page-queries` pages of each `--pages`
//! size, one after another, timing each page. As a baseline, it times `--pings` pings the same
//! way first: the same round trip through the broker, without the backend.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{ask, hold, query, refused, Window};
use crate::cli::PresenceCountsArgs;
use crate::client::{Conn, Event};
use crate::parse::{for_each_raw, presence_answer, Frame};
use crate::report::Report;
use crate::scenario::{conn_stats, open_all, Ctx};
use crate::track::{new_histogram, Percentiles};
use crate::Result;

/// How often the reader asks for the counts while they do not yet say `--members`.
const SETTLE_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Serialize)]
pub struct CountsStats {
    pub channel: String,
    /// Members that connected and subscribed.
    pub members: u64,
    /// Distinct users the counts said (0: the bench's connections are anonymous).
    pub users: u64,
    /// From the last member's subscribe answer to counts that say `members`, seconds.
    pub settle_s: f64,
    pub queries: u64,
    pub in_flight: usize,
    /// Per counts query: send to answer.
    pub latency: Percentiles,
    pub queries_per_s: f64,
    /// Counts answers whose `connections` was not `members` (nobody joins or leaves meanwhile).
    pub wrong_counts: u64,
    /// Broker CPU over the counts queries, per query (with `--pid`).
    pub broker_cpu_us_per_query: Option<f64>,
    /// The backend processes' CPU over the same window, per query (with `--backend-pid`).
    pub backend_cpu_us_per_query: Option<f64>,
    /// The baseline: pings sent the same way (`--pings`, `--in-flight`), send to pong.
    pub pings: u64,
    pub ping_latency: Percentiles,
    pub broker_cpu_us_per_ping: Option<f64>,
    pub pages: Vec<PageStats>,
}

/// Member pages of one size.
#[derive(Debug, Default, Serialize)]
pub struct PageStats {
    pub limit: usize,
    pub queries: u64,
    /// Per page: send to answer.
    pub latency: Percentiles,
    /// Walks of the whole channel finished (the last page has no `next_cursor`).
    pub walks: u64,
    /// Finished walks that did not list exactly `members` members.
    pub wrong_walks: u64,
}

impl CountsStats {
    pub fn failed(&self) -> bool {
        self.wrong_counts > 0 || self.pages.iter().any(|p| p.wrong_walks > 0)
    }

    fn ping_row(&self) -> (&'static str, String) {
        let l = &self.ping_latency;
        let cpu = self
            .broker_cpu_us_per_ping
            .map_or(String::new(), |c| format!("; broker {c:.1} CPU-µs per ping"));
        let text = format!(
            "{} (baseline, no backend): p50 {} p90 {} p99 {} p99.9 {} max {}{cpu}",
            self.pings,
            us(l.p50_us),
            us(l.p90_us),
            us(l.p99_us),
            us(l.p999_us),
            us(l.max_us)
        );
        ("pings", text)
    }

    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let l = &self.latency;
        let mut cpu = self
            .broker_cpu_us_per_query
            .map_or(String::new(), |c| format!(", broker {c:.1} CPU-µs per query"));
        if let Some(c) = self.backend_cpu_us_per_query {
            cpu.push_str(&format!(", backend {c:.1}"));
        }
        let mut rows = vec![
            (
                "members",
                format!(
                    "{} on {}; counts said so {:.3} s after the last subscribe",
                    self.members, self.channel, self.settle_s
                ),
            ),
            (
                "counts queries",
                format!(
                    "{} ({} in flight): p50 {} p90 {} p99 {} p99.9 {} max {}; {:.0}/s{cpu}; \
                     {} wrong",
                    self.queries,
                    self.in_flight,
                    us(l.p50_us),
                    us(l.p90_us),
                    us(l.p99_us),
                    us(l.p999_us),
                    us(l.max_us),
                    self.queries_per_s,
                    self.wrong_counts
                ),
            ),
        ];
        if self.pings > 0 {
            rows.push(self.ping_row());
        }
        for p in &self.pages {
            let l = &p.latency;
            rows.push((
                "member pages",
                format!(
                    "limit {}: {} pages, p50 {} p99 {} max {}; {} whole walks, {} wrong",
                    p.limit,
                    p.queries,
                    us(l.p50_us),
                    us(l.p99_us),
                    us(l.max_us),
                    p.walks,
                    p.wrong_walks
                ),
            ));
        }
        rows
    }
}

fn us(v: u64) -> String {
    format!("{:.3}ms", v as f64 / 1000.0)
}

pub async fn run(ctx: &Ctx, a: &PresenceCountsArgs, report: &mut Report) -> Result<CountsStats> {
    let t = Instant::now();
    let members = open_all(ctx, 0..a.members, |_| vec![a.channel.clone()]).await;
    report.connections = conn_stats(ctx, a.members, t.elapsed());
    if members.is_empty() {
        return Err("no member could connect".into());
    }
    let subscribed = Instant::now();
    let mut stats = CountsStats {
        channel: a.channel.clone(),
        members: members.len() as u64,
        queries: a.queries,
        in_flight: a.in_flight.max(1),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = JoinSet::new();
    for (_, conn) in members {
        holders.spawn(hold(conn, stop_rx.clone(), ctx.live.clone()));
    }
    let result = async {
        let mut reader = ctx.connector.open(a.members, &[]).await?;
        let r = measure(ctx, a, &mut reader, subscribed, &mut stats, report).await;
        reader.close().await;
        r
    }
    .await;
    let _ = stop_tx.send(true);
    while holders.join_next().await.is_some() {}
    result.map(|()| stats)
}

async fn measure(
    ctx: &Ctx,
    a: &PresenceCountsArgs,
    reader: &mut Conn,
    subscribed: Instant,
    stats: &mut CountsStats,
    report: &mut Report,
) -> Result<()> {
    let timeout = ctx.drain_timeout().max(Duration::from_secs(1));
    let ch = a.channel.as_str();
    let mut id = 0u64;
    // The counts must say every member before anything is timed: a subscribe is answered once
    // the backend has its member, so this is normally the first answer.
    let settle_by = Instant::now() + Duration::from_secs_f64(a.settle_timeout.max(0.0));
    loop {
        id += 1;
        let (ans, _) = ask(reader, &query(ch, None, None, id), id, timeout).await?;
        if ans.connections == stats.members {
            stats.users = ans.users;
            stats.settle_s = subscribed.elapsed().as_secs_f64();
            break;
        }
        if Instant::now() >= settle_by {
            return Err(format!(
                "{ch}: the counts say {} connections, not {}, after {} s (members of an earlier \
                 run still leaving? use another --channel)",
                ans.connections, stats.members, a.settle_timeout
            )
            .into());
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    for _ in 0..a.warmup {
        id += 1;
        ask(reader, &query(ch, None, None, id), id, timeout).await?;
    }
    if a.pings > 0 {
        let before = ctx.sample();
        let (hist, _) =
            pipelined(reader, Probe::Ping, a.pings, stats.in_flight, id + 1, timeout).await?;
        if let (Some(b), Some(af)) = (before, ctx.sample()) {
            stats.broker_cpu_us_per_ping = Some((af.cpu_s - b.cpu_s) * 1e6 / a.pings as f64);
        }
        stats.pings = a.pings;
        stats.ping_latency = Percentiles::of(&hist);
        id += a.pings;
    }

    let window = Window::start(ctx);
    let own_before = ctx.sample_self();
    let start = Instant::now();
    let counts = Probe::Counts { channel: ch, expect: stats.members };
    let (hist, wrong) =
        pipelined(reader, counts, a.queries, stats.in_flight, id + 1, timeout).await?;
    let took = start.elapsed().as_secs_f64();
    let (broker, backend) = window.end(ctx);
    let own_after = ctx.sample_self();
    id += a.queries;
    stats.latency = Percentiles::of(&hist);
    stats.wrong_counts = wrong;
    stats.queries_per_s = a.queries as f64 / took.max(1e-9);
    let per_query = |cpu_s: f64| (a.queries > 0).then(|| cpu_s * 1e6 / a.queries as f64);
    stats.broker_cpu_us_per_query = broker.as_ref().and_then(|b| per_query(b.cpu_s));
    stats.backend_cpu_us_per_query = backend.and_then(per_query);
    report.broker = broker;
    if let (Some(b), Some(af)) = (own_before, own_after) {
        report.loadgen_cpu_s = (af.cpu_s - b.cpu_s).max(0.0);
    }

    for &limit in a.pages.iter().filter(|_| a.page_queries > 0) {
        let page = walk(reader, ch, limit, a.page_queries, &mut id, stats.members, timeout).await?;
        stats.pages.push(page);
    }
    Ok(())
}

/// What [`pipelined`] sends.
#[derive(Clone, Copy)]
enum Probe<'a> {
    /// Counts queries, whose answers must say `expect` connections.
    Counts { channel: &'a str, expect: u64 },
    /// Pings: the broker's round trip without a backend.
    Ping,
}

impl Probe<'_> {
    fn frame(self, id: u64) -> Vec<u8> {
        match self {
            Probe::Counts { channel, .. } => query(channel, None, None, id),
            Probe::Ping => format!(r#"{{"op":"ping","id":{id}}}"#).into_bytes(),
        }
    }

    /// The id `obj` answers (None: not an answer of this probe), and whether it is wrong.
    fn answer(self, obj: &[u8], f: Frame<'_>) -> Option<(Option<u64>, bool)> {
        match (self, f) {
            (Probe::Ping, Frame::Pong { id }) => Some((id, false)),
            (Probe::Ping, _) => None,
            (Probe::Counts { expect, .. }, _) => {
                presence_answer(obj).map(|a| (a.id, a.connections != expect))
            }
        }
    }
}

/// `total` probes with ids from `first_id`, at most `in_flight` unanswered; the latency
/// histogram (µs) and how many answers were wrong.
async fn pipelined(
    conn: &mut Conn,
    probe: Probe<'_>,
    total: u64,
    in_flight: usize,
    first_id: u64,
    timeout: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let mut hist = new_histogram();
    let mut wrong = 0u64;
    // (id, sent at) of the probes not yet answered, oldest first: one connection's frames
    // are answered in order.
    let mut waiting: VecDeque<(u64, Instant)> = VecDeque::with_capacity(in_flight);
    let (mut sent, mut done) = (0u64, 0u64);
    while done < total {
        let mut queued = false;
        while sent < total && waiting.len() < in_flight {
            let id = first_id + sent;
            conn.queue(&probe.frame(id)).await?;
            waiting.push_back((id, Instant::now()));
            sent += 1;
            queued = true;
        }
        if queued {
            conn.flush().await?;
        }
        let ev = tokio::time::timeout(timeout, conn.recv())
            .await
            .map_err(|_| format!("no answer in {timeout:?} ({done} of {total})"))??;
        let mut err = None;
        match ev {
            Event::Text(t) => {
                let now = Instant::now();
                for_each_raw(t, |obj, f| {
                    if let Some((id, bad)) = probe.answer(obj, f) {
                        let Some(pos) = waiting.iter().position(|(w, _)| Some(*w) == id) else {
                            return;
                        };
                        if let Some((_, at)) = waiting.remove(pos) {
                            hist.saturating_record(now.duration_since(at).as_micros() as u64);
                            done += 1;
                            wrong += u64::from(bad);
                        }
                    } else if let Frame::Error { code, .. } = f {
                        err = Some(refused(code));
                    }
                });
            }
            Event::Closed(code) => return Err(format!("reader closed ({code:?})").into()),
        }
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    Ok((hist, wrong))
}

/// `queries` pages of `limit` members, one after another, walking the channel by cursor and
/// starting over after its last page; each whole walk must list `expect` members.
async fn walk(
    conn: &mut Conn,
    channel: &str,
    limit: usize,
    queries: u64,
    id: &mut u64,
    expect: u64,
    timeout: Duration,
) -> Result<PageStats> {
    let mut hist = new_histogram();
    let mut stats = PageStats { limit, queries, ..Default::default() };
    let mut cursor: Option<String> = None;
    let mut listed = 0u64;
    for _ in 0..queries {
        *id += 1;
        let frame = query(channel, Some(limit), cursor.as_deref(), *id);
        let (ans, took) = ask(conn, &frame, *id, timeout).await?;
        hist.saturating_record(took.as_micros() as u64);
        listed += ans.members as u64;
        cursor = ans.next_cursor;
        if cursor.is_none() {
            stats.walks += 1;
            stats.wrong_walks += u64::from(listed != expect);
            listed = 0;
        }
    }
    stats.latency = Percentiles::of(&hist);
    Ok(stats)
}
