//! `presence`: the figures presence is judged by, in three modes.
//! - [`counts`]: N members on one channel; how long a counts query takes (and a page of
//!   members), one reader asking one query after another;
//! - [`subscribe`]: subscribes per second of C connections on S channels each, run once on a
//!   prefix whose route has presence and once on one without, to compare the two;
//! - [`storm`]: what J connections joining a `join_leave` channel cost the channel's watchers
//!   in `presence_diff` frames and bytes, and the brokers in CPU.

mod counts;
mod storm;
mod subscribe;

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::Ctx;
use crate::cli::{PresenceArgs, PresenceMode};
use crate::client::{Conn, Event};
use crate::live::Live;
use crate::parse::{for_each_raw, presence_answer, Frame};
use crate::procfs::ProcSample;
use crate::report::{Broker, Report};
use crate::Result;

pub use counts::CountsStats;
pub use storm::StormStats;
pub use subscribe::SubscribeStats;

/// What a `presence` run measured, by mode.
#[derive(Debug, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum PresenceStats {
    Counts(CountsStats),
    Subscribe(SubscribeStats),
    JoinStorm(StormStats),
}

impl PresenceStats {
    /// Whether the run failed its own checks (wrong counts, refused subscribes, joins a watcher
    /// never heard of): the exit status is then 2, as for lost messages.
    pub fn failed(&self) -> bool {
        match self {
            PresenceStats::Counts(c) => c.failed(),
            PresenceStats::Subscribe(s) => s.failed(),
            PresenceStats::JoinStorm(s) => s.failed(),
        }
    }

    /// The table rows of this mode.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        match self {
            PresenceStats::Counts(c) => c.rows(),
            PresenceStats::Subscribe(s) => s.rows(),
            PresenceStats::JoinStorm(s) => s.rows(),
        }
    }
}

pub async fn presence(ctx: &Ctx, args: &PresenceArgs) -> Result<Report> {
    let mut report = Report::new("presence", &ctx.common, serde_json::to_value(args)?);
    let started = Instant::now();
    let stats = match &args.mode {
        PresenceMode::Counts(a) => PresenceStats::Counts(counts::run(ctx, a, &mut report).await?),
        PresenceMode::Subscribe(a) => {
            PresenceStats::Subscribe(subscribe::run(ctx, a, &mut report).await?)
        }
        PresenceMode::JoinStorm(a) => {
            PresenceStats::JoinStorm(storm::run(ctx, a, &mut report).await?)
        }
    };
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.errors = ctx.live.errors.lock().map(|m| m.clone()).unwrap_or_default();
    report.other_closes = ctx.live.other_closes.load(std::sync::atomic::Ordering::Relaxed);
    report.slow_consumer_closes =
        ctx.live.slow_consumer_closes.load(std::sync::atomic::Ordering::Relaxed);
    report.presence = Some(stats);
    Ok(report)
}

/// CPU samples of the brokers and the backend processes at the start of a measured window.
struct Window {
    broker: Option<ProcSample>,
    backend: Option<ProcSample>,
}

impl Window {
    fn start(ctx: &Ctx) -> Window {
        Window { broker: ctx.sample(), backend: ctx.sample_backend() }
    }

    /// The brokers' usage over the window, and the backend processes' CPU seconds.
    fn end(self, ctx: &Ctx) -> (Option<Broker>, Option<f64>) {
        let broker = match (self.broker, ctx.sample()) {
            (Some(b), Some(a)) => Some(Broker::from_samples(ctx.common.pid.clone(), b, a, 0, None)),
            _ => None,
        };
        let backend = match (self.backend, ctx.sample_backend()) {
            (Some(b), Some(a)) => Some((a.cpu_s - b.cpu_s).max(0.0)),
            _ => None,
        };
        (broker, backend)
    }
}

/// `{"op":"presence",…}` for the counts alone (`limit` None) or a page of `limit` members
/// after `cursor`.
fn query(channel: &str, limit: Option<usize>, cursor: Option<&str>, id: u64) -> Vec<u8> {
    let mut q = format!(r#"{{"op":"presence","channel":"{channel}","id":{id}"#);
    match limit {
        None => q.push_str(r#","members":false"#),
        Some(l) => q.push_str(&format!(r#","limit":{l}"#)),
    }
    if let Some(c) = cursor {
        q.push_str(&format!(r#","cursor":"{c}""#));
    }
    q.push('}');
    q.into_bytes()
}

/// A `presence` answer, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    connections: u64,
    users: u64,
    members: usize,
    next_cursor: Option<String>,
}

/// Why a presence query was refused, with what to change for the common causes.
fn refused(code: &str) -> String {
    let hint = match code {
        "rate_limited" => {
            " (every presence query costs a subscribe token: raise limits.subscribe_rate and \
             limits.subscribe_burst)"
        }
        "bad_request" => " (does the channel's route have presence = true?)",
        _ => "",
    };
    format!("presence query refused: {code}{hint}")
}

/// Sends one query and waits (at most `timeout`) for its answer; also returns how long that
/// took, from before the send to the parsed answer.
async fn ask(
    conn: &mut Conn,
    frame: &[u8],
    id: u64,
    timeout: Duration,
) -> Result<(Answer, Duration)> {
    let start = Instant::now();
    conn.queue(frame).await?;
    conn.flush().await?;
    loop {
        let ev = tokio::time::timeout(timeout, conn.recv())
            .await
            .map_err(|_| format!("no presence answer in {timeout:?}"))??;
        let mut got: Option<std::result::Result<Answer, String>> = None;
        match ev {
            Event::Text(t) => {
                for_each_raw(t, |obj, f| {
                    if let Some(a) = presence_answer(obj) {
                        if a.id == Some(id) {
                            got = Some(Ok(Answer {
                                connections: a.connections,
                                users: a.users,
                                members: a.members,
                                next_cursor: a.next_cursor.map(str::to_string),
                            }));
                        }
                    } else if let Frame::Error { code, .. } = f {
                        got = Some(Err(refused(code)));
                    }
                });
            }
            Event::Closed(code) => {
                return Err(format!("closed while asking for presence ({code:?})").into())
            }
        }
        match got {
            Some(Ok(a)) => return Ok((a, start.elapsed())),
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
}

/// Keeps a connection open and read (so pings are answered and nothing piles up) until `stop`;
/// a close by the broker is counted.
async fn hold(mut conn: Conn, mut stop: watch::Receiver<bool>, live: std::sync::Arc<Live>) {
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            ev = conn.recv() => match ev {
                Ok(Event::Text(_)) => {}
                Ok(Event::Closed(code)) => {
                    live.closed(code);
                    return;
                }
                Err(_) => return,
            },
        }
    }
    conn.close().await;
}

/// The median of `v` (0 when empty); `v` is sorted in place.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_the_documented_frames() {
        let v: serde_json::Value =
            serde_json::from_slice(&query("p.c", None, None, 7)).expect("JSON");
        assert_eq!(v, serde_json::json!({"op":"presence","channel":"p.c","id":7,"members":false}));
        let v: serde_json::Value =
            serde_json::from_slice(&query("p.c", Some(100), Some("n:1"), 8)).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"op":"presence","channel":"p.c","id":8,"limit":100,"cursor":"n:1"})
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
