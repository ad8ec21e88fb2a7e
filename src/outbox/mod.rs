//! The per-connection bounded outbound queue, and the write path to the socket.
//!
//! Producers (the hub's dispatch task, the connection's own session) [`Outbox::push`] complete
//! WebSocket frames: shared `Bytes`, framed once per message however many subscribers get it.
//! A push that finds the queue empty returns [`Push::First`], and the producer later calls
//! [`Outbox::kick`]: that writes everything queued straight into the socket with one
//! non-blocking vectored write, from the producer's thread. The hub pushes a whole batch of
//! messages before kicking, so a burst leaves with one syscall per connection per batch, and a
//! lone message reaches the socket without waking the connection's task at all.
//!
//! # Who writes
//!
//! The hub's kicks write while the socket takes everything; once it does not, or a close is
//! requested, the session takes over. That hand-over is the small state machine in
//! [`handover`], documented and model-checked there.
//!
//! Every write, from a kick or from the session, is one non-blocking attempt made under the
//! queue's lock, so nobody ever waits on a socket while holding it, and the session's loop
//! keeps serving its timers while the socket is stuck.
//!
//! # Bounds
//!
//! The queue is bounded in frames and in bytes. Bytes are counted exactly as held: added on
//! push, taken off as frames are popped or partly written. A push over either bound does not
//! wait: it marks the connection as a slow consumer, drops the frames not yet started and asks
//! the session to close with 4001, so one stalled client never holds up the others or grows
//! memory without bound.

mod handover;
mod queue;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use handover::{SessionDuty, Step, Writer};
use queue::{encode, write_queue, Item, Queue};

use crate::protocol::wire::{self, close};

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued behind other frames that someone is already responsible for writing.
    Queued,
    /// Queued into an empty queue: the producer must call [`Outbox::kick`] (now, or after the
    /// rest of its batch).
    First,
    /// The queue was over its frame or byte bound: the connection is being closed as a slow
    /// consumer.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// What the session has to do after [`Outbox::ready`] fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Duty {
    /// Nothing: a kick got there first.
    Nothing,
    /// The socket is the session's to write whenever it becomes writable.
    Write,
    /// A close was requested: its frame is queued last, and the session writes until it is out.
    Close(Close),
}

/// How far a session write got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Everything queued is in the socket (when closing: the close frame too).
    All,
    /// The socket is full again; wait for `writable()`.
    Blocked,
}

/// Why and how a connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    pub code: u16,
    pub reason: String,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the session: the socket did not take everything, or a close was requested.
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
    batch: bool,
}

struct State {
    queue: Queue,
    writer: Writer,
    close: Option<Close>,
    /// Set while the connection is open; dropped when it closes so the socket is not kept.
    socket: Option<Arc<TcpStream>>,
}

impl Outbox {
    /// An outbox of at most `max_frames` frames writing to `socket`, unbounded in bytes until
    /// [`Outbox::with_max_bytes`]; `batch` packs text frames as `?batch=1` clients accept.
    pub(crate) fn new(max_frames: usize, batch: bool, socket: Option<Arc<TcpStream>>) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                queue: Queue::default(),
                writer: Writer::Idle,
                close: None,
                socket,
            }),
            ready: Notify::new(),
            max_frames,
            max_bytes: usize::MAX,
            batch,
        }
    }

    /// Bounds the bytes queued (frames as encoded, including what is left of a partly written
    /// one).
    pub(crate) fn with_max_bytes(mut self, max_bytes: usize) -> Outbox {
        self.max_bytes = max_bytes;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-push; the queue is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one complete frame.
    pub(crate) fn push(&self, frame: Bytes) -> Push {
        let mut state = self.state();
        if state.close.is_some() {
            return Push::Closed;
        }
        let q = &state.queue;
        if q.len() >= self.max_frames || q.bytes.saturating_add(frame.len()) > self.max_bytes {
            state.queue.drop_unstarted();
            state.close = Some(Close {
                code: close::SLOW_CONSUMER,
                reason: "slow consumer: outbound queue overflowed".into(),
            });
            drop(state);
            self.ready.notify_one();
            return Push::Overflowed;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(Item::Frame(frame));
        if state.writer.push_owes_kick(was_empty) {
            Push::First
        } else {
            Push::Queued
        }
    }

    /// Queues a frame and writes it at once when it is the first in line.
    pub(crate) fn send(&self, frame: Bytes) -> Push {
        let pushed = self.push(frame);
        if pushed == Push::First {
            self.kick();
        }
        pushed
    }

    /// Writes what is queued straight into the socket without waiting; whatever the socket does
    /// not take is left for the session, which is woken.
    pub(crate) fn kick(&self) {
        let mut state = self.state();
        if !state.writer.kick_may_write(state.close.is_some()) || state.queue.is_empty() {
            return;
        }
        let Some(socket) = state.socket.clone() else {
            return;
        };
        if let Ok(true) = write_queue(&mut state.queue, &socket, self.batch) {
            state.queue.trim();
            return;
        }
        // The socket is full (or failed, which the session's own write will find out).
        state.writer = state.writer.after(Step::KickBlocked);
        drop(state);
        self.ready.notify_one();
    }

    /// Asks the session to send what is queued, then close with `code`. The first close wins.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(Close { code, reason: reason.to_string() });
        }
        drop(state);
        self.ready.notify_one();
    }

    /// For the session, once [`Outbox::ready`] fired: takes over the socket when a kick left
    /// bytes behind, and turns a close request into the close frame queued last.
    pub(crate) fn duty(&self) -> Duty {
        let mut state = self.state();
        match state.writer.session_duty(state.close.is_some()) {
            SessionDuty::Nothing => Duty::Nothing,
            SessionDuty::Write => Duty::Write,
            SessionDuty::BeginClose => {
                let Some(c) = state.close.clone() else { return Duty::Write };
                state.writer = state.writer.after(Step::CloseSeen);
                state.queue.push_back(Item::Raw(wire::close_frame(c.code, &c.reason)));
                Duty::Close(c)
            }
        }
    }

    /// For the session, when the socket is writable: one non-blocking write of what is queued.
    /// Once everything is out, kicks write again (unless the connection is closing).
    pub(crate) fn write(&self, socket: &TcpStream) -> std::io::Result<Written> {
        let mut state = self.state();
        if !write_queue(&mut state.queue, socket, self.batch)? {
            return Ok(Written::Blocked);
        }
        state.queue.trim();
        state.writer = state.writer.after(Step::SessionWroteAll);
        Ok(Written::All)
    }

    /// Drops the socket reference (the connection is gone).
    pub(crate) fn detach(&self) {
        self.state().socket = None;
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state().close.is_some()
    }

    /// Number of queued items.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().queue.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes queued now, exactly as counted against the byte bound.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.state().queue.bytes
    }

    /// Takes every queued frame out as it was pushed, for a socketless buffer whose frames
    /// move to another outbox (recovery).
    pub(crate) fn drain_frames(&self) -> Vec<Bytes> {
        let mut state = self.state();
        let mut frames = Vec::with_capacity(state.queue.len());
        while let Some(item) = state.queue.pop_front() {
            frames.push(item.bytes().clone());
        }
        state.queue.trim();
        frames
    }

    /// Encodes everything queued into `out` and empties the queue, for outboxes without a
    /// socket (tests and benches). Returns the close request once one was made.
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> Option<Close> {
        let mut state = self.state();
        while !state.queue.is_empty() {
            encode(out, &mut state.queue, self.batch);
        }
        state.queue.trim();
        state.close.clone()
    }

    /// Resolves when the session has work: leftovers a kick could not write, or a close.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn detached(capacity: usize, batch: bool) -> Outbox {
        Outbox::new(capacity, batch, None)
    }

    /// An outbox on a real socket, and the peer's end (which reads only when told).
    async fn on_socket(max_bytes: usize) -> (Outbox, Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client =
            TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (peer, _) = listener.accept().await.expect("accept");
        let socket = Arc::new(client);
        let o = Outbox::new(1_000_000, false, Some(socket.clone())).with_max_bytes(max_bytes);
        (o, socket, peer)
    }

    #[test]
    fn overflow_closes_with_4001_and_drops_the_backlog() {
        let o = detached(2, false);
        assert_eq!(o.push(Bytes::from_static(b"a")), Push::First);
        assert_eq!(o.push(Bytes::from_static(b"b")), Push::Queued);
        assert_eq!(o.push(Bytes::from_static(b"c")), Push::Overflowed);
        assert_eq!(o.push(Bytes::from_static(b"d")), Push::Closed);
        let mut v = Vec::new();
        let close = o.take(&mut v).expect("closing");
        assert_eq!(close.code, 4001);
        assert!(v.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn the_byte_bound_counts_every_queued_byte() {
        let o = detached(1000, false).with_max_bytes(10);
        assert_eq!(o.push(Bytes::from_static(b"1234")), Push::First);
        assert_eq!(o.push(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(o.queued_bytes(), 10);
        assert_eq!(o.push(Bytes::from_static(b"x")), Push::Overflowed);
        assert_eq!(o.take(&mut Vec::new()).map(|c| c.code), Some(4001));
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn a_frame_begun_on_the_wire_survives_an_overflow() {
        let mut q = Queue::default();
        q.push_back(Item::Frame(Bytes::from_static(b"abcdef")));
        q.push_back(Item::Frame(Bytes::from_static(b"ghij")));
        q.consume(2);
        assert_eq!(q.bytes, 8);
        q.drop_unstarted();
        assert_eq!((q.len(), q.bytes), (1, 4));
        assert_eq!(&q.items[0].bytes()[..], b"cdef");
    }

    #[test]
    fn batches_pack_runs_of_text_frames_only() {
        let o = detached(10, true);
        o.push(wire::text_frame(b"{\"a\":1}"));
        o.push(wire::text_frame(b"{\"b\":2}"));
        o.push(wire::control_frame(wire::OP_PONG, b""));
        o.push(wire::text_frame(b"{\"c\":3}"));
        let mut out = Vec::new();
        assert!(o.take(&mut out).is_none());
        let first = wire::text_frame(b"{\"a\":1}\n{\"b\":2}");
        assert_eq!(&out[..first.len()], &first[..]);
        assert_eq!(out[first.len()], 0x8A);
        assert_eq!(&out[first.len() + 2..], &wire::text_frame(b"{\"c\":3}")[..]);
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn kick_writes_to_the_socket_and_leftovers_go_to_the_session() {
        let (o, socket, mut peer) = on_socket(usize::MAX).await;
        assert_eq!(o.send(wire::text_frame(b"hello")), Push::First);
        let mut got = [0u8; 7];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], &wire::text_frame(b"hello")[..]);
        // Nobody reads now: pushing megabytes fills the socket, and the rest waits for the session.
        let big = wire::text_frame(&vec![b'x'; 60_000]);
        let mut pushed = 0;
        for _ in 0..200 {
            if o.push(big.clone()) == Push::First {
                o.kick();
            }
            pushed += big.len();
        }
        assert!(!o.is_empty(), "the socket cannot have taken 12 MB");
        assert_eq!(o.duty(), Duty::Write);
        assert_eq!(o.push(wire::text_frame(b"later")), Push::Queued, "the session writes now");
        pushed += 7;
        // The session writes as the peer reads; the byte count follows every partial write.
        let mut read = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let before = o.queued_bytes();
            if o.write(&socket).expect("write") == Written::All {
                break;
            }
            assert!(o.queued_bytes() <= before);
            // As the session does: write again once the socket says it can take bytes.
            tokio::select! {
                writable = socket.writable() => writable.expect("writable"),
                n = peer.read(&mut buf) => read += n.expect("read"),
            }
        }
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(o.duty(), Duty::Nothing, "kicks write again once the session caught up");
        assert_eq!(o.push(wire::text_frame(b"kicked")), Push::First);
        drop(o);
        drop(socket);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.expect("read rest");
        assert_eq!(read + rest.len(), pushed, "every byte pushed reached the peer once");
    }

    #[tokio::test]
    async fn a_close_queues_its_frame_last_and_stops_kicks() {
        let (o, socket, mut peer) = on_socket(usize::MAX).await;
        o.push(wire::text_frame(b"before"));
        o.close(close::GOING_AWAY, "bye");
        assert_eq!(o.push(wire::text_frame(b"after")), Push::Closed);
        o.kick();
        assert_eq!(o.len(), 1, "kicks leave a closing connection to the session");
        assert!(matches!(o.duty(), Duty::Close(Close { code: 1001, .. })));
        assert_eq!(o.duty(), Duty::Write, "the close frame is queued once");
        assert_eq!(o.write(&socket).expect("write"), Written::All);
        let expected =
            [&wire::text_frame(b"before")[..], &wire::close_frame(1001, "bye")[..]].concat();
        let mut got = vec![0u8; expected.len()];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expected);
    }
}
