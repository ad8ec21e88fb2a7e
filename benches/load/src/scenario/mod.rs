//! The machinery every scenario shares: opening many connections, subscribing, the per
//! connection publish/receive loop, and waiting for deliveries to drain.

pub mod connections;
pub mod fanout;
pub mod presence;
pub mod recover;
pub mod rooms;
pub mod slowloris;

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::sleep_until;

use crate::cli::{Common, SubscribeVia};
use crate::client::{now_ns, Conn, Connector, Event, Proto};
use crate::live::{ConnectProgress, Live};
use crate::nats;
use crate::parse::{for_each_object, Frame};
use crate::procfs::{self, ProcSample};
use crate::report::{Broker, ConnStats, Report};
use crate::track::{Receiver, Totals};
use crate::Result;

/// What a scenario run has to work with.
pub struct Ctx {
    pub common: Common,
    pub connector: Arc<Connector>,
    pub live: Arc<Live>,
    /// The run stops by itself at this instant, whatever happens.
    pub deadline: Instant,
}

impl Ctx {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.common.drain_timeout.max(0.0))
    }

    /// Our own CPU and RSS.
    pub fn sample_self(&self) -> Option<ProcSample> {
        procfs::sample(std::process::id()).ok()
    }

    /// The brokers' CPU and RSS (`--pid`), summed.
    pub fn sample(&self) -> Option<ProcSample> {
        sample_pids(&self.common.pid)
    }

    /// The backend processes' CPU and RSS (`--backend-pid`), summed.
    pub fn sample_backend(&self) -> Option<ProcSample> {
        sample_pids(&self.common.backend_pid)
    }
}

/// `pids`' CPU and RSS summed; None when there are none or one cannot be read.
fn sample_pids(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    let mut total = procfs::ProcSample::default();
    for &pid in pids {
        match procfs::sample(pid) {
            Ok(s) => {
                total.cpu_s += s.cpu_s;
                total.rss_bytes += s.rss_bytes;
            }
            Err(e) => {
                eprintln!("warning: cannot read /proc/{pid}: {e}");
                return None;
            }
        }
    }
    Some(total)
}

/// One publisher stream: a connection publishing to one channel, and how many receivers each
/// of its messages should reach.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub id: u32,
    pub channel: String,
    pub degree: u64,
}

/// What a connection publishes.
#[derive(Debug, Clone)]
pub struct PubSpec {
    /// Stream 0, and optionally stream 1 for every `dm_every`-th message.
    pub streams: Vec<StreamSpec>,
    pub dm_every: u64,
    /// Messages to publish at most.
    pub total: u64,
    /// Messages per second; 0 = as fast as the window allows.
    pub rate: f64,
    pub window: usize,
    /// First publish no earlier than this.
    pub start: Instant,
    /// No publish after this.
    pub until: Instant,
    /// Padding added to each message's data.
    pub pad: Arc<str>,
}

impl PubSpec {
    /// Which stream message number `k` of this connection goes to.
    fn stream_of(&self, k: u64) -> usize {
        if self.streams.len() > 1 && self.dm_every > 0 && k % self.dm_every == self.dm_every - 1 {
            1
        } else {
            0
        }
    }
}

/// What one connection task counted.
#[derive(Debug, Default)]
pub struct Outcome {
    pub idx: usize,
    pub rx: Receiver,
    /// Per stream of the PubSpec: published, acknowledged ok, refused with an error.
    pub sent: Vec<u64>,
    pub ok: Vec<u64>,
    pub failed: Vec<u64>,
    /// Set when the server closed the connection (with the close code, if any).
    pub closed: Option<Option<u16>>,
    /// Unix nanos of the last delivery received.
    pub last_delivery_ns: u64,
    pub error: Option<String>,
}

/// Appends the bench payload `{"p":stream,"s":seq,"t":unix_nanos}` (with `"x":pad` when there
/// is padding), stamped now.
pub fn write_stamp(out: &mut Vec<u8>, stream: u32, seq: u64, pad: &str) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, r#"{{"p":{stream},"s":{seq},"t":{}"#, now_ns());
    if !pad.is_empty() {
        let _ = write!(out, r#","x":"{pad}""#);
    }
    out.push(b'}');
}

/// Writes a publish frame for the bench payload into `out`.
pub fn publish_frame(out: &mut Vec<u8>, channel: &str, stream: u32, seq: u64, id: u64, pad: &str) {
    out.clear();
    let _ = write!(out, r#"{{"op":"publish","channel":"{channel}","data":"#);
    write_stamp(out, stream, seq, pad);
    let _ = write!(out, r#","id":{id}}}"#);
}

/// Opens connections `range`, subscribing connection i to `channels(i)`. Returns them by
/// index; failures are counted in `live` and reported, not fatal.
pub async fn open_all(
    ctx: &Ctx,
    range: std::ops::Range<usize>,
    channels: impl Fn(usize) -> Vec<String>,
) -> Vec<(usize, Conn)> {
    let total = range.len();
    let progress = ConnectProgress::new(total as u64);
    let mut set = JoinSet::new();
    for idx in range {
        let chans = channels(idx);
        let connector = ctx.connector.clone();
        let via = ctx.common.subscribe_via;
        set.spawn(async move {
            let extra = if via == SubscribeVia::Query && !chans.is_empty() {
                vec![format!("channel={}", chans.join(","))]
            } else {
                Vec::new()
            };
            let mut conn = connector.open(idx, &extra).await?;
            if via == SubscribeVia::Frame && !chans.is_empty() {
                tokio::time::timeout(connector.timeout, subscribe(&mut conn, &chans))
                    .await
                    .map_err(|_| "subscribe timed out")??;
            }
            Ok::<_, crate::Error>((idx, conn))
        });
    }
    let mut conns = Vec::with_capacity(total);
    let mut first_error = None;
    let mut failed = 0u64;
    let hard_stop = sleep_until(ctx.deadline.into());
    tokio::pin!(hard_stop);
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(Ok(Ok(c))) => {
                    conns.push(c);
                    ctx.live.connected.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Err(e))) => {
                    failed += 1;
                    ctx.live.connect_failed.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e.to_string());
                }
                Some(Err(e)) => {
                    failed += 1;
                    ctx.live.connect_failed.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e.to_string());
                }
            },
            _ = &mut hard_stop => {
                eprintln!("warning: --max-time reached while connecting");
                set.abort_all();
                break;
            }
        }
        progress.set((conns.len()) as u64);
    }
    progress.done();
    if let Some(e) = first_error {
        eprintln!("warning: {failed} of {total} connections failed; first error: {e}");
    }
    conns.sort_by_key(|(i, _)| *i);
    conns
}

/// Subscribes to `channels` with `subscribe` frames and waits for every `ok` (NATS: `SUB`s
/// and a `PING`, and waits for its `PONG`).
async fn subscribe(conn: &mut Conn, channels: &[String]) -> Result<()> {
    if conn.proto() == Proto::Nats {
        let mut subs = Vec::new();
        nats::subscribe(&mut subs, channels);
        conn.queue(&subs).await?;
        conn.flush().await?;
        return conn.await_pong().await;
    }
    for (i, ch) in channels.iter().enumerate() {
        conn.queue(format!(r#"{{"op":"subscribe","channel":"{ch}","id":{}}}"#, i + 1).as_bytes())
            .await?;
    }
    conn.flush().await?;
    let mut pending = channels.len();
    while pending > 0 {
        let mut err = None;
        match conn.recv().await? {
            Event::Text(t) => {
                for_each_object(t, |f| match f {
                    Frame::Ok { id } if id >= 1 && id as usize <= channels.len() => pending -= 1,
                    Frame::Error { code, .. } => err = Some(format!("subscribe refused: {code}")),
                    _ => {}
                });
            }
            Event::Closed(code) => {
                return Err(format!("closed while subscribing ({code:?})").into())
            }
        }
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    Ok(())
}

/// One connection's life during the measured phase: publish per `spec` (if any), receive and
/// account for everything, until `stop` (receivers) or until its publishes are all answered
/// (publish-only connections).
pub async fn conn_task(
    mut conn: Conn,
    idx: usize,
    spec: Option<PubSpec>,
    receive: bool,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
    ack_timeout: Duration,
) -> Outcome {
    let nstreams = spec.as_ref().map_or(0, |s| s.streams.len());
    let mut out = Outcome {
        idx,
        sent: vec![0; nstreams],
        ok: vec![0; nstreams],
        failed: vec![0; nstreams],
        ..Default::default()
    };
    let res = conn_loop(&mut conn, &spec, receive, &live, &mut stop, ack_timeout, &mut out).await;
    if let Err(e) = res {
        out.error = Some(e.to_string());
        // A broken publisher must still count as finished, or the drain would wait for it.
        if let Some(spec) = &spec {
            announce_done(&live, spec, &out);
        }
    }
    conn.close().await;
    out
}

fn announce_done(live: &Live, spec: &PubSpec, out: &Outcome) {
    // Anything not refused counts as expected: an unanswered publish that was in fact dropped
    // shows up as lost, which is the honest reading.
    let expected: u64 = spec
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| (out.sent[i] - out.failed[i].min(out.sent[i])) * s.degree)
        .sum();
    live.expected.fetch_add(expected, Ordering::Relaxed);
    live.publishers_done.fetch_add(1, Ordering::Relaxed);
}

#[allow(clippy::too_many_arguments)]
async fn conn_loop(
    conn: &mut Conn,
    spec: &Option<PubSpec>,
    receive: bool,
    live: &Live,
    stop: &mut watch::Receiver<bool>,
    ack_timeout: Duration,
    out: &mut Outcome,
) -> Result<()> {
    let shard = out.idx;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut k: u64 = 0;
    let mut inflight: usize = 0;
    let mut seqs = vec![0u64; out.sent.len()];
    let mut pub_done = spec.is_none();
    let mut announced = spec.is_none();
    let mut last_ack = Instant::now();
    let burst = spec.as_ref().is_none_or(|s| s.rate <= 0.0);
    let interval = spec
        .as_ref()
        .filter(|s| s.rate > 0.0)
        .map_or(Duration::ZERO, |s| Duration::from_secs_f64(1.0 / s.rate));
    let mut next_at = spec.as_ref().map_or(far, |s| s.start);
    if let Some(s) = spec {
        tokio::select! {
            _ = sleep_until(s.start.into()) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    let mut msg = Vec::with_capacity(256);
    let proto = conn.proto();
    let acks = proto.acks_publishes();
    loop {
        if let (false, Some(s)) = (pub_done, spec) {
            let now = Instant::now();
            if now >= s.until || k >= s.total {
                pub_done = true;
                last_ack = now;
            } else {
                let mut queued = 0;
                while inflight < s.window && k < s.total && (burst || next_at <= now) {
                    let si = s.stream_of(k);
                    let st = &s.streams[si];
                    proto.publish(&mut msg, &st.channel, st.id, seqs[si], k + 1, &s.pad);
                    conn.queue(&msg).await?;
                    seqs[si] += 1;
                    out.sent[si] += 1;
                    k += 1;
                    inflight += 1;
                    queued += 1;
                    if !burst {
                        next_at += interval;
                    }
                }
                if queued > 0 {
                    conn.flush().await?;
                    live.published.add(shard, queued);
                    if !acks {
                        // No acknowledgement will come (core NATS): written is accepted.
                        inflight = 0;
                        live.acked.add(shard, queued);
                    }
                }
                if k >= s.total {
                    pub_done = true;
                    last_ack = Instant::now();
                }
            }
        }
        if pub_done && !announced && (inflight == 0 || last_ack.elapsed() >= ack_timeout) {
            if let Some(s) = spec {
                announce_done(live, s, out);
            }
            announced = true;
            if !receive {
                return Ok(());
            }
        }
        let wake = if !pub_done && !burst && inflight < spec.as_ref().map_or(0, |s| s.window) {
            next_at
        } else if !pub_done {
            spec.as_ref().map_or(far, |s| s.until)
        } else if !announced {
            last_ack + ack_timeout
        } else {
            far
        };
        // Bursting without acks (NATS): no answer will make room in the window, so publish on
        // after giving the other tasks (and this connection's receive side) a turn.
        let busy = burst && !acks && !pub_done;
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            ev = conn.recv() => match ev? {
                Event::Text(t) => {
                    let now = now_ns();
                    let mut delivered = 0u64;
                    let objects = proto.for_each_frame(t, |f| match f {
                        Frame::Message(st) => {
                            out.rx.record(st, now);
                            delivered += 1;
                        }
                        Frame::ForeignMessage => out.rx.foreign += 1,
                        Frame::Ok { .. } => {
                            inflight = inflight.saturating_sub(1);
                            live.acked.add(shard, 1);
                            last_ack = Instant::now();
                        }
                        Frame::Error { id, code } => {
                            live.error(code);
                            if let (Some(id), Some(s)) = (id, spec) {
                                if id >= 1 && id <= k {
                                    out.failed[s.stream_of(id - 1)] += 1;
                                    inflight = inflight.saturating_sub(1);
                                    last_ack = Instant::now();
                                }
                            }
                        }
                        Frame::Malformed => live.error("malformed_frame"),
                        Frame::Welcome | Frame::Pong { .. } | Frame::Other(_) => {}
                    });
                    if delivered > 0 {
                        out.last_delivery_ns = now;
                        live.delivered.add(shard, delivered);
                    }
                    live.frames.add(shard, 1);
                    if objects > 1 {
                        live.batched_objects.add(shard, objects as u64);
                    }
                }
                Event::Closed(code) => {
                    live.closed(code);
                    out.closed = Some(code);
                    if !announced {
                        if let Some(s) = spec {
                            announce_done(live, s, out);
                        }
                    }
                    return Ok(());
                }
            },
            _ = sleep_until(wake.into()), if !busy => {}
            _ = tokio::task::yield_now(), if busy => {}
        }
    }
}

/// Waits until every publisher is done and then until the receivers have everything they
/// should (or no delivery arrived for `drain_timeout`, or the run's deadline passed).
pub async fn drain(ctx: &Ctx, publishers: u64) {
    let live = &ctx.live;
    let tick = Duration::from_millis(5);
    while live.publishers_done.load(Ordering::Relaxed) < publishers && Instant::now() < ctx.deadline
    {
        tokio::time::sleep(tick).await;
    }
    let mut last = live.delivered.get();
    let mut last_change = Instant::now();
    loop {
        let d = live.delivered.get();
        if d >= live.expected.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if d != last {
            (last, last_change) = (d, now);
        } else if now.duration_since(last_change) >= ctx.drain_timeout() || now >= ctx.deadline {
            return;
        }
        tokio::time::sleep(tick).await;
    }
}

/// Fills the fields every scenario reports alike.
pub fn fill_common(
    report: &mut Report,
    ctx: &Ctx,
    totals: &Totals,
    outcomes: &[Outcome],
    window: (u64, Option<ProcSample>, Option<ProcSample>),
    own: (Option<ProcSample>, Option<ProcSample>),
) {
    let live = &ctx.live;
    let (start_ns, before, after) = window;
    report.set_totals(totals);
    report.published = live.published.get();
    report.acked = live.acked.get();
    report.errors = live.errors.lock().map(|m| m.clone()).unwrap_or_default();
    report.frames = live.frames.get();
    report.slow_consumer_closes = live.slow_consumer_closes.load(Ordering::Relaxed);
    report.other_closes = live.other_closes.load(Ordering::Relaxed);
    report.connection_errors = outcomes.iter().filter(|o| o.error.is_some()).count() as u64;
    if let Some(e) = outcomes.iter().find_map(|o| o.error.as_deref()) {
        report.notes.push(format!("connection error during the run: {e}"));
    }
    let last = outcomes.iter().map(|o| o.last_delivery_ns).max().unwrap_or(0);
    if last > start_ns {
        report.duration_s = (last - start_ns) as f64 / 1e9;
        report.deliveries_per_s = totals.delivered as f64 / report.duration_s;
        report.publishes_per_s = report.published as f64 / report.duration_s;
    }
    if report.frames > 0 {
        // NATS publishes are "acked" without any answer arriving.
        let answers = if ctx.connector.target.proto.acks_publishes() { report.acked } else { 0 };
        report.objects_per_frame = (totals.delivered + answers) as f64 / report.frames as f64;
    }
    if let (Some(b), Some(a)) = (before, after) {
        let pids = ctx.common.pid.clone();
        report.broker = Some(Broker::from_samples(pids, b, a, totals.delivered, None));
    }
    if let (Some(b), Some(a)) = own {
        report.loadgen_cpu_s = (a.cpu_s - b.cpu_s).max(0.0);
        report.loadgen_cpu_s_per_million_deliveries =
            (totals.delivered > 0).then(|| report.loadgen_cpu_s / (totals.delivered as f64 / 1e6));
    }
}

/// Connection counts for the report.
pub fn conn_stats(ctx: &Ctx, requested: usize, took: Duration) -> ConnStats {
    let opened = ctx.live.connected.load(Ordering::Relaxed);
    ConnStats {
        requested: requested as u64,
        opened,
        failed: ctx.live.connect_failed.load(Ordering::Relaxed),
        retried: ctx.connector.retried.load(Ordering::Relaxed),
        seconds: took.as_secs_f64(),
        per_s: opened as f64 / took.as_secs_f64().max(1e-9),
        source_addrs: ctx.connector.sources.len() as u64,
    }
}
