//! `connections`: open N connections, hold them idle, and measure what they cost the broker.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{conn_stats, conn_task, open_all, Ctx};
use crate::cli::ConnectionsArgs;
use crate::report::{Broker, Report};
use crate::Result;

pub async fn connections(ctx: &Ctx, args: &ConnectionsArgs) -> Result<Report> {
    let mut report = Report::new("connections", &ctx.common, serde_json::to_value(args)?);
    let before = ctx.sample();
    let t0 = Instant::now();
    let subscribe = args.subscribe;
    let conns = open_all(ctx, 0..args.connections, move |i| {
        if subscribe {
            vec![format!("idle.{i}")]
        } else {
            Vec::new()
        }
    })
    .await;
    report.connections = conn_stats(ctx, args.connections, t0.elapsed());

    // Hold them: each task reads (so pings get answered and closes get noticed) until told to
    // stop.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (i, conn) in conns {
        let (live, stop) = (ctx.live.clone(), stop_rx.clone());
        tasks.spawn(conn_task(conn, i, None, true, live, stop, Duration::ZERO));
    }
    let hold_until =
        (Instant::now() + Duration::from_secs_f64(args.hold.max(0.0))).min(ctx.deadline);
    tokio::time::sleep_until(hold_until.into()).await;
    // RSS at the end of the hold: the broker has settled, every connection is still open.
    let after = ctx.sample();
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.extend(r.ok());
    }
    report.elapsed_s = t0.elapsed().as_secs_f64();
    report.held =
        outcomes.iter().filter(|o| o.closed.is_none() && o.error.is_none()).count() as u64;
    report.slow_consumer_closes =
        ctx.live.slow_consumer_closes.load(std::sync::atomic::Ordering::Relaxed);
    report.other_closes = ctx.live.other_closes.load(std::sync::atomic::Ordering::Relaxed);
    if let (Some(b), Some(a)) = (before, after) {
        let (pids, opened) = (ctx.common.pid.clone(), Some(report.connections.opened));
        report.broker = Some(Broker::from_samples(pids, b, a, 0, opened));
    }
    Ok(report)
}
