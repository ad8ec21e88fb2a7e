//! Dispatch: one task per backend takes messages off the backend's stream and queues them to
//! local subscribers; then every touched outbox is written once.
//!
//! The tasks are supervised. A panic is logged, counted in
//! `switchyard_dispatch_restarts_total` and restarts the task on the same stream (it sits
//! behind an async mutex, which a panic unlocks without poisoning); a stream that ends while
//! the broker runs is logged as the error it is. While a task is not running, `/readyz`
//! fails, so a load balancer stops sending clients to a node that cannot deliver.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;

/// Messages taken from a backend stream at once; a burst is queued whole before writing.
pub(super) const DISPATCH_BATCH: usize = 256;
/// Connections written by one task; more are spread over spawned tasks so every core writes.
const KICK_CHUNK: usize = 128;
/// Pause before a panicked task is restarted, so a panic on every message cannot spin a core.
const RESTART_DELAY: Duration = Duration::from_millis(100);

/// Writes every touched outbox, in parallel chunks when there are many.
pub(super) fn kick_all(touched: &mut Vec<Arc<Outbox>>) {
    while touched.len() > KICK_CHUNK {
        let chunk = touched.split_off(touched.len() - KICK_CHUNK);
        tokio::spawn(async move {
            for outbox in chunk {
                outbox.kick();
            }
        });
    }
    for outbox in touched.drain(..) {
        outbox.kick();
    }
}

/// Whether a supervised task is running now.
#[derive(Default)]
pub(super) struct Running(AtomicBool);

impl Running {
    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, running: bool) {
        self.0.store(running, Ordering::Release);
    }
}

/// What a supervisor watches over, and what it reports to.
pub(super) struct Supervised {
    /// The backend's name, for logs.
    pub(super) name: Arc<str>,
    pub(super) running: Arc<Running>,
    pub(super) restarts: Counter,
    pub(super) stop: CancellationToken,
}

/// Runs `task()` until `stop`, starting it again after a panic. Returns once `stop` is
/// cancelled, or when the task returns by itself (its stream ended: nothing to restart).
pub(super) async fn supervise<F, Fut>(s: Supervised, task: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        s.running.set(true);
        let mut run = tokio::spawn(task());
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            _ = s.stop.cancelled() => {
                run.abort();
                return;
            }
        };
        s.running.set(false);
        match outcome {
            Ok(()) if s.stop.is_cancelled() => return,
            Ok(()) => {
                tracing::error!(backend = %s.name, "the backend's message stream ended: this node receives nothing more from it");
                return;
            }
            Err(e) => {
                let why = if e.is_panic() { "panicked" } else { "was cancelled" };
                tracing::error!(backend = %s.name, "dispatch task {why}; restarting it");
                s.restarts.increment(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_DELAY) => {}
            _ = s.stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn supervised(stop: &CancellationToken) -> (Supervised, Arc<Running>) {
        let running = Arc::new(Running::default());
        let s = Supervised {
            name: Arc::from("test"),
            running: running.clone(),
            restarts: Counter::noop(),
            stop: stop.clone(),
        };
        (s, running)
    }

    /// Lets spawned tasks run until they wait on something.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicked_task_is_down_until_restarted() {
        let stop = CancellationToken::new();
        let (s, running) = supervised(&stop);
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        let supervisor = tokio::spawn(supervise(s, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first run fails");
                }
                std::future::pending::<()>().await
            }
        }));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(!running.get(), "down between the panic and the restart");
        tokio::time::sleep(RESTART_DELAY * 2).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted once");
        assert!(running.get(), "running again");
        stop.cancel();
        supervisor.await.expect("supervisor ends on stop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_is_down_for_good() {
        let stop = CancellationToken::new();
        let (s, running) = supervised(&stop);
        let supervisor = tokio::spawn(supervise(s, || async {}));
        supervisor.await.expect("supervisor returns when its task does");
        assert!(!running.get());
    }
}
