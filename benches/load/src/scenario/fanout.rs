//! `fanout` and `latency`: N subscribers on one channel, P publishers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{
    conn_stats, conn_task, drain, fill_common, open_all, Ctx, Outcome, PubSpec, StreamSpec,
};
use crate::cli::{FanoutArgs, LatencyArgs, PublishArgs};
use crate::client::now_ns;
use crate::http::{self, HttpClient};
use crate::live::{self, Sampler};
use crate::report::Report;
use crate::track::Totals;
use crate::Result;

/// Shape of one fan-out run, shared by both scenarios.
struct Plan<'a> {
    subscribers: usize,
    messages: u64,
    /// Messages per second over all publishers (0 = burst).
    rate: f64,
    /// Publishing stops after this long even if `messages` were not all sent.
    max_publish: Duration,
    publish: &'a PublishArgs,
}

pub async fn fanout(ctx: &Ctx, args: &FanoutArgs) -> Result<Report> {
    let max_publish = Duration::from_secs_f64(ctx.common.max_time.max(1.0));
    run(
        ctx,
        "fanout",
        serde_json::to_value(args)?,
        Plan {
            subscribers: args.subscribers,
            messages: args.messages,
            rate: args.rate,
            max_publish,
            publish: &args.publish,
        },
    )
    .await
}

pub async fn latency(ctx: &Ctx, args: &LatencyArgs) -> Result<Report> {
    let rate = args.deliveries_per_s / args.subscribers.max(1) as f64;
    let messages = (rate * args.duration).ceil() as u64;
    // A little slack over the nominal duration so the last scheduled messages still go out.
    let max_publish = Duration::from_secs_f64(args.duration * 1.5 + 1.0);
    run(
        ctx,
        "latency",
        serde_json::to_value(args)?,
        Plan { subscribers: args.subscribers, messages, rate, max_publish, publish: &args.publish },
    )
    .await
}

async fn run(ctx: &Ctx, name: &str, params: serde_json::Value, plan: Plan<'_>) -> Result<Report> {
    let mut report = Report::new(name, &ctx.common, params);
    let p = plan.publish;
    let publishers = p.publishers.max(1);
    let channel = p.channel.clone();

    let t0 = Instant::now();
    let ws_pubs = if p.via_http { 0 } else { publishers };
    let subs = {
        let ch = channel.clone();
        open_all(ctx, 0..plan.subscribers, move |_| vec![ch.clone()]).await
    };
    let subscribed = subs.len();
    let pubs = open_all(ctx, plan.subscribers..plan.subscribers + ws_pubs, |_| Vec::new()).await;
    report.connections = conn_stats(ctx, plan.subscribers + ws_pubs, t0.elapsed());
    if subscribed == 0 {
        return Err("no subscriber could connect".into());
    }
    if pubs.len() < ws_pubs {
        return Err("a publisher could not connect".into());
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let ack_timeout = ctx.drain_timeout();
    let mut receivers = JoinSet::new();
    for (idx, conn) in subs {
        receivers.spawn(conn_task(
            conn,
            idx,
            None,
            true,
            ctx.live.clone(),
            stop_rx.clone(),
            ack_timeout,
        ));
    }

    let redis = crate::redis::Window::start(ctx).await;
    let before = ctx.sample();
    let own_before = ctx.sample_self();
    let bar = live::bar(plan.messages * subscribed as u64, "deliveries");
    let sampler = Sampler::start(ctx.live.clone(), Duration::from_millis(100), bar);
    let start = Instant::now();
    let start_ns = now_ns();
    let pad: Arc<str> = "x".repeat(p.payload_bytes).into();
    let make_spec = |i: usize| PubSpec {
        streams: vec![StreamSpec {
            id: i as u32,
            channel: channel.clone(),
            degree: subscribed as u64,
        }],
        dm_every: 0,
        // Split the messages evenly; the first publishers take the remainder.
        total: plan.messages / publishers as u64
            + u64::from((i as u64) < plan.messages % publishers as u64),
        rate: plan.rate / publishers as f64,
        window: p.window.max(1),
        start,
        until: (start + plan.max_publish).min(ctx.deadline),
        pad: pad.clone(),
    };
    let mut publishers_set = JoinSet::new();
    if p.via_http {
        for i in 0..publishers {
            let (target, key, live) =
                (ctx.connector.target.clone(), p.api_key.clone(), ctx.live.clone());
            publishers_set.spawn(http_publisher(target, key, i, make_spec(i), live));
        }
    } else {
        for (i, (idx, conn)) in pubs.into_iter().enumerate() {
            let (live, stop) = (ctx.live.clone(), stop_rx.clone());
            publishers_set.spawn(conn_task(
                conn,
                idx,
                Some(make_spec(i)),
                false,
                live,
                stop,
                ack_timeout,
            ));
        }
    }

    drain(ctx, publishers as u64).await;
    let after = ctx.sample();
    let own_after = ctx.sample_self();
    let redis = redis.end(ctx).await;
    let _ = stop_tx.send(true);
    let throughput = sampler.finish().await;

    let mut outcomes: Vec<Outcome> = Vec::new();
    while let Some(r) = publishers_set.join_next().await {
        outcomes.extend(r.ok());
    }
    // Every subscriber should have received every message that was not refused.
    let expected_each: u64 = outcomes
        .iter()
        .map(|o| o.sent.iter().zip(&o.failed).map(|(s, f)| s - f.min(s)).sum::<u64>())
        .sum();
    let mut totals = Totals::default();
    while let Some(r) = receivers.join_next().await {
        if let Ok(o) = r {
            totals.add(&o.rx, expected_each);
            outcomes.push(o);
        }
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
    if ctx.live.connect_failed.load(Ordering::Relaxed) > 0 {
        report
            .notes
            .push("some connections failed; expected counts cover only those that opened".into());
    }
    Ok(report)
}

/// Publishes over `POST /api/publish`, one request at a time (the window does not apply).
async fn http_publisher(
    target: crate::client::Target,
    api_key: Option<String>,
    idx: usize,
    spec: PubSpec,
    live: Arc<crate::live::Live>,
) -> Outcome {
    let mut out =
        Outcome { idx, sent: vec![0], ok: vec![0], failed: vec![0], ..Default::default() };
    let res = async {
        let mut client = HttpClient::connect(&target, api_key.as_deref()).await?;
        tokio::time::sleep_until(spec.start.into()).await;
        let interval =
            if spec.rate > 0.0 { Duration::from_secs_f64(1.0 / spec.rate) } else { Duration::ZERO };
        let mut next_at = spec.start;
        let st = &spec.streams[0];
        let mut body = Vec::with_capacity(256);
        for seq in 0..spec.total {
            if Instant::now() >= spec.until {
                break;
            }
            if !interval.is_zero() {
                tokio::time::sleep_until(next_at.into()).await;
                next_at += interval;
            }
            super::publish_frame(&mut body, &st.channel, st.id, seq, 0, &spec.pad);
            // Reuse the WebSocket frame writer and turn it into the HTTP body shape.
            let http_body = ws_to_http_body(&body);
            out.sent[0] += 1;
            live.published.add(idx, 1);
            let resp = client.post_json("/api/publish", &http_body).await?;
            if resp.status == 200 {
                out.ok[0] += 1;
                live.acked.add(idx, 1);
            } else {
                out.failed[0] += 1;
                live.error(&http::error_code(&resp));
            }
        }
        Ok::<_, crate::Error>(())
    }
    .await;
    if let Err(e) = res {
        out.error = Some(e.to_string());
    }
    super::announce_done(&live, &spec, &out);
    out
}

/// `{"op":"publish","channel":..,"data":..,"id":0}` → `{"channel":..,"data":..}`.
fn ws_to_http_body(frame: &[u8]) -> Vec<u8> {
    const PREFIX: &[u8] = br#"{"op":"publish","#;
    const SUFFIX: &[u8] = br#","id":0}"#;
    let inner = frame
        .strip_prefix(PREFIX)
        .and_then(|f| f.strip_suffix(SUFFIX))
        // publish_frame always writes both ends; the fallback only keeps this total.
        .unwrap_or(frame);
    let mut body = Vec::with_capacity(inner.len() + 2);
    body.push(b'{');
    body.extend_from_slice(inner);
    body.push(b'}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_body_from_ws_frame() {
        let mut f = Vec::new();
        super::super::publish_frame(&mut f, "a.b", 1, 2, 0, "");
        let body = ws_to_http_body(&f);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["channel"], "a.b");
        assert_eq!(v["data"]["s"], 2);
        assert!(v.get("op").is_none());
    }
}
