//! Presence of this node's connections: who is subscribed to each presence channel, kept in the
//! channel's backend so every node can count and list them.
//!
//! A subscription to a channel whose route has `presence` takes a [`Seat`]: the member is
//! added to the backend before the subscribe is answered, and dropping the seat (unsubscribe,
//! disconnect, a session that panicked) removes it. Three tasks do the backend work, so no
//! session waits on another's:
//! - the **writer** takes every queued change at once and sends one update per channel (a
//!   burst of joins to one channel is one backend call, not one per member);
//! - the **renewer** re-adds every local member of a channel each third of its lease, in
//!   chunks, so members of a node that died vanish within the lease while live ones never do;
//! - the **flusher** publishes the coalesced `presence_diff` frames ([`diff`]).
//!
//! What the backend reports (members that joined, left, or whose lease ended, whichever node
//! purged them) is what subscribers are told, so each change is told once.

mod diff;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use switchyard_backend::{BackendError, Changes, Member, Roster};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, TopicKey};
use crate::metrics::PresenceMetrics;
use crate::routing::PresenceSettings;

/// Most members one renewal call carries: a 10,000-member channel is ten calls a third of a
/// lease, each a few milliseconds of Redis time.
const RENEW_CHUNK: usize = 1000;

/// How often the renewer looks for channels due.
const RENEW_TICK: Duration = Duration::from_secs(1);

/// Backend calls in flight at once per task: enough to overlap round trips, few enough not to
/// fill a connection's command queue with one burst.
const CONCURRENT_CALLS: usize = 32;

/// Most queued changes the writer takes in one go.
const WRITE_BATCH: usize = 8192;

/// How long shutdown waits for the last leaves and diffs to reach the backend.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The presence channels this node has members in.
struct Local {
    /// The client channel name, for `presence_diff` frames.
    channel: Arc<str>,
    settings: PresenceSettings,
    /// conn → user.
    members: HashMap<Arc<str>, Option<Arc<str>>>,
    /// When the members were last renewed (or the channel got its first one).
    renewed: Instant,
}

/// One queued change: `member` joins (`Some`) or the connection `conn` leaves (`None`).
struct Write {
    topic: TopicKey,
    channel: Arc<str>,
    settings: PresenceSettings,
    conn: Arc<str>,
    member: Option<Member>,
    /// A join's subscribe waits for the backend's answer.
    done: Option<oneshot::Sender<Result<(), BackendError>>>,
}

struct Shared {
    hub: Arc<Hub>,
    /// Unbounded because a seat's drop cannot wait; each seat queues at most one join and one
    /// leave, so the queue is bounded by the subscriptions this node holds.
    writes: mpsc::UnboundedSender<Write>,
    local: Mutex<HashMap<TopicKey, Local>>,
    pending: Mutex<diff::Pending>,
    metrics: PresenceMetrics,
    /// Ends the tasks; the writer and the flusher finish what is queued first.
    stop: CancellationToken,
}

/// This node's presence keeper.
pub(crate) struct Presence {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A connection's membership of one presence channel; removed from it when dropped.
pub(crate) struct Seat {
    shared: Arc<Shared>,
    topic: TopicKey,
    conn: Arc<str>,
}

impl Presence {
    /// Starts the keeper's tasks on the current runtime.
    pub(crate) fn start(hub: Arc<Hub>, metrics: PresenceMetrics) -> Presence {
        let (writes, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            hub,
            writes,
            local: Mutex::new(HashMap::new()),
            pending: Mutex::new(diff::Pending::default()),
            metrics,
            stop: CancellationToken::new(),
        });
        let tasks = vec![
            tokio::spawn(write_loop(shared.clone(), queue)),
            tokio::spawn(renew_loop(shared.clone())),
            tokio::spawn(flush_loop(shared.clone())),
        ];
        Presence { shared, tasks: Mutex::new(tasks) }
    }

    /// Adds `member` to `channel` (carried on `topic`); resolves once the backend has it.
    pub(crate) async fn join(
        &self,
        topic: &TopicKey,
        channel: &str,
        settings: PresenceSettings,
        member: Member,
    ) -> Result<Seat, BackendError> {
        let channel: Arc<str> = Arc::from(channel);
        let conn = member.conn.clone();
        {
            let mut local = self.shared.lock_local();
            let entry = local.entry(topic.clone()).or_insert_with(|| Local {
                channel: channel.clone(),
                settings,
                members: HashMap::new(),
                renewed: Instant::now(),
            });
            entry.members.insert(conn.clone(), member.user.clone());
        }
        self.shared.metrics.members.increment(1.0);
        // From here on the seat undoes the join, whatever happens to this future.
        let seat = Seat { shared: self.shared.clone(), topic: topic.clone(), conn: conn.clone() };
        let (done, answer) = oneshot::channel();
        let write = Write {
            topic: topic.clone(),
            channel,
            settings,
            conn,
            member: Some(member),
            done: Some(done),
        };
        if self.shared.writes.send(write).is_err() {
            return Err(BackendError::Unavailable("presence is shut down".into()));
        }
        match answer.await {
            Ok(Ok(())) => Ok(seat),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BackendError::Unavailable("presence is shut down".into())),
        }
    }

    /// Reads `channel`'s presence (see `Backend::presence_read`); members whose lease ended
    /// are told as leaves.
    pub(crate) async fn read(
        &self,
        topic: &TopicKey,
        channel: &str,
        settings: PresenceSettings,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Roster, BackendError> {
        self.shared.metrics.reads.increment(1);
        let roster =
            self.shared.hub.presence_read(topic.backend, &topic.channel, after, limit).await?;
        if settings.join_leave && !roster.expired.is_empty() {
            let channel: Arc<str> = Arc::from(channel);
            self.shared.note(topic, &channel, Vec::new(), roster.expired.clone());
        }
        Ok(roster)
    }

    /// Stops the keeper: the leaves queued by the connections that closed and the last diffs
    /// go out first (for at most [`CLOSE_TIMEOUT`]). Call after the sessions have drained.
    pub(crate) async fn close(&self) {
        self.shared.stop.cancel();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let last_words = async {
            // The writer goes first (it drains the queue), so its leaves are in the last diffs.
            for task in tasks {
                let _ = task.await;
            }
            flush(&self.shared).await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, last_words).await.is_err() {
            tracing::warn!("presence: the last leaves did not reach the backend in time");
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl Seat {
    /// Leaves and waits until the backend has it, so the answer to an unsubscribe means the
    /// member is gone. (Dropping a seat leaves without waiting.)
    pub(crate) async fn leave(self) {
        let (done, answer) = oneshot::channel();
        if self.queue_leave(Some(done)) {
            let _ = answer.await;
        }
    }

    /// Takes the member out of the local table and queues its leave; false when it was out
    /// already (so a seat leaves once, by `leave` or by drop).
    fn queue_leave(&self, done: Option<oneshot::Sender<Result<(), BackendError>>>) -> bool {
        let mut local = self.shared.lock_local();
        let Some(entry) = local.get_mut(&self.topic) else { return false };
        if entry.members.remove(&self.conn).is_none() {
            return false;
        }
        self.shared.metrics.members.decrement(1.0);
        let write = Write {
            topic: self.topic.clone(),
            channel: entry.channel.clone(),
            settings: entry.settings,
            conn: self.conn.clone(),
            member: None,
            done,
        };
        if entry.members.is_empty() {
            local.remove(&self.topic);
        }
        drop(local);
        // Fails only once the keeper has stopped; the lease then ends the member.
        self.shared.writes.send(write).is_ok()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.queue_leave(None);
    }
}

impl Shared {
    fn lock_local(&self) -> std::sync::MutexGuard<'_, HashMap<TopicKey, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, topic: &TopicKey, channel: &Arc<str>, joined: Vec<Member>, left: Vec<Member>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.note(topic, channel, joined, left);
    }

    /// Notes what a backend call changed, for channels whose subscribers are told.
    fn note_changes(&self, topic: &TopicKey, channel: &Arc<str>, join_leave: bool, c: Changes) {
        if join_leave {
            let mut left = c.left;
            left.extend(c.expired);
            self.note(topic, channel, c.joined, left);
        }
    }
}

/// The changes queued for one channel, the last one per connection winning (a join and its
/// leave in one batch end as a leave).
struct Batch {
    channel: Arc<str>,
    settings: PresenceSettings,
    /// conn → the member to add, or None to remove.
    last: HashMap<Arc<str>, Option<Member>>,
    waiting: Vec<oneshot::Sender<Result<(), BackendError>>>,
}

fn batches(writes: Vec<Write>) -> HashMap<TopicKey, Batch> {
    let mut out: HashMap<TopicKey, Batch> = HashMap::new();
    for w in writes {
        let b = out.entry(w.topic).or_insert_with(|| Batch {
            channel: w.channel,
            settings: w.settings,
            last: HashMap::new(),
            waiting: Vec::new(),
        });
        b.last.insert(w.conn, w.member);
        b.waiting.extend(w.done);
    }
    out
}

async fn apply(shared: &Shared, topic: TopicKey, batch: Batch) {
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for (conn, member) in batch.last {
        match member {
            Some(m) => add.push(m),
            None => remove.push(conn),
        }
    }
    let ttl = batch.settings.ttl;
    let result =
        shared.hub.presence_update(topic.backend, &topic.channel, &add, &remove, ttl).await;
    match result {
        Ok(changes) => {
            shared.metrics.change_ok.increment(1);
            let join_leave = batch.settings.join_leave;
            shared.note_changes(&topic, &batch.channel, join_leave, changes);
            for w in batch.waiting {
                let _ = w.send(Ok(()));
            }
        }
        Err(e) => {
            shared.metrics.change_failed.increment(1);
            if !remove.is_empty() {
                tracing::warn!(channel = %topic.channel, error = %e, "presence: leaves not written; their leases end them");
            }
            for w in batch.waiting {
                let _ = w.send(Err(e.clone()));
            }
        }
    }
}

async fn write_loop(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Write>) {
    let mut taken = Vec::new();
    loop {
        let n = tokio::select! {
            biased;
            n = queue.recv_many(&mut taken, WRITE_BATCH) => n,
            () = shared.stop.cancelled() => {
                // Whatever the closed connections queued goes out before the keeper stops.
                while let Ok(w) = queue.try_recv() {
                    taken.push(w);
                }
                taken.len()
            }
        };
        if n == 0 {
            return;
        }
        let work = batches(std::mem::take(&mut taken));
        stream::iter(work)
            .for_each_concurrent(CONCURRENT_CALLS, |(topic, batch)| apply(&shared, topic, batch))
            .await;
        if shared.stop.is_cancelled() && queue.is_empty() {
            return;
        }
    }
}

/// One renewal call: up to [`RENEW_CHUNK`] members of one channel.
struct Renewal {
    topic: TopicKey,
    channel: Arc<str>,
    settings: PresenceSettings,
    members: Vec<Member>,
}

/// The renewals due now; marks their channels renewed.
fn due(shared: &Shared, now: Instant) -> Vec<Renewal> {
    let mut out = Vec::new();
    let mut local = shared.lock_local();
    for (topic, l) in local.iter_mut() {
        if now < l.renewed + l.settings.ttl / 3 {
            continue;
        }
        l.renewed = now;
        let members: Vec<Member> = l
            .members
            .iter()
            .map(|(conn, user)| Member { conn: conn.clone(), user: user.clone() })
            .collect();
        for chunk in members.chunks(RENEW_CHUNK) {
            out.push(Renewal {
                topic: topic.clone(),
                channel: l.channel.clone(),
                settings: l.settings,
                members: chunk.to_vec(),
            });
        }
    }
    out
}

async fn renew(shared: &Shared, r: Renewal) {
    let result = shared
        .hub
        .presence_update(r.topic.backend, &r.topic.channel, &r.members, &[], r.settings.ttl)
        .await;
    match result {
        Ok(changes) => {
            shared.metrics.renew_ok.increment(1);
            // Members the backend had lost (a restart) come back as joins; leases other nodes
            // let end go as leaves.
            shared.note_changes(&r.topic, &r.channel, r.settings.join_leave, changes);
        }
        Err(e) => {
            shared.metrics.renew_failed.increment(1);
            tracing::warn!(channel = %r.topic.channel, error = %e, "presence: renewal failed; retried in a third of the lease");
        }
    }
}

async fn renew_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(RENEW_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stop.cancelled() => return,
        }
        let work = due(&shared, Instant::now());
        stream::iter(work).for_each_concurrent(CONCURRENT_CALLS, |r| renew(&shared, r)).await;
    }
}

async fn flush(shared: &Shared) {
    let frames = shared.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
    let sends = frames
        .into_iter()
        .flat_map(|(topic, frames)| frames.into_iter().map(move |frame| (topic.clone(), frame)));
    stream::iter(sends)
        .for_each_concurrent(CONCURRENT_CALLS, |(topic, frame)| async move {
            match shared.hub.publish(topic.backend, &topic.channel, frame).await {
                Ok(_) => shared.metrics.diffs_ok.increment(1),
                Err(e) => {
                    shared.metrics.diffs_failed.increment(1);
                    tracing::debug!(channel = %topic.channel, error = %e, "presence_diff not published");
                }
            }
        })
        .await;
}

async fn flush_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(diff::WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => flush(&shared).await,
            // `Presence::close` sends the last diffs once the writer is done.
            () = shared.stop.cancelled() => return,
        }
    }
}
