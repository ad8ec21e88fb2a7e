//! `rooms`: the shape of a chat service. User i holds one connection subscribed to its
//! personal channel `user.<i>` and its group `room.<i / room_size>`; it publishes to its room,
//! and every `dm_every`-th message goes to its neighbour's personal channel `user.<i+1>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{
    conn_stats, conn_task, drain, fill_common, open_all, Ctx, Outcome, PubSpec, StreamSpec,
};
use crate::cli::RoomsArgs;
use crate::client::now_ns;
use crate::live::{self, Sampler};
use crate::report::Report;
use crate::track::Totals;
use crate::Result;

pub async fn rooms(ctx: &Ctx, args: &RoomsArgs) -> Result<Report> {
    let mut report = Report::new("rooms", &ctx.common, serde_json::to_value(args)?);
    let n = args.connections.max(1);
    let g = args.room_size.max(1);
    let room_of = move |i: usize| i / g;
    let room_members = move |r: usize| r * g..((r + 1) * g).min(n);

    let t0 = Instant::now();
    let conns =
        open_all(ctx, 0..n, |i| vec![format!("user.{i}"), format!("room.{}", room_of(i))]).await;
    report.connections = conn_stats(ctx, n, t0.elapsed());
    if conns.is_empty() {
        return Err("no connection could be opened".into());
    }
    // Expected counts are computed from what was actually published and who actually
    // subscribed, so a connection that failed to open is left out on both sides.
    let present: std::collections::HashSet<usize> = conns.iter().map(|(i, _)| *i).collect();
    let room_degree = |r: usize| room_members(r).filter(|m| present.contains(m)).count() as u64;

    let per_conn_rate = args.rate / n as f64;
    let interval = if per_conn_rate > 0.0 { 1.0 / per_conn_rate } else { 0.0 };
    let (stop_tx, stop_rx) = watch::channel(false);
    let redis = crate::redis::Window::start(ctx).await;
    let before = ctx.sample();
    let own_before = ctx.sample_self();
    let sampler =
        Sampler::start(ctx.live.clone(), Duration::from_millis(100), live::bar(0, "deliveries"));
    // A moment in the future so every task starts on the same clock, staggered within one
    // interval so that all connections do not fire in the same instant.
    let start = Instant::now() + Duration::from_millis(20);
    let start_ns = now_ns() + 20_000_000;
    let until = (start + Duration::from_secs_f64(args.duration)).min(ctx.deadline);
    let pad: Arc<str> = "x".repeat(args.payload_bytes).into();
    let publishers = conns.len() as u64;
    let mut tasks = JoinSet::new();
    for (i, conn) in conns {
        let dm_to = (i + 1) % n;
        let spec = PubSpec {
            streams: vec![
                StreamSpec {
                    id: (2 * i) as u32,
                    channel: format!("room.{}", room_of(i)),
                    degree: room_degree(room_of(i)),
                },
                StreamSpec {
                    id: (2 * i + 1) as u32,
                    channel: format!("user.{dm_to}"),
                    degree: u64::from(present.contains(&dm_to)),
                },
            ],
            dm_every: args.dm_every,
            total: u64::MAX,
            rate: per_conn_rate,
            window: args.window.max(1),
            start: start + Duration::from_secs_f64(interval * (i as f64 / n as f64)),
            until,
            pad: pad.clone(),
        };
        let (live, stop) = (ctx.live.clone(), stop_rx.clone());
        tasks.spawn(conn_task(conn, i, Some(spec), true, live, stop, ctx.drain_timeout()));
    }

    drain(ctx, publishers).await;
    let after = ctx.sample();
    let own_after = ctx.sample_self();
    let redis = redis.end(ctx).await;
    let _ = stop_tx.send(true);
    let throughput = sampler.finish().await;

    let mut outcomes: Vec<Outcome> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.extend(r.ok());
    }
    // Accepted (not refused) messages per stream owner: (room stream, dm stream).
    let accepted: HashMap<usize, (u64, u64)> = outcomes
        .iter()
        .map(|o| {
            let acc = |s: usize| {
                let sent = o.sent.get(s).copied().unwrap_or(0);
                sent.saturating_sub(o.failed.get(s).copied().unwrap_or(0))
            };
            (o.idx, (acc(0), acc(1)))
        })
        .collect();
    let mut room_totals: HashMap<usize, u64> = HashMap::new();
    for (&i, &(room, _)) in &accepted {
        *room_totals.entry(room_of(i)).or_default() += room;
    }
    let mut totals = Totals::default();
    for o in &outcomes {
        let from_room = room_totals.get(&room_of(o.idx)).copied().unwrap_or(0);
        let from_dm = accepted.get(&((o.idx + n - 1) % n)).map_or(0, |a| a.1);
        totals.add(&o.rx, from_room + from_dm);
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    fill_common(
        &mut report,
        ctx,
        &totals,
        &outcomes,
        (start_ns, before, after),
        (own_before, own_after),
    );
    report.redis = redis.economy(report.published);
    report.throughput = throughput;
    report.latency_hist = Some(totals.latency_us);
    Ok(report)
}
