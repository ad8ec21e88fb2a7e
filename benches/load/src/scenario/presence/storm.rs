//! `presence join-storm`: `--watchers` connections subscribe to one `join_leave` channel and
//! wait until their own joins have been told (`--quiet-ms` without a diff); then `--joins`
//! connections join it (connect and subscribe) as fast as `--connect-concurrency` allows.
//! Each watcher counts the `presence_diff` objects and bytes it gets until it has heard of
//! every joined member; the clock runs from the storm's start (the first joiner's connect) to
//! the diff that named a watcher's last new member. The joiners read (and count) the diffs
//! they get meanwhile too: they are subscribers of the channel like the watchers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{median, Window};
use crate::cli::{PresenceStormArgs, SubscribeVia};
use crate::client::{Conn, Connector, Event};
use crate::live::Live;
use crate::parse::{diff_members, for_each_raw, Frame};
use crate::report::Report;
use crate::scenario::{conn_stats, open_all, Ctx};
use crate::Result;

/// How often the storm's end is looked for.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Default, Serialize)]
pub struct StormStats {
    pub channel: String,
    /// Watchers that connected and subscribed.
    pub watchers: u64,
    /// Joiners asked for, those that subscribed, and those that could not.
    pub joins: u64,
    pub joined: u64,
    pub join_failed: u64,
    /// From the storm's start to the last joiner's subscribe answer, seconds.
    pub joining_s: f64,
    /// Diffs the watchers got of their own joins before the storm (not counted below).
    pub before_storm_diffs: u64,
    /// Watchers that heard of every joined member.
    pub complete: u64,
    pub per_watcher: Vec<WatcherStats>,
    /// Medians over the watchers.
    pub diffs_median: f64,
    pub bytes_median: f64,
    pub last_join_s_median: f64,
    pub diffs_per_s_median: f64,
    pub members_per_diff_median: f64,
    /// What each joiner got from the storm's other joins, on average.
    pub joiner_diffs_mean: f64,
    pub joiner_bytes_mean: f64,
    /// Broker CPU from the storm's start until every watcher had heard of every member, and
    /// the backend processes' (with `--backend-pid`).
    pub broker_cpu_s: Option<f64>,
    pub backend_cpu_s: Option<f64>,
}

/// What one watcher got during the storm.
#[derive(Debug, Default, Serialize)]
pub struct WatcherStats {
    /// `presence_diff` objects (one per WebSocket frame without `--batch`) and their bytes.
    pub diffs: u64,
    pub bytes: u64,
    /// Distinct members named as joined, and members named as left.
    pub joins_seen: u64,
    pub leaves_seen: u64,
    /// From the storm's start to the diff that named the last new member, seconds.
    pub last_join_s: f64,
    pub diffs_per_s: f64,
}

impl StormStats {
    pub fn failed(&self) -> bool {
        self.complete < self.watchers
    }

    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mut cpu = self.broker_cpu_s.map_or(String::new(), |c| format!("; broker CPU {c:.2} s"));
        if let Some(c) = self.backend_cpu_s {
            cpu.push_str(&format!(", backend {c:.2} s"));
        }
        vec![
            (
                "storm",
                format!(
                    "{} of {} joined {} in {:.3} s ({} failed){cpu}",
                    self.joined, self.joins, self.channel, self.joining_s, self.join_failed
                ),
            ),
            (
                "watchers",
                format!(
                    "{} of {} heard of every member ({} diffs of their own joins before)",
                    self.complete, self.watchers, self.before_storm_diffs
                ),
            ),
            (
                "per watcher",
                format!(
                    "median {:.0} diffs, {:.0} bytes, last join heard {:.3} s after the start: \
                     {:.1} diffs/s, {:.0} members per diff",
                    self.diffs_median,
                    self.bytes_median,
                    self.last_join_s_median,
                    self.diffs_per_s_median,
                    self.members_per_diff_median
                ),
            ),
            (
                "per joiner",
                format!(
                    "mean {:.1} diffs, {:.0} bytes (the other joins, as a subscriber)",
                    self.joiner_diffs_mean, self.joiner_bytes_mean
                ),
            ),
        ]
    }
}

/// One watcher's counts, shared with the task that decides when the storm is over.
#[derive(Default)]
struct Board {
    diffs: AtomicU64,
    bytes: AtomicU64,
    joins_seen: AtomicU64,
    leaves_seen: AtomicU64,
    /// Nanoseconds after `base` of the last diff naming a new member, and of the last diff.
    last_join_ns: AtomicU64,
    last_diff_ns: AtomicU64,
}

/// Shared by every task of the run.
struct Storm {
    base: Instant,
    channel: String,
    /// Set when the storm starts: diffs before it are the watchers' own joins.
    armed: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    /// Nanoseconds after `base` of the last diff any watcher got before the storm.
    before_last_ns: AtomicU64,
    before_diffs: AtomicU64,
    joined: AtomicU64,
    join_failed: AtomicU64,
    last_joined_ns: AtomicU64,
    live: Arc<Live>,
    timeout: Duration,
}

impl Storm {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

pub async fn run(ctx: &Ctx, a: &PresenceStormArgs, report: &mut Report) -> Result<StormStats> {
    let t = Instant::now();
    let watchers = open_all(ctx, 0..a.watchers, |_| vec![a.channel.clone()]).await;
    if watchers.is_empty() {
        return Err("no watcher could connect".into());
    }
    let (armed_tx, armed) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let storm = Arc::new(Storm {
        base: Instant::now(),
        channel: a.channel.clone(),
        armed,
        stop,
        before_last_ns: AtomicU64::new(0),
        before_diffs: AtomicU64::new(0),
        joined: AtomicU64::new(0),
        join_failed: AtomicU64::new(0),
        last_joined_ns: AtomicU64::new(0),
        live: ctx.live.clone(),
        timeout: ctx.connector.timeout,
    });
    let boards: Vec<Arc<Board>> = watchers.iter().map(|_| Arc::default()).collect();
    let mut watching = JoinSet::new();
    for ((_, conn), board) in watchers.into_iter().zip(&boards) {
        watching.spawn(watch_diffs(conn, board.clone(), storm.clone()));
    }

    // Quiet first: the watchers' own joins are told within a window or two.
    let quiet = Duration::from_millis(a.quiet_ms);
    loop {
        let last = Duration::from_nanos(storm.before_last_ns.load(Ordering::Relaxed));
        if storm.base.elapsed().saturating_sub(last) >= quiet {
            break;
        }
        if Instant::now() >= ctx.deadline {
            return Err("--max-time reached before the watchers' diffs went quiet".into());
        }
        tokio::time::sleep(TICK).await;
    }

    let window = Window::start(ctx);
    let start = Instant::now();
    let start_ns = storm.now_ns();
    let _ = armed_tx.send(true);
    let mut joining = JoinSet::new();
    for idx in a.watchers..a.watchers + a.joins {
        joining.spawn(join(ctx.connector.clone(), idx, ctx.common.subscribe_via, storm.clone()));
    }
    wait_until_heard(ctx, a, &storm, &boards).await;
    let (broker, backend) = window.end(ctx);
    report.connections = conn_stats(ctx, a.watchers + a.joins, t.elapsed());
    let _ = stop_tx.send(true);
    while watching.join_next().await.is_some() {}
    let (mut joiner_diffs, mut joiner_bytes, mut joiners) = (0u64, 0u64, 0u64);
    while let Some(r) = joining.join_next().await {
        if let Ok(Some((d, b))) = r {
            joiner_diffs += d;
            joiner_bytes += b;
            joiners += 1;
        }
    }

    let joined = storm.joined.load(Ordering::Relaxed);
    let mut stats = StormStats {
        channel: a.channel.clone(),
        watchers: boards.len() as u64,
        joins: a.joins as u64,
        joined,
        join_failed: storm.join_failed.load(Ordering::Relaxed),
        joining_s: secs(storm.last_joined_ns.load(Ordering::Relaxed).saturating_sub(start_ns)),
        before_storm_diffs: storm.before_diffs.load(Ordering::Relaxed),
        joiner_diffs_mean: joiner_diffs as f64 / joiners.max(1) as f64,
        joiner_bytes_mean: joiner_bytes as f64 / joiners.max(1) as f64,
        ..Default::default()
    };
    for b in &boards {
        let last_join_s = secs(b.last_join_ns.load(Ordering::Relaxed).saturating_sub(start_ns));
        let diffs = b.diffs.load(Ordering::Relaxed);
        let joins_seen = b.joins_seen.load(Ordering::Relaxed);
        stats.complete += u64::from(joins_seen >= joined);
        stats.per_watcher.push(WatcherStats {
            diffs,
            bytes: b.bytes.load(Ordering::Relaxed),
            joins_seen,
            leaves_seen: b.leaves_seen.load(Ordering::Relaxed),
            last_join_s,
            diffs_per_s: if last_join_s > 0.0 { diffs as f64 / last_join_s } else { 0.0 },
        });
    }
    let med = |f: fn(&WatcherStats) -> f64| {
        median(&mut stats.per_watcher.iter().map(f).collect::<Vec<_>>())
    };
    stats.diffs_median = med(|w| w.diffs as f64);
    stats.bytes_median = med(|w| w.bytes as f64);
    stats.last_join_s_median = med(|w| w.last_join_s);
    stats.diffs_per_s_median = med(|w| w.diffs_per_s);
    stats.members_per_diff_median = med(|w| w.joins_seen as f64 / w.diffs.max(1) as f64);
    stats.broker_cpu_s = broker.as_ref().map(|b| b.cpu_s);
    stats.backend_cpu_s = backend;
    report.broker = broker;
    report.duration_s = start.elapsed().as_secs_f64();
    Ok(stats)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Until every watcher heard of every joiner that subscribed (once all have tried), or no
/// watcher got a diff for `--drain-timeout` after that, or the run's deadline.
async fn wait_until_heard(ctx: &Ctx, a: &PresenceStormArgs, storm: &Storm, boards: &[Arc<Board>]) {
    let joins = a.joins as u64;
    loop {
        tokio::time::sleep(TICK).await;
        let joined = storm.joined.load(Ordering::Relaxed);
        let tried = joined + storm.join_failed.load(Ordering::Relaxed) >= joins;
        if tried && boards.iter().all(|b| b.joins_seen.load(Ordering::Relaxed) >= joined) {
            return;
        }
        let last_diff = boards.iter().map(|b| b.last_diff_ns.load(Ordering::Relaxed)).max();
        let last = last_diff.unwrap_or(0).max(storm.last_joined_ns.load(Ordering::Relaxed));
        let idle = storm.now_ns().saturating_sub(last);
        if tried && Duration::from_nanos(idle) >= ctx.drain_timeout() {
            return;
        }
        if Instant::now() >= ctx.deadline {
            eprintln!("warning: --max-time reached during the join storm");
            return;
        }
    }
}

/// A watcher: counts the diffs it gets once the storm started, and the distinct members they
/// name as joined.
async fn watch_diffs(mut conn: Conn, board: Arc<Board>, storm: Arc<Storm>) {
    let mut seen: HashSet<Box<str>> = HashSet::new();
    let mut stop = storm.stop.clone();
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            ev = conn.recv() => ev,
        };
        match ev {
            Ok(Event::Text(t)) => {
                let armed = *storm.armed.borrow();
                for_each_raw(t, |obj, _| {
                    let Some((joins, left)) = diff_members(obj) else { return };
                    let now = storm.now_ns();
                    if !armed {
                        storm.before_last_ns.fetch_max(now, Ordering::Relaxed);
                        storm.before_diffs.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    board.diffs.fetch_add(1, Ordering::Relaxed);
                    board.bytes.fetch_add(obj.len() as u64, Ordering::Relaxed);
                    board.leaves_seen.fetch_add(left as u64, Ordering::Relaxed);
                    board.last_diff_ns.store(now, Ordering::Relaxed);
                    let known = seen.len();
                    seen.extend(joins.into_iter().map(Box::from));
                    if seen.len() > known {
                        board.joins_seen.store(seen.len() as u64, Ordering::Relaxed);
                        board.last_join_ns.store(now, Ordering::Relaxed);
                    }
                });
            }
            Ok(Event::Closed(code)) => {
                storm.live.closed(code);
                return;
            }
            Err(_) => return,
        }
    }
    conn.close().await;
}

/// A joiner: connects, subscribes (by frame or on the URL), then reads until the end, counting
/// the diffs it gets. None when it could not join.
async fn join(
    connector: Arc<Connector>,
    idx: usize,
    via: SubscribeVia,
    storm: Arc<Storm>,
) -> Option<(u64, u64)> {
    let extra = match via {
        SubscribeVia::Query => vec![format!("channel={}", storm.channel)],
        SubscribeVia::Frame => Vec::new(),
    };
    let mut conn = match connector.open(idx, &extra).await {
        Ok(c) => c,
        Err(e) => {
            storm.live.connect_failed.fetch_add(1, Ordering::Relaxed);
            storm.join_failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("warning: joiner {idx}: {e}");
            return None;
        }
    };
    storm.live.connected.fetch_add(1, Ordering::Relaxed);
    let mut counts = (0u64, 0u64);
    let subscribed = match via {
        SubscribeVia::Query => Ok(()),
        SubscribeVia::Frame => subscribe(&mut conn, &storm, &mut counts).await,
    };
    if let Err(e) = subscribed {
        storm.join_failed.fetch_add(1, Ordering::Relaxed);
        eprintln!("warning: joiner {idx}: {e}");
        conn.close().await;
        return None;
    }
    storm.joined.fetch_add(1, Ordering::Relaxed);
    storm.last_joined_ns.fetch_max(storm.now_ns(), Ordering::Relaxed);
    let mut stop = storm.stop.clone();
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            ev = conn.recv() => ev,
        };
        match ev {
            Ok(Event::Text(t)) => count_diffs(t, &mut counts),
            Ok(Event::Closed(code)) => {
                storm.live.closed(code);
                return Some(counts);
            }
            Err(_) => return Some(counts),
        }
    }
    conn.close().await;
    Some(counts)
}

/// Sends the joiner's `subscribe` and waits for its `ok` (diffs may come first).
async fn subscribe(conn: &mut Conn, storm: &Storm, counts: &mut (u64, u64)) -> Result<()> {
    let frame = format!(r#"{{"op":"subscribe","channel":"{}","id":1}}"#, storm.channel);
    conn.queue(frame.as_bytes()).await?;
    conn.flush().await?;
    let until = Instant::now() + storm.timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, conn.recv())
            .await
            .map_err(|_| "subscribe timed out".to_string())??;
        let mut answer: Option<std::result::Result<(), String>> = None;
        match ev {
            Event::Text(t) => {
                count_diffs(t, counts);
                for_each_raw(t, |_, f| match f {
                    Frame::Ok { id: 1 } => answer = Some(Ok(())),
                    Frame::Error { code, .. } => {
                        storm.live.error(code);
                        answer = Some(Err(format!("subscribe refused: {code}")));
                    }
                    _ => {}
                });
            }
            Event::Closed(code) => {
                return Err(format!("closed while subscribing ({code:?})").into())
            }
        }
        if let Some(a) = answer {
            return a.map_err(Into::into);
        }
    }
}

/// Counts the diffs in a joiner's frame (by their op alone: 5,000 joiners must cost the load
/// generator little).
fn count_diffs(t: &[u8], counts: &mut (u64, u64)) {
    for_each_raw(t, |obj, f| {
        if f == Frame::Other("presence_diff") {
            counts.0 += 1;
            counts.1 += obj.len() as u64;
        }
    });
}
