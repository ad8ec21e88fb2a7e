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
//! # Who writes: a small state machine
//!
//! ```text
//!            kick: the socket took everything
//!          ┌──────────────────────────────────┐
//!          ▼                                  │
//!        Idle ── push: First, then kick ──────┤
//!          ▲                                  │ kick: the socket is full (wakes the session)
//!          │ session: the socket took         ▼
//!          │ everything                    Session ── the session writes on `writable()`;
//!          └──────────────────────────────────┘        pushes only queue, kicks stay away
//!
//!   Idle or Session ── close requested, seen by the session ──► Closing
//!        the close frame is queued last; the session writes until it is out, or gives up
//!        after a grace and drops the socket
//! ```
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

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::protocol::wire::{self, close};

/// Largest payload of one batched frame (`?batch=1`); bigger bursts go out as several frames.
const BATCH_FRAME_BYTES: usize = 64 * 1024;
/// Buffers handed to one vectored write (Linux accepts up to 1024).
const MAX_IOVECS: usize = 256;

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

/// One queued item.
#[derive(Debug, Clone)]
enum Item {
    /// A complete frame as the hub or session encoded it (batchable when it is a text frame).
    Frame(Bytes),
    /// Bytes already encoded for the wire, e.g. the rest of a partly written frame.
    Raw(Bytes),
}

impl Item {
    fn bytes(&self) -> &Bytes {
        match self {
            Item::Frame(b) | Item::Raw(b) => b,
        }
    }
}

/// The items with their exact byte total; every change to the items goes through here.
#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push_back(&mut self, item: Item) {
        self.bytes += item.bytes().len();
        self.items.push_back(item);
    }

    fn push_front(&mut self, item: Item) {
        self.bytes += item.bytes().len();
        self.items.push_front(item);
    }

    fn pop_front(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        self.bytes -= item.bytes().len();
        Some(item)
    }

    /// Pops `written` bytes off the head; a frame written in part stays as its unwritten rest.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.items.front_mut() else { break };
            let len = front.bytes().len();
            if written >= len {
                written -= len;
                self.pop_front();
            } else {
                let mut rest = front.bytes().clone();
                rest.advance(written);
                *front = Item::Raw(rest);
                self.bytes -= written;
                written = 0;
            }
        }
    }

    /// Drops every frame not yet started. A frame begun on the wire (a `Raw` head) stays, so
    /// the close frame that follows still lands on a frame boundary.
    fn drop_unstarted(&mut self) {
        let head = match self.items.front() {
            Some(Item::Raw(_)) => self.pop_front(),
            _ => None,
        };
        self.items.clear();
        self.bytes = 0;
        if let Some(head) = head {
            self.push_front(head);
        }
    }

    /// A burst can leave a ring of up to `outbound_queue` slots behind; an emptied queue gives
    /// it back so idle connections stay small.
    fn trim(&mut self) {
        if self.items.is_empty() && self.items.capacity() > 64 {
            self.items.shrink_to(8);
        }
    }
}

/// Why and how a connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    pub code: u16,
    pub reason: String,
}

/// Who writes to the socket now (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Idle,
    Session,
    Closing,
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
        state.queue.push_back(Item::Frame(frame));
        if state.queue.len() == 1 && state.writer == Writer::Idle {
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
        if state.writer != Writer::Idle || state.queue.is_empty() || state.close.is_some() {
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
        state.writer = Writer::Session;
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
        if state.writer != Writer::Closing {
            if let Some(c) = state.close.clone() {
                state.writer = Writer::Closing;
                state.queue.push_back(Item::Raw(wire::close_frame(c.code, &c.reason)));
                return Duty::Close(c);
            }
        }
        match state.writer {
            Writer::Idle => Duty::Nothing,
            Writer::Session | Writer::Closing => Duty::Write,
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
        if state.writer == Writer::Session {
            state.writer = Writer::Idle;
        }
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

/// Non-blocking writes of the queue until it is empty (Ok(true)) or the socket is full
/// (Ok(false)); pops exactly what was written.
fn write_queue(queue: &mut Queue, socket: &TcpStream, batch: bool) -> std::io::Result<bool> {
    let mut buf = Vec::new();
    while !queue.is_empty() {
        let result = if batch {
            write_batch(queue, socket, &mut buf)
        } else {
            write_vectored(socket, queue)
        };
        match result {
            Ok(true) => continue,
            Ok(false) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Packs the head of the queue into one batch frame and writes it; what the socket does not
/// take goes back to the head as raw bytes. Ok(true) when it took everything offered.
fn write_batch(queue: &mut Queue, socket: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    encode(buf, queue, true);
    match socket.try_write(buf) {
        Ok(n) if n < buf.len() => {
            queue.push_front(Item::Raw(Bytes::copy_from_slice(&buf[n..])));
            Ok(false)
        }
        Ok(_) => Ok(true),
        Err(e) => {
            queue.push_front(Item::Raw(Bytes::from(std::mem::take(buf))));
            Err(e)
        }
    }
}

/// One non-blocking vectored write of the queue's head; pops what was written. Ok(true) when the
/// socket took everything offered.
fn write_vectored(socket: &TcpStream, queue: &mut Queue) -> std::io::Result<bool> {
    // The common case at low rates: one frame, one plain write.
    let (written, offered) = if queue.len() == 1 {
        let only = queue.items.front().map(Item::bytes).cloned().unwrap_or_default();
        (socket.try_write(&only)?, only.len())
    } else {
        let slices: Vec<IoSlice<'_>> =
            queue.items.iter().take(MAX_IOVECS).map(|item| IoSlice::new(item.bytes())).collect();
        let offered = slices.iter().map(|s| s.len()).sum();
        (socket.try_write_vectored(&slices)?, offered)
    };
    queue.consume(written);
    Ok(written == offered)
}

/// Encodes queued items into `out`, at most one batch frame's worth in batch mode, and pops
/// them.
fn encode(out: &mut Vec<u8>, queue: &mut Queue, batch: bool) {
    if !batch {
        while let Some(item) = queue.pop_front() {
            out.extend_from_slice(item.bytes());
        }
        return;
    }
    // Pack the run of text frames at the head into one frame, objects separated by `\n`.
    let mut run = 0;
    let mut run_len = 0;
    for item in queue.items.iter() {
        match item {
            Item::Frame(f) if f.first() == Some(&(0x80 | wire::OP_TEXT)) => {
                let len = wire::frame_payload(f).len();
                if run > 0 && run_len + 1 + len > BATCH_FRAME_BYTES {
                    break;
                }
                run_len += len + usize::from(run > 0);
                run += 1;
            }
            _ => break,
        }
    }
    if run <= 1 {
        if let Some(item) = queue.pop_front() {
            out.extend_from_slice(item.bytes());
        }
        return;
    }
    wire::put_header(out, wire::OP_TEXT, run_len);
    for i in 0..run {
        if i > 0 {
            out.push(b'\n');
        }
        if let Some(item) = queue.pop_front() {
            out.extend_from_slice(wire::frame_payload(item.bytes()));
        }
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
