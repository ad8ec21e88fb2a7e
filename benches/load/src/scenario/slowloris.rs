//! `slowloris`: hold N sockets that send a request head a byte at a time and never finish it,
//! and measure how long legitimate clients take to connect and get their `welcome`.
//!
//! A slow socket the broker closes is replaced at once (unless `--no-reconnect`), as a real
//! attacker would, so the broker faces N of them for the whole measurement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Ctx;
use crate::cli::SlowlorisArgs;
use crate::client::{tcp_connect, Connector};
use crate::report::{Broker, Report, SlowlorisStats};
use crate::track::Percentiles;
use crate::Result;

/// What the slow sockets did, shared by their tasks.
#[derive(Default)]
struct Slow {
    /// Open now.
    held: AtomicU64,
    /// Connects that succeeded, replacements included.
    opened: AtomicU64,
    /// First connects that finished, either way (the set-up phase waits for all of them).
    first_tries: AtomicU64,
    connect_failed: AtomicU64,
    closed_by_broker: AtomicU64,
}

pub async fn slowloris(ctx: &Ctx, args: &SlowlorisArgs) -> Result<Report> {
    let mut report = Report::new("slowloris", &ctx.common, serde_json::to_value(args)?);
    let slow = Arc::new(Slow::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    let trickle = Duration::from_secs_f64(args.trickle.max(0.001));
    for i in 0..args.sockets {
        let (connector, slow, stop) = (ctx.connector.clone(), slow.clone(), stop_rx.clone());
        tasks.spawn(slow_socket(connector, i, trickle, !args.no_reconnect, slow, stop));
    }
    while slow.first_tries.load(Ordering::Relaxed) < args.sockets as u64
        && Instant::now() < ctx.deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup_s = t0.elapsed().as_secs_f64();
    let before = ctx.sample();
    let held_at_start = slow.held.load(Ordering::Relaxed);
    let clients_t0 = Instant::now();
    let (hist, failed, first_error) = legitimate_clients(ctx, args).await?;
    let clients_s = clients_t0.elapsed().as_secs_f64();
    let held_at_end = slow.held.load(Ordering::Relaxed);
    let after = ctx.sample();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    report.elapsed_s = t0.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        report.notes.push(format!("legitimate client failed: {e}"));
    }
    report.slowloris = Some(SlowlorisStats {
        sockets: args.sockets as u64,
        setup_s,
        held_at_start,
        held_at_end,
        opened: slow.opened.load(Ordering::Relaxed),
        connect_failed: slow.connect_failed.load(Ordering::Relaxed),
        closed_by_broker: slow.closed_by_broker.load(Ordering::Relaxed),
        clients: args.clients as u64,
        clients_failed: failed,
        connect: Percentiles::of(&hist),
    });
    report.connections.requested = args.clients as u64;
    report.connections.opened = hist.len();
    report.connections.failed = failed;
    report.connections.seconds = clients_s;
    report.connections.per_s = hist.len() as f64 / clients_s.max(1e-9);
    report.connections.source_addrs = ctx.connector.sources.len() as u64;
    if let (Some(b), Some(a)) = (before, after) {
        report.broker = Some(Broker::from_samples(ctx.common.pid.clone(), b, a, 0, None));
    }
    Ok(report)
}

/// Connects `--clients` clients one after another, each timed from its TCP connect to its
/// `welcome`, and closes each again. Returns the times (µs), the failures and the first error.
async fn legitimate_clients(
    ctx: &Ctx,
    args: &SlowlorisArgs,
) -> Result<(Histogram<u64>, u64, Option<String>)> {
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut failed, mut first_error) = (0, None);
    let connector = &ctx.connector;
    for i in 0..args.clients {
        if Instant::now() >= ctx.deadline {
            break;
        }
        let target = &connector.targets[i % connector.targets.len()];
        let src = connector.sources[i % connector.sources.len()];
        let path = target.request_path(&[]);
        let t = Instant::now();
        match tokio::time::timeout(connector.timeout, connector.open_once(target, src, &path)).await
        {
            Ok(Ok(mut conn)) => {
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                conn.close().await;
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("connect timed out".to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(args.client_interval_ms)).await;
    }
    Ok((hist, failed, first_error))
}

/// One slow socket: connect, send a request head a byte every `trickle`, never end it; when
/// the broker closes it, start over if `reconnect`.
async fn slow_socket(
    connector: Arc<Connector>,
    idx: usize,
    trickle: Duration,
    reconnect: bool,
    slow: Arc<Slow>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let stream = connect(&connector, idx).await;
        if first {
            slow.first_tries.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        match stream {
            Some(s) => {
                slow.opened.fetch_add(1, Ordering::Relaxed);
                slow.held.fetch_add(1, Ordering::Relaxed);
                let stopped = dribble(s, &connector.target.authority, trickle, &mut stop).await;
                slow.held.fetch_sub(1, Ordering::Relaxed);
                if stopped {
                    return;
                }
                slow.closed_by_broker.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                slow.connect_failed.fetch_add(1, Ordering::Relaxed);
                // Do not hammer a broker that refuses: the point is holding sockets.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !reconnect || *stop.borrow() {
            return;
        }
    }
}

async fn connect(connector: &Connector, idx: usize) -> Option<TcpStream> {
    let target = &connector.targets[idx % connector.targets.len()];
    let src = connector.sources[idx % connector.sources.len()];
    let _permit = connector.handshakes.acquire().await.ok()?;
    tokio::time::timeout(connector.timeout, tcp_connect(src, target.addr)).await.ok()?.ok()
}

/// Sends an unfinished head a byte at a time until the broker closes the socket (false) or the
/// run stops (true).
async fn dribble(
    mut s: TcpStream,
    authority: &str,
    trickle: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let head = format!("GET /ws HTTP/1.1\r\nHost: {authority}\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    // Header lines forever; never the empty line that would end the head.
    let filler = b"X-Slow: a\r\n";
    let mut next = 0;
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = stop.changed() => return true,
            // The broker ends a slow head by closing (or answering and closing).
            _ = s.read(&mut buf) => return false,
            _ = tokio::time::sleep(trickle) => {
                if s.write_all(&filler[next..next + 1]).await.is_err() {
                    return false;
                }
                next = (next + 1) % filler.len();
            }
        }
    }
}
