//! Presence of this node's connections: who is subscribed to each presence channel, kept in the
//! channel's backend so every node can count and list them.
//!
//! A subscription to a channel whose route has `presence` takes a [`Seat`]: the member is
//! added to the backend before the subscribe is answered, and dropping the seat (unsubscribe,
//! disconnect, a session that panicked) removes it. Three tasks do the backend work, so no
//! session waits on another's:
//! - the **writer** takes every queued write at once and sends one update per channel (a
//!   burst of joins to one channel is one backend call per [`CALL_MEMBERS`], not one per
//!   member);
//! - the **renewer** queues a renewal of every local member of a channel each third of its
//!   lease, so members of a node that died vanish within the lease while live ones never do.
//!   Renewals go through the writer's queue, behind the joins and leaves queued before them: a
//!   renewal can never re-add a member whose leave was queued after it was taken;
//! - the **flusher** publishes the coalesced `presence_diff` frames ([`diff`]).
//!
//! What the backend reports (members that joined, left, or whose lease ended, whichever node
//! purged them) is what subscribers are told, so each change is told once.

mod diff;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Most members one backend call carries: a 10,000-member channel is renewed in ten calls,
/// each a few milliseconds of Redis time, so no call holds a Redis shard for long.
const CALL_MEMBERS: usize = 1000;

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

/// Where a waiting join or leave hears how its write went.
type Done = oneshot::Sender<Result<(), BackendError>>;

/// One queued write: `member` joins or is renewed (`Some`), or the connection `conn` leaves
/// (`None`).
struct Write {
    topic: TopicKey,
    channel: Arc<str>,
    settings: PresenceSettings,
    conn: Arc<str>,
    member: Option<Member>,
    /// A join's subscribe (and an unsubscribe) waits for the backend's answer.
    done: Option<Done>,
    /// Queued by the renewer (counted as such).
    renewal: bool,
}

struct Shared {
    hub: Arc<Hub>,
    /// Unbounded because a seat's drop cannot wait; each seat queues at most one join and one
    /// leave, so the queue is bounded by the subscriptions this node holds.
    writes: mpsc::UnboundedSender<Write>,
    local: Mutex<HashMap<TopicKey, Local>>,
    pending: Mutex<diff::Pending>,
    metrics: PresenceMetrics,
    /// Renewal writes queued and not yet taken by the writer. While a backend is too slow to
    /// take one round of renewals, no next round is queued on top of it: the queue holds at
    /// most one renewal per member however long the backend stalls.
    queued_renewals: AtomicUsize,
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
            queued_renewals: AtomicUsize::new(0),
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
            renewal: false,
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
    fn queue_leave(&self, done: Option<Done>) -> bool {
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
            renewal: false,
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

/// The writes queued for one channel, the last one per connection winning (a join and its
/// leave in one batch end as a leave).
struct Batch {
    channel: Arc<str>,
    settings: PresenceSettings,
    /// conn → the member to add, or None to remove.
    last: HashMap<Arc<str>, Option<Member>>,
    /// Who waits for which connection's write.
    waiting: Vec<(Arc<str>, Done)>,
    /// Whether every write was a renewal.
    renewals_only: bool,
}

fn batches(writes: Vec<Write>) -> HashMap<TopicKey, Batch> {
    let mut out: HashMap<TopicKey, Batch> = HashMap::new();
    for w in writes {
        let b = out.entry(w.topic).or_insert_with(|| Batch {
            channel: w.channel,
            settings: w.settings,
            last: HashMap::new(),
            waiting: Vec::new(),
            renewals_only: true,
        });
        b.renewals_only &= w.renewal;
        if let Some(done) = w.done {
            b.waiting.push((w.conn.clone(), done));
        }
        b.last.insert(w.conn, w.member);
    }
    out
}

/// Sends one channel's batch in calls of at most [`CALL_MEMBERS`] members, one after another,
/// and answers each waiter with the outcome of the call that carried its connection.
async fn apply(shared: &Shared, topic: TopicKey, batch: Batch) {
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for (conn, member) in batch.last {
        match member {
            Some(m) => add.push(m),
            None => remove.push(conn),
        }
    }
    let (ok, failed) = match batch.renewals_only {
        true => (&shared.metrics.renew_ok, &shared.metrics.renew_failed),
        false => (&shared.metrics.change_ok, &shared.metrics.change_failed),
    };
    let mut failures: HashMap<Arc<str>, BackendError> = HashMap::new();
    let (mut add, mut remove) = (add.as_slice(), remove.as_slice());
    while !add.is_empty() || !remove.is_empty() {
        let r = remove.len().min(CALL_MEMBERS);
        let a = add.len().min(CALL_MEMBERS - r);
        let (these_adds, these_removes) = (&add[..a], &remove[..r]);
        (add, remove) = (&add[a..], &remove[r..]);
        let ttl = batch.settings.ttl;
        let call = shared.hub.presence_update(
            topic.backend,
            &topic.channel,
            these_adds,
            these_removes,
            ttl,
        );
        match call.await {
            Ok(changes) => {
                ok.increment(1);
                // What the backend says changed is what subscribers are told: members it had
                // lost (a restart) come back as joins, leases other nodes let end as leaves.
                let join_leave = batch.settings.join_leave;
                shared.note_changes(&topic, &batch.channel, join_leave, changes);
            }
            Err(e) => {
                failed.increment(1);
                tracing::warn!(
                    channel = %topic.channel,
                    error = %e,
                    "presence update failed; renewals retry every third of the lease, and leases end members that could not be removed"
                );
                let conns = these_adds.iter().map(|m| &m.conn).chain(these_removes);
                failures.extend(conns.map(|c| (c.clone(), e.clone())));
            }
        }
    }
    for (conn, w) in batch.waiting {
        let _ = w.send(failures.get(&conn).map_or(Ok(()), |e| Err(e.clone())));
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
        let renewals = taken.iter().filter(|w| w.renewal).count();
        shared.queued_renewals.fetch_sub(renewals, Ordering::Relaxed);
        let work = batches(std::mem::take(&mut taken));
        stream::iter(work)
            .for_each_concurrent(CONCURRENT_CALLS, |(topic, batch)| apply(&shared, topic, batch))
            .await;
        if shared.stop.is_cancelled() && queue.is_empty() {
            return;
        }
    }
}

/// Queues a renewal of every member of the channels due now, and marks them renewed.
fn queue_renewals(shared: &Shared, now: Instant) {
    if shared.queued_renewals.load(Ordering::Relaxed) > 0 {
        // The last round is still queued (a stalled backend); it renews these members anyway.
        return;
    }
    let mut local = shared.lock_local();
    for (topic, l) in local.iter_mut() {
        if now < l.renewed + l.settings.ttl / 3 {
            continue;
        }
        l.renewed = now;
        for (conn, user) in &l.members {
            let member = Member { conn: conn.clone(), user: user.clone() };
            shared.queued_renewals.fetch_add(1, Ordering::Relaxed);
            let _ = shared.writes.send(Write {
                topic: topic.clone(),
                channel: l.channel.clone(),
                settings: l.settings,
                conn: conn.clone(),
                member: Some(member),
                done: None,
                renewal: true,
            });
        }
    }
}

async fn renew_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(RENEW_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => queue_renewals(&shared, Instant::now()),
            () = shared.stop.cancelled() => return,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(conn: &str, join: bool, renewal: bool) -> Write {
        let settings = PresenceSettings { ttl: Duration::from_secs(30), join_leave: true };
        Write {
            topic: TopicKey { backend: 0, channel: Arc::from("room.1") },
            channel: Arc::from("room.1"),
            settings,
            conn: Arc::from(conn),
            member: join.then(|| Member::new(conn, None)),
            done: None,
            renewal,
        }
    }

    #[test]
    fn the_last_write_per_connection_wins_in_queue_order() {
        // A renewal taken before a leave, then the leave: the member must end removed; a leave
        // then a join (a quick resubscribe): present.
        let writes = vec![
            write("x", true, true),
            write("x", false, false),
            write("y", false, false),
            write("y", true, false),
        ];
        let b = batches(writes).into_values().next().expect("one channel");
        assert_eq!(b.last.get("x").map(Option::is_some), Some(false), "x leaves");
        assert_eq!(b.last.get("y").map(Option::is_some), Some(true), "y stays");
        assert!(!b.renewals_only, "a batch with changes counts as changes");
        let only = batches(vec![write("z", true, true)]).into_values().next().expect("batch");
        assert!(only.renewals_only);
    }
}
