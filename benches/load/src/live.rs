//! Counters shared by all connection tasks while a run is going, the throughput sampler, and
//! the terminal progress display.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A counter split over cache lines so that connection tasks on different worker threads do
/// not fight over one line at a million increments per second.
#[derive(Debug, Default)]
pub struct Sharded {
    shards: [Padded; 8],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Sharded {
    pub fn add(&self, shard: usize, n: u64) {
        self.shards[shard % 8].0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// Live counters of one run.
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub published: Sharded,
    pub acked: Sharded,
    pub delivered: Sharded,
    /// Deliveries that arrived in a frame carrying more than one object (`?batch=1`).
    pub batched_objects: Sharded,
    pub frames: Sharded,
    /// Publishing connections that have finished (every publish acknowledged or given up on).
    pub publishers_done: AtomicU64,
    /// Deliveries the receivers should see in total, known once every publisher is done.
    pub expected: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub other_closes: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Live {
    pub fn error(&self, code: &str) {
        // Errors are rare (and each one is worth reporting), so a mutex is fine here.
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(code.to_string()).or_default() += 1;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    pub fn closed(&self, code: Option<u16>) {
        if code == Some(4001) {
            self.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other_closes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One throughput sample.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Point {
    /// Seconds since the sampler started.
    pub t_s: f64,
    /// Deliveries per second over the interval ending at `t_s`.
    pub deliveries_per_s: f64,
    /// Publishes per second over the same interval.
    pub publishes_per_s: f64,
}

/// Samples the delivery counter at a fixed interval and updates the progress bar.
pub struct Sampler {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Vec<Point>>,
}

impl Sampler {
    pub fn start(live: Arc<Live>, interval: Duration, bar: Option<ProgressBar>) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut points = Vec::new();
            let (mut last_d, mut last_p, mut last_t) =
                (live.delivered.get(), live.published.get(), t0);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop2.notified() => break,
                }
                let now = Instant::now();
                let (d, p) = (live.delivered.get(), live.published.get());
                let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
                let point = Point {
                    t_s: now.duration_since(t0).as_secs_f64(),
                    deliveries_per_s: (d - last_d) as f64 / dt,
                    publishes_per_s: (p - last_p) as f64 / dt,
                };
                points.push(point);
                if let Some(bar) = &bar {
                    bar.set_position(d);
                    bar.set_message(format!(
                        "{:>10.0} deliveries/s  {:>8.0} publishes/s  errors {}",
                        point.deliveries_per_s,
                        point.publishes_per_s,
                        live.error_count()
                    ));
                }
                (last_d, last_p, last_t) = (d, p, now);
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            points
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<Point> {
        self.stop.notify_one();
        self.task.await.unwrap_or_default()
    }
}

/// A progress bar, only when stdout is a terminal (never in pipes, files or CI logs).
pub fn bar(len: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Connection progress: a bar while connections open, only on a terminal.
pub struct ConnectProgress {
    bar: Option<ProgressBar>,
}

impl ConnectProgress {
    pub fn new(total: u64) -> Self {
        Self { bar: bar(total, "connecting") }
    }
    pub fn set(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }
    pub fn done(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
