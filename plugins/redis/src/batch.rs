//! Automatic pipelining on a publisher connection: commands that arrive while the previous batch
//! is on its way to Redis and back wait for it, then leave together in one write.
//!
//! Why: one Redis shard is one thread serving every broker node, and under chat-shaped load
//! (many small publishes from many sessions, rarely at the same instant) what costs it most is
//! a read and a write system call per command. redis-rs writes whatever is queued when its
//! driver runs, but publishes from different sessions seldom overlap, so nearly every one went
//! out alone. Holding the next commands until the reply to the last batch is back (Nagle's idea,
//! with the round trip as the clock) adds no delay on an idle connection, and batches grow with
//! load by themselves: the busier Redis or the broker, the longer the round trip, the more
//! commands each write carries.
//!
//! The round trip alone is too short a clock for chat: at 2,500 publishes/s on a connection
//! they arrive 400 µs apart, while a loopback round trip is 50 µs, so nearly every batch held
//! one command (measured: 0.9 Redis reads per publish). So under load, and only then, a batch
//! also waits until `linger` has passed since the previous one left. "Under load" means the
//! previous batch carried more than one command: commands from several callers overlap. A
//! caller alone on the connection, publishing one message at a time and waiting for each
//! answer, never overlaps with itself, so it is never held back; and when load falls, the
//! first lone command ends the lingering. A busy connection sends at most one batch per
//! `linger`, which bounds both the added delay and the system calls Redis makes per publish.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Commands per write at most; the rest wait for the next one. Bounds the size of a single
/// write and of the reply it waits for, so one burst cannot hold the connection for long.
const MAX_BATCH: usize = 512;

/// The sending side of one connection's batches; dropping it ends the flushing task.
pub(crate) struct Batcher {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

struct Shared {
    queue: Mutex<Vec<Pending>>,
    wake: Notify,
}

struct Pending {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

impl Batcher {
    /// Starts the task that sends this connection's batches, at most one per `linger` while
    /// the connection is busy (zero: one per round trip).
    pub(crate) fn spawn(conn: MultiplexedConnection, linger: Duration) -> Batcher {
        let shared = Arc::new(Shared { queue: Mutex::new(Vec::new()), wake: Notify::new() });
        let stop = CancellationToken::new();
        tokio::spawn(flush_loop(shared.clone(), conn, linger, stop.clone()));
        Batcher { shared, _stop: stop.drop_guard() }
    }

    /// Queues `cmd` for the next batch and waits for its reply. A Redis error reply comes back
    /// as `Ok(Value::ServerError)`, as from `send_packed_command`. Dropping the future before
    /// the batch leaves takes the command out of it.
    pub(crate) async fn call(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending { cmd: cmd.clone(), reply });
        self.shared.wake.notify_one();
        answer.await.unwrap_or_else(|_| Err(closed()))
    }
}

async fn flush_loop(
    shared: Arc<Shared>,
    mut conn: MultiplexedConnection,
    linger: Duration,
    stop: CancellationToken,
) {
    // When the previous batch left, if it carried commands from more than one caller.
    let mut busy_since: Option<Instant> = None;
    loop {
        if queued(&shared) == 0 {
            tokio::select! {
                _ = shared.wake.notified() => continue,
                _ = stop.cancelled() => return,
            }
        }
        if let Some(until) = busy_since.map(|t| t + linger) {
            if Instant::now() < until && queued(&shared) < MAX_BATCH {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
        let mut batch = take_batch(&shared);
        // Callers that gave up (their deadline passed) no longer want their command sent.
        batch.retain(|p| !p.reply.is_closed());
        busy_since = (batch.len() > 1).then(Instant::now);
        // Awaited here, so the next batch gathers while this one is answered.
        tokio::select! {
            _ = send(&mut conn, batch) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn queued(shared: &Shared) -> usize {
    shared.queue.lock().unwrap_or_else(PoisonError::into_inner).len()
}

fn take_batch(shared: &Shared) -> Vec<Pending> {
    let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    if queue.len() <= MAX_BATCH {
        std::mem::take(&mut *queue)
    } else {
        let rest = queue.split_off(MAX_BATCH);
        std::mem::replace(&mut *queue, rest)
    }
}

async fn send(conn: &mut MultiplexedConnection, batch: Vec<Pending>) {
    if batch.len() <= 1 {
        for p in batch {
            let _ = p.reply.send(conn.send_packed_command(&p.cmd).await);
        }
        return;
    }
    let count = batch.len();
    let mut pipe = Pipeline::with_capacity(count);
    let mut replies = Vec::with_capacity(count);
    for p in batch {
        pipe.add_command(p.cmd);
        replies.push(p.reply);
    }
    // Not a transaction: each command's error reply stays in its own slot of the answer.
    match conn.send_packed_commands(&pipe, 0, count).await {
        Ok(values) => {
            let mut values = values.into_iter();
            for reply in replies {
                let _ = reply.send(values.next().ok_or_else(short_answer));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The connection's task is gone: to the caller this is a dropped connection.
fn closed() -> RedisError {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "redis publisher connection closed").into()
}

fn short_answer() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "redis answered a batch with too few replies",
    )
    .into()
}
