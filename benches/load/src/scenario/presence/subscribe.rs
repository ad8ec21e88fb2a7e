//! `presence subscribe`: `--connections` connections each subscribe to `--channels` channels
//! of their own, `<prefix>.<connection>.<k>`, with up to `--window` subscribes unanswered, all
//! let go at once. Subscribes per second run from the first subscribe sent to the last answer.
//! Run it once with a prefix whose route has presence and once with one whose route has not:
//! the ratio of the two is what presence costs a subscribe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{ask, query, Window};
use crate::cli::PresenceSubscribeArgs;
use crate::client::{Conn, Event};
use crate::live::Live;
use crate::parse::{for_each_object, Frame};
use crate::report::Report;
use crate::scenario::{conn_stats, open_all, Ctx};
use crate::track::{new_histogram, Percentiles};
use crate::Result;

#[derive(Debug, Default, Serialize)]
pub struct SubscribeStats {
    pub prefix: String,
    /// Connections that connected (and subscribed).
    pub connections: u64,
    pub channels_per_connection: u64,
    pub window: usize,
    /// Subscribes answered `ok`, and refused with an error.
    pub subscribed: u64,
    pub refused: u64,
    /// First subscribe sent to last answer, seconds.
    pub duration_s: f64,
    pub subscribes_per_s: f64,
    /// Per subscribe: send to answer.
    pub latency: Percentiles,
    /// Broker CPU from the first subscribe to the last answer, per subscribe (with `--pid`).
    pub broker_cpu_us_per_subscribe: Option<f64>,
    /// The backend processes' CPU over the same window, per subscribe (with `--backend-pid`).
    pub backend_cpu_us_per_subscribe: Option<f64>,
    /// Whether the prefix's route has presence: a presence query on the first channel was
    /// answered (true) or refused `bad_request` (false); absent when it could not be asked.
    pub presence_on: Option<bool>,
}

impl SubscribeStats {
    pub fn failed(&self) -> bool {
        self.refused > 0 || self.subscribed < self.connections * self.channels_per_connection
    }

    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let l = &self.latency;
        let mut cpu = self
            .broker_cpu_us_per_subscribe
            .map_or(String::new(), |c| format!(", broker {c:.1} CPU-µs per subscribe"));
        if let Some(c) = self.backend_cpu_us_per_subscribe {
            cpu.push_str(&format!(", backend {c:.1}"));
        }
        let presence = match self.presence_on {
            Some(true) => "presence on",
            Some(false) => "presence off",
            None => "presence unknown",
        };
        vec![
            (
                "subscribes",
                format!(
                    "{} ok, {} refused ({} connections × {} channels on {}.*, {presence}, {} in \
                     flight each)",
                    self.subscribed,
                    self.refused,
                    self.connections,
                    self.channels_per_connection,
                    self.prefix,
                    self.window
                ),
            ),
            (
                "throughput",
                format!(
                    "{:.0} subscribes/s over {:.3} s{cpu}",
                    self.subscribes_per_s, self.duration_s
                ),
            ),
            (
                "subscribe time",
                format!(
                    "p50 {:.1}ms p99 {:.1}ms max {:.1}ms (send to ok, queued behind the \
                     connection's earlier ones)",
                    l.p50_us as f64 / 1000.0,
                    l.p99_us as f64 / 1000.0,
                    l.max_us as f64 / 1000.0
                ),
            ),
        ]
    }
}

/// What one connection's subscribes came to.
struct Outcome {
    conn: Conn,
    first_sent: Option<Instant>,
    last_answer: Option<Instant>,
    ok: u64,
    refused: u64,
    hist: Histogram<u64>,
    error: Option<String>,
}

pub async fn run(
    ctx: &Ctx,
    a: &PresenceSubscribeArgs,
    report: &mut Report,
) -> Result<SubscribeStats> {
    let t = Instant::now();
    let conns = open_all(ctx, 0..a.connections, |_| Vec::new()).await;
    report.connections = conn_stats(ctx, a.connections, t.elapsed());
    if conns.is_empty() {
        return Err("no connection could connect".into());
    }
    let window = if a.window == 0 { a.channels.max(1) } else { a.window };
    let mut stats = SubscribeStats {
        prefix: a.prefix.clone(),
        connections: conns.len() as u64,
        channels_per_connection: a.channels as u64,
        window,
        ..Default::default()
    };
    let (go_tx, go_rx) = watch::channel(false);
    let timeout = ctx.drain_timeout().max(Duration::from_secs(1));
    let mut tasks = JoinSet::new();
    for (idx, conn) in conns {
        let (prefix, n, go, live) = (a.prefix.clone(), a.channels, go_rx.clone(), ctx.live.clone());
        tasks.spawn(subscribe_all(conn, idx, prefix, n, window, go, timeout, live));
    }
    let window = Window::start(ctx);
    let own_before = ctx.sample_self();
    let _ = go_tx.send(true);
    let mut hist = new_histogram::<u64>();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut conns = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let Ok(mut o) = r else { continue };
        stats.subscribed += o.ok;
        stats.refused += o.refused;
        let _ = hist.add(&o.hist);
        if let Some(f) = o.first_sent {
            first = Some(first.map_or(f, |x| x.min(f)));
        }
        last = last.max(o.last_answer);
        if let Some(e) = o.error.take() {
            report.notes.push(format!("connection error: {e}"));
        }
        conns.push(o.conn);
    }
    let (broker, backend) = window.end(ctx);
    let own_after = ctx.sample_self();
    if let (Some(f), Some(l)) = (first, last) {
        stats.duration_s = l.duration_since(f).as_secs_f64();
        stats.subscribes_per_s = stats.subscribed as f64 / stats.duration_s.max(1e-9);
    }
    stats.latency = Percentiles::of(&hist);
    let ok = stats.subscribed;
    let per_subscribe = |cpu_s: f64| (ok > 0).then(|| cpu_s * 1e6 / ok as f64);
    stats.broker_cpu_us_per_subscribe = broker.as_ref().and_then(|b| per_subscribe(b.cpu_s));
    stats.backend_cpu_us_per_subscribe = backend.and_then(per_subscribe);
    report.broker = broker;
    if let (Some(b), Some(af)) = (own_before, own_after) {
        report.loadgen_cpu_s = (af.cpu_s - b.cpu_s).max(0.0);
    }
    // Which kind of route this was: presence on the first connection's first channel.
    if let Some(conn) = conns.first_mut() {
        let channel = format!("{}.0.0", a.prefix);
        stats.presence_on = match ask(conn, &query(&channel, None, None, 0), 0, timeout).await {
            Ok(_) => Some(true),
            Err(e) if e.to_string().contains("bad_request") => Some(false),
            Err(e) => {
                report.notes.push(format!("could not tell whether presence is on: {e}"));
                None
            }
        };
    }
    for mut c in conns {
        c.close().await;
    }
    Ok(stats)
}

/// Waits for `go`, then subscribes `conn` (connection `idx`) to its `n` channels with up to
/// `window` unanswered.
#[allow(clippy::too_many_arguments)]
async fn subscribe_all(
    conn: Conn,
    idx: usize,
    prefix: String,
    n: usize,
    window: usize,
    mut go: watch::Receiver<bool>,
    timeout: Duration,
    live: Arc<Live>,
) -> Outcome {
    let mut o = Outcome {
        conn,
        first_sent: None,
        last_answer: None,
        ok: 0,
        refused: 0,
        hist: new_histogram(),
        error: None,
    };
    let _ = go.wait_for(|g| *g).await;
    if let Err(e) = subscribe_loop(&mut o, idx, &prefix, n, window, timeout, &live).await {
        o.error = Some(e.to_string());
    }
    o
}

#[allow(clippy::too_many_arguments)]
async fn subscribe_loop(
    o: &mut Outcome,
    idx: usize,
    prefix: &str,
    n: usize,
    window: usize,
    timeout: Duration,
    live: &Live,
) -> Result<()> {
    // sent_at[k]: when subscribe k (id k + 1) went out.
    let mut sent_at: Vec<Instant> = Vec::with_capacity(n);
    let mut answered = 0usize;
    while answered < n {
        let mut queued = false;
        while sent_at.len() < n && sent_at.len() - answered < window {
            let k = sent_at.len();
            let frame =
                format!(r#"{{"op":"subscribe","channel":"{prefix}.{idx}.{k}","id":{}}}"#, k + 1);
            o.conn.queue(frame.as_bytes()).await?;
            let now = Instant::now();
            o.first_sent.get_or_insert(now);
            sent_at.push(now);
            queued = true;
        }
        if queued {
            o.conn.flush().await?;
        }
        let ev = tokio::time::timeout(timeout, o.conn.recv())
            .await
            .map_err(|_| format!("no subscribe answer in {timeout:?} ({answered} of {n})"))??;
        match ev {
            Event::Text(t) => {
                let now = Instant::now();
                for_each_object(t, |f| {
                    let (id, ok) = match f {
                        Frame::Ok { id } => (Some(id), true),
                        Frame::Error { id, code } => {
                            live.error(code);
                            (id, false)
                        }
                        _ => return,
                    };
                    let Some(at) = id.and_then(|id| sent_at.get(id.wrapping_sub(1) as usize))
                    else {
                        return;
                    };
                    o.hist.saturating_record(now.duration_since(*at).as_micros() as u64);
                    answered += 1;
                    if ok {
                        o.ok += 1;
                    } else {
                        o.refused += 1;
                    }
                    o.last_answer = Some(now);
                });
            }
            Event::Closed(code) => {
                return Err(format!("closed while subscribing ({code:?})").into())
            }
        }
    }
    Ok(())
}
