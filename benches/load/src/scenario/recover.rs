//! `recover`: one publisher puts M messages on a history channel, then N clients that "missed"
//! them subscribe at once with `since` (the position before the first one) and must each get
//! `recovered: true` and exactly those M offsets, in order. Measures per-client recovery time,
//! the time until every client recovered, and the brokers' history reads from the backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{conn_stats, open_all, publish_frame, Ctx};
use crate::cli::{RecoverArgs, SubscribeVia};
use crate::client::{Conn, Connector, Event};
use crate::http::{self, HttpClient};
use crate::live::Live;
use crate::parse::{for_each_raw, position, Frame};
use crate::report::{Broker, RecoverStats, Report};
use crate::track::Percentiles;
use crate::Result;

/// The counter the broker increments for every history read that goes to its backend.
const BACKEND_READS: &str = "switchyard_history_backend_reads_total";

/// After the last client recovered, how long everyone keeps listening for extra messages (a
/// duplicate after the last missed offset would otherwise go unseen).
const GRACE: Duration = Duration::from_millis(300);

/// What every client must get: offsets `since + 1 ..= top` of `epoch`.
#[derive(Debug, Clone)]
struct Expect {
    channel: Arc<str>,
    since: u64,
    top: u64,
    epoch: Arc<str>,
}

/// How one client's recovery ended.
#[derive(Debug)]
enum Verdict {
    /// Everything arrived; time from the client's start, and the instant it completed.
    Recovered(Duration, Instant),
    NotRecovered(String),
    Wrong(String),
}

struct ClientResult {
    verdict: Verdict,
    /// Messages received in order (part of the expected ones).
    delivered: u64,
    /// Messages received after the last expected one.
    extra: u64,
}

pub async fn recover(ctx: &Ctx, args: &RecoverArgs) -> Result<Report> {
    let mut report = Report::new("recover", &ctx.common, serde_json::to_value(args)?);
    let n = args.clients;
    let live = ctx.live.clone();

    // The publisher: learn the position, publish the messages the clients will have missed.
    let mut publisher = ctx.connector.open(n, &[]).await?;
    let timeout = ctx.connector.timeout;
    let (sub_top, sub_epoch) = tokio::time::timeout(timeout, position_of(&mut publisher, args))
        .await
        .map_err(|_| "subscribe timed out")??;
    let t_pub = Instant::now();
    let acks = publish_missed(&mut publisher, args, &live, ctx.drain_timeout()).await?;
    let publish_s = t_pub.elapsed().as_secs_f64();
    publisher.close().await;
    // Recover from the subscribe's position when the epoch held; a channel without history yet
    // gets its epoch with the first publish, so recover from just before it.
    let since =
        if sub_epoch == acks.epoch && sub_top < acks.first { sub_top } else { acks.first - 1 };
    let expect = Expect {
        channel: args.channel.as_str().into(),
        since,
        top: acks.last,
        epoch: acks.epoch.as_str().into(),
    };
    let per_client = expect.top - expect.since;
    if per_client != args.missed {
        report.notes.push(format!(
            "{} messages between offsets {} and {}: someone else publishes on {}",
            per_client, expect.since, expect.top, args.channel
        ));
    }

    // The clients, held until every one is ready to go.
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let finished = Arc::new(AtomicUsize::new(0));
    let idle = ctx.drain_timeout();
    let mut tasks = JoinSet::new();
    let via = ctx.common.subscribe_via;
    let t_conn = Instant::now();
    let client = |idx| Client {
        idx,
        expect: expect.clone(),
        finished: finished.clone(),
        live: live.clone(),
        idle,
        deadline: ctx.deadline,
    };
    let spawned = match via {
        SubscribeVia::Frame => {
            let conns = open_all(ctx, 0..n, |_| Vec::new()).await;
            report.connections = conn_stats(ctx, n, t_conn.elapsed());
            let spawned = conns.len();
            for (idx, conn) in conns {
                let c = client(idx);
                tasks.spawn(c.by_frame(conn, go_rx.clone(), stop_rx.clone()));
            }
            spawned
        }
        SubscribeVia::Query => {
            if ctx.common.batch {
                report.notes.push(
                    "--batch with --subscribe-via query: objects batched with the welcome are \
                     not seen"
                        .into(),
                );
            }
            for idx in 0..n {
                let c = client(idx);
                let connector = ctx.connector.clone();
                tasks.spawn(c.by_query(connector, go_rx.clone(), stop_rx.clone()));
            }
            n
        }
    };
    if spawned == 0 {
        return Err("no client could connect".into());
    }

    let reads_before = backend_reads(ctx).await;
    let before = ctx.sample();
    let own_before = ctx.sample_self();
    let go = Instant::now();
    let _ = go_tx.send(true);
    while finished.load(Ordering::Relaxed) < spawned && Instant::now() < ctx.deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let after = ctx.sample();
    let own_after = ctx.sample_self();
    let reads_after = backend_reads(ctx).await;
    if via == SubscribeVia::Query {
        report.connections = conn_stats(ctx, n, go.elapsed());
    }
    tokio::time::sleep(GRACE).await;
    let _ = stop_tx.send(true);

    let mut stats = RecoverStats {
        channel: args.channel.clone(),
        clients: n as u64,
        missed: per_client,
        since_offset: expect.since,
        epoch: expect.epoch.to_string(),
        publish_s,
        timed_from: match via {
            SubscribeVia::Frame => "subscribe".into(),
            SubscribeVia::Query => "connect".into(),
        },
        backend_reads_before: reads_before,
        backend_reads_after: reads_after,
        ..Default::default()
    };
    let mut hist: Histogram<u64> = crate::track::new_histogram();
    let mut last_done = go;
    let mut delivered = 0u64;
    let mut results = 0u64;
    while let Some(r) = tasks.join_next().await {
        let Ok(r) = r else { continue };
        results += 1;
        delivered += r.delivered;
        let mut reason = None;
        match r.verdict {
            Verdict::Recovered(took, done) if r.extra == 0 => {
                stats.recovered += 1;
                hist.saturating_record(took.as_micros() as u64);
                last_done = last_done.max(done);
            }
            Verdict::Recovered(..) => {
                stats.wrong += 1;
                reason = Some("extra messages".to_string());
            }
            Verdict::NotRecovered(why) => {
                stats.not_recovered += 1;
                reason = Some(why);
            }
            Verdict::Wrong(why) => {
                stats.wrong += 1;
                reason = Some(why);
            }
        }
        if let Some(why) = reason {
            *stats.reasons.entry(why).or_default() += 1;
        }
    }
    // Clients that never connected (frame mode) did not recover either.
    let missing = (n as u64).saturating_sub(results);
    if missing > 0 {
        stats.not_recovered += missing;
        *stats.reasons.entry("not connected".into()).or_default() += missing;
    }
    stats.recovery = Percentiles::of(&hist);
    if stats.recovered > 0 {
        stats.all_recovered_s = last_done.duration_since(go).as_secs_f64();
    }

    report.elapsed_s = go.elapsed().as_secs_f64();
    report.published = live.published.get();
    report.acked = live.acked.get();
    report.errors = live.errors.lock().map(|m| m.clone()).unwrap_or_default();
    report.expected = n as u64 * per_client;
    report.delivered = delivered;
    report.lost = report.expected.saturating_sub(delivered);
    report.frames = live.frames.get();
    report.slow_consumer_closes = live.slow_consumer_closes.load(Ordering::Relaxed);
    report.other_closes = live.other_closes.load(Ordering::Relaxed);
    report.duration_s = stats.all_recovered_s;
    if report.duration_s > 0.0 {
        report.deliveries_per_s = delivered as f64 / report.duration_s;
    }
    if let (Some(b), Some(a)) = (before, after) {
        report.broker = Some(Broker::from_samples(ctx.common.pid.clone(), b, a, delivered, None));
    }
    if let (Some(b), Some(a)) = (own_before, own_after) {
        report.loadgen_cpu_s = (a.cpu_s - b.cpu_s).max(0.0);
        report.loadgen_cpu_s_per_million_deliveries =
            (delivered > 0).then(|| report.loadgen_cpu_s / (delivered as f64 / 1e6));
    }
    if reads_before.is_none() || reads_after.is_none() {
        report.notes.push(format!("could not read {BACKEND_READS} from every broker"));
    }
    report.recover = Some(stats);
    Ok(report)
}

/// Subscribes the publisher to learn the channel's position (top offset, epoch), then
/// unsubscribes so that it does not receive its own messages.
async fn position_of(conn: &mut Conn, args: &RecoverArgs) -> Result<(u64, String)> {
    let ch = &args.channel;
    conn.queue(format!(r#"{{"op":"subscribe","channel":"{ch}","id":1}}"#).as_bytes()).await?;
    conn.flush().await?;
    let (top, epoch) = loop {
        let mut answer: Option<Result<(u64, String)>> = None;
        match conn.recv().await? {
            Event::Text(t) => {
                for_each_raw(t, |obj, f| match f {
                    Frame::Ok { id: 1 } => {
                        let p = position(obj);
                        answer = Some(match (p.offset, p.epoch) {
                            (Some(o), Some(e)) => Ok((o, e.to_string())),
                            _ => {
                                Err(format!("{ch} keeps no history: its route needs history_size")
                                    .into())
                            }
                        });
                    }
                    Frame::Error { code, .. } => {
                        answer = Some(Err(format!("subscribe to {ch} refused: {code}").into()))
                    }
                    _ => {}
                });
            }
            Event::Closed(code) => {
                return Err(format!("closed while subscribing ({code:?})").into())
            }
        }
        if let Some(a) = answer {
            break a?;
        }
    };
    conn.queue(format!(r#"{{"op":"unsubscribe","channel":"{ch}","id":2}}"#).as_bytes()).await?;
    conn.flush().await?;
    loop {
        let mut done = false;
        match conn.recv().await? {
            Event::Text(t) => {
                for_each_raw(t, |_, f| done |= matches!(f, Frame::Ok { id: 2 }));
            }
            Event::Closed(code) => {
                return Err(format!("closed while unsubscribing ({code:?})").into())
            }
        }
        if done {
            return Ok((top, epoch));
        }
    }
}

/// Where the published messages landed.
struct Acks {
    first: u64,
    last: u64,
    epoch: String,
}

/// Publishes `args.missed` messages with up to `args.window` unanswered, and waits for every
/// ack. Any refusal, or no ack for `ack_timeout`, fails the run: the clients would have nothing
/// definite to recover.
async fn publish_missed(
    conn: &mut Conn,
    args: &RecoverArgs,
    live: &Live,
    ack_timeout: Duration,
) -> Result<Acks> {
    let m = args.missed;
    if m == 0 {
        return Err("--missed must be at least 1".into());
    }
    let window = args.window.max(1) as u64;
    let (mut sent, mut acked) = (0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut epoch: Option<String> = None;
    let mut msg = Vec::with_capacity(128);
    while acked < m {
        let mut queued = 0;
        while sent < m && sent - acked < window {
            publish_frame(&mut msg, &args.channel, 0, sent, sent + 1, "");
            conn.queue(&msg).await?;
            sent += 1;
            queued += 1;
        }
        if queued > 0 {
            conn.flush().await?;
            live.published.add(0, queued);
        }
        let ev = tokio::time::timeout(ack_timeout, conn.recv())
            .await
            .map_err(|_| format!("no publish ack for {ack_timeout:?} ({acked} of {m} acked)"))?;
        let mut err: Option<String> = None;
        match ev? {
            Event::Text(t) => {
                for_each_raw(t, |obj, f| match f {
                    Frame::Ok { id } if (1..=sent).contains(&id) => {
                        acked += 1;
                        live.acked.add(0, 1);
                        let p = position(obj);
                        match (p.offset, p.epoch) {
                            (Some(o), Some(e)) => {
                                first = first.min(o);
                                last = last.max(o);
                                match &epoch {
                                    None => epoch = Some(e.to_string()),
                                    Some(known) if known != e => {
                                        err = Some(format!("the epoch changed: {known} -> {e}"))
                                    }
                                    Some(_) => {}
                                }
                            }
                            _ => err = Some("a publish ack without offset and epoch".into()),
                        }
                    }
                    Frame::Error { code, .. } => {
                        live.error(code);
                        let hint = if code == "rate_limited" {
                            " (--missed is over the broker's limits.publish_burst)"
                        } else {
                            ""
                        };
                        err = Some(format!("publish refused: {code}{hint}"));
                    }
                    _ => {}
                });
            }
            Event::Closed(code) => return Err(format!("publisher closed ({code:?})").into()),
        }
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    let epoch = epoch.ok_or("no publish ack")?;
    Ok(Acks { first, last, epoch })
}

/// One recovering client.
struct Client {
    idx: usize,
    expect: Expect,
    finished: Arc<AtomicUsize>,
    live: Arc<Live>,
    /// No frame for this long before everything arrived: not recovered.
    idle: Duration,
    deadline: Instant,
}

impl Client {
    /// On an open connection: subscribe with `since` once let go; timed from the send.
    async fn by_frame(
        self,
        mut conn: Conn,
        mut go: watch::Receiver<bool>,
        stop: watch::Receiver<bool>,
    ) -> ClientResult {
        let _ = go.wait_for(|g| *g).await;
        let e = &self.expect;
        let frame = format!(
            r#"{{"op":"subscribe","channel":"{}","since":{{"offset":{},"epoch":"{}"}},"id":1}}"#,
            e.channel, e.since, e.epoch
        );
        let start = Instant::now();
        let sent = async {
            conn.queue(frame.as_bytes()).await?;
            conn.flush().await
        }
        .await;
        let r = match sent {
            Ok(()) => self.replay(&mut conn, start, stop).await,
            Err(e) => {
                self.finished.fetch_add(1, Ordering::Relaxed);
                ClientResult {
                    verdict: Verdict::NotRecovered(format!("send failed: {e}")),
                    delivered: 0,
                    extra: 0,
                }
            }
        };
        conn.close().await;
        r
    }

    /// Connect with `?channel=&since=` once let go; timed from the start of the connection
    /// attempt (which may wait for a handshake slot, see --connect-concurrency).
    async fn by_query(
        self,
        connector: Arc<Connector>,
        mut go: watch::Receiver<bool>,
        stop: watch::Receiver<bool>,
    ) -> ClientResult {
        let _ = go.wait_for(|g| *g).await;
        let e = &self.expect;
        let extra = [
            format!("channel={}", e.channel),
            format!("since={}:{}:{}", e.channel, e.since, e.epoch),
        ];
        let start = Instant::now();
        match connector.open(self.idx, &extra).await {
            Ok(mut conn) => {
                self.live.connected.fetch_add(1, Ordering::Relaxed);
                let r = self.replay(&mut conn, start, stop).await;
                conn.close().await;
                r
            }
            Err(e) => {
                self.live.connect_failed.fetch_add(1, Ordering::Relaxed);
                self.finished.fetch_add(1, Ordering::Relaxed);
                ClientResult {
                    verdict: Verdict::NotRecovered(short(&format!("connect failed: {e}"))),
                    delivered: 0,
                    extra: 0,
                }
            }
        }
    }

    /// Reads the `ok` and the replay; once the verdict is known, counts it as finished and
    /// keeps reading (counting extra messages) until `stop`.
    async fn replay(
        &self,
        conn: &mut Conn,
        start: Instant,
        mut stop: watch::Receiver<bool>,
    ) -> ClientResult {
        let e = &self.expect;
        let mut got_ok = false;
        let mut next = e.since + 1;
        let mut verdict: Option<Verdict> = None;
        let mut extra = 0u64;
        let mut delivered = 0u64;
        loop {
            let wait = if verdict.is_some() {
                // Decided: only listen for extras until told to stop.
                self.deadline.saturating_duration_since(Instant::now())
            } else {
                self.idle.min(self.deadline.saturating_duration_since(Instant::now()))
            };
            let ev = tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = tokio::time::timeout(wait, conn.recv()) => r,
            };
            let decided_before = verdict.is_some();
            let ended = matches!(ev, Ok(Ok(Event::Closed(_))) | Ok(Err(_)));
            match ev {
                Err(_) if decided_before => break,
                Err(_) => {
                    let why = if got_ok { "replay stalled" } else { "no answer" };
                    verdict = Some(Verdict::NotRecovered(why.into()));
                }
                Ok(Err(err)) => {
                    if !decided_before {
                        verdict = Some(Verdict::NotRecovered(short(&format!("{err}"))));
                    }
                }
                Ok(Ok(Event::Closed(code))) => {
                    self.live.closed(code);
                    if !decided_before {
                        verdict = Some(Verdict::NotRecovered(format!("closed ({code:?})")));
                    }
                }
                Ok(Ok(Event::Text(t))) => {
                    self.live.frames.add(self.idx, 1);
                    let mut n = 0u64;
                    for_each_raw(t, |obj, f| {
                        if verdict.is_some() {
                            if matches!(f, Frame::Message(_) | Frame::ForeignMessage) {
                                extra += 1;
                            }
                            return;
                        }
                        match f {
                            Frame::Ok { .. } | Frame::Other("ok") if !got_ok => {
                                match position(obj).recovered {
                                    Some(true) => got_ok = true,
                                    Some(false) => {
                                        verdict =
                                            Some(Verdict::NotRecovered("recovered: false".into()))
                                    }
                                    None => {
                                        verdict =
                                            Some(Verdict::Wrong("ok without recovered".into()))
                                    }
                                }
                            }
                            Frame::Error { code, .. } => {
                                self.live.error(code);
                                verdict = Some(Verdict::NotRecovered(format!("error {code}")));
                            }
                            Frame::Message(_) | Frame::ForeignMessage => {
                                let p = position(obj);
                                verdict = if !got_ok {
                                    Some(Verdict::Wrong("message before the ok".into()))
                                } else if p.epoch != Some(&*e.epoch) {
                                    Some(Verdict::Wrong("wrong epoch".into()))
                                } else {
                                    match p.offset {
                                        Some(o) if o == next => {
                                            next += 1;
                                            n += 1;
                                            None
                                        }
                                        Some(o) if o < next => {
                                            Some(Verdict::Wrong("duplicate or reordered".into()))
                                        }
                                        Some(_) => Some(Verdict::Wrong("gap".into())),
                                        None => {
                                            Some(Verdict::Wrong("message without offset".into()))
                                        }
                                    }
                                };
                            }
                            _ => {}
                        }
                        if verdict.is_none() && got_ok && next > e.top {
                            verdict = Some(Verdict::Recovered(start.elapsed(), Instant::now()));
                        }
                    });
                    delivered += n;
                    self.live.delivered.add(self.idx, n);
                }
            }
            if verdict.is_some() && !decided_before {
                self.finished.fetch_add(1, Ordering::Relaxed);
            }
            if ended {
                break;
            }
        }
        let verdict = verdict.unwrap_or_else(|| {
            self.finished.fetch_add(1, Ordering::Relaxed);
            Verdict::NotRecovered("stopped".into())
        });
        ClientResult { verdict, delivered, extra }
    }
}

/// Error texts name the connection; keep reasons few and groupable.
fn short(s: &str) -> String {
    s.split(": ").last().unwrap_or(s).to_string()
}

/// `switchyard_history_backend_reads_total` summed over every distinct broker of `--url`; `None`
/// when one cannot be read.
async fn backend_reads(ctx: &Ctx) -> Option<f64> {
    let mut seen = Vec::new();
    let mut sum = 0.0;
    for t in &ctx.connector.targets {
        if seen.contains(&t.addr) {
            continue;
        }
        seen.push(t.addr);
        let res = tokio::time::timeout(Duration::from_secs(5), async {
            let mut c = HttpClient::connect(t, None).await?;
            let r = c.get("/metrics").await?;
            if r.status != 200 {
                return Err(format!("GET /metrics answered {}", r.status).into());
            }
            let text = String::from_utf8_lossy(&r.body).into_owned();
            // A counter never incremented may not be exported yet: that is zero reads.
            Ok::<_, crate::Error>(http::metric_sum(&text, BACKEND_READS).unwrap_or(0.0))
        })
        .await;
        match res {
            Ok(Ok(v)) => sum += v,
            Ok(Err(e)) => {
                eprintln!("warning: {}: {e}", t.addr);
                return None;
            }
            Err(_) => {
                eprintln!("warning: {}: GET /metrics timed out", t.addr);
                return None;
            }
        }
    }
    Some(sum)
}
