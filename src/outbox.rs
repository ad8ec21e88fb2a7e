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
//! Only when the socket cannot take everything does the session's task take over
//! ([`Outbox::take`]) and wait for the socket to become writable. A push that finds the queue
//! full does not wait: it marks the connection as a slow consumer, drops what was queued and
//! asks the session to close with 4001, so one stalled client never holds up the others or
//! grows memory without bound.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::gateway::wsframe::{self, close};

/// Largest payload of one batched frame (`?batch=1`); bigger bursts go out as several frames.
const BATCH_FRAME_BYTES: usize = 64 * 1024;
/// Buffers handed to one vectored write (Linux accepts up to 1024).
const MAX_IOVECS: usize = 256;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued behind other frames that someone is already responsible for writing.
    Queued,
    /// Queued into an empty queue: the producer must call [`Outbox::kick`] (now, or after the
    /// rest of its batch).
    First,
    /// The queue was full: the connection is being closed as a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// One queued item.
#[derive(Debug, Clone)]
enum Item {
    /// A complete frame as the hub or session encoded it (batchable when it is a text frame).
    Frame(Bytes),
    /// Bytes already encoded for the wire, e.g. the rest of a partly written frame.
    Raw(Bytes),
}

/// Why and how a connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the session: the socket did not take everything, or a close was requested.
    ready: Notify,
    /// Signalled when the outbox closes, to interrupt a write that is stuck on a slow socket.
    closing: Notify,
    capacity: usize,
    batch: bool,
}

struct State {
    items: VecDeque<Item>,
    close: Option<Close>,
    /// The session owns the write side now (it is waiting for writability); kicks stay away.
    session_writing: bool,
    /// Set while the connection is open; dropped when it closes so the socket is not kept.
    socket: Option<Arc<TcpStream>>,
}

impl Outbox {
    /// An outbox writing to `socket`; `batch` packs text frames as `?batch=1` clients accept.
    pub fn new(capacity: usize, batch: bool, socket: Option<Arc<TcpStream>>) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                close: None,
                session_writing: false,
                socket,
            }),
            ready: Notify::new(),
            closing: Notify::new(),
            capacity,
            batch,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-push; the queue is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one complete frame.
    pub fn push(&self, frame: Bytes) -> Push {
        let mut state = self.state();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.items.len() >= self.capacity {
            state.items.clear();
            state.close = Some(Close {
                code: close::SLOW_CONSUMER,
                reason: "slow consumer: outbound queue overflowed".into(),
            });
            drop(state);
            self.ready.notify_one();
            self.closing.notify_one();
            return Push::Overflowed;
        }
        state.items.push_back(Item::Frame(frame));
        if state.items.len() == 1 && !state.session_writing {
            Push::First
        } else {
            Push::Queued
        }
    }

    /// Queues a frame and writes it at once when it is the first in line.
    pub fn send(&self, frame: Bytes) -> Push {
        let pushed = self.push(frame);
        if pushed == Push::First {
            self.kick();
        }
        pushed
    }

    /// Writes what is queued straight into the socket without waiting; whatever the socket does
    /// not take is left for the session, which is woken.
    pub fn kick(&self) {
        let mut state = self.state();
        if state.session_writing || state.items.is_empty() || state.close.is_some() {
            return;
        }
        let Some(socket) = state.socket.clone() else {
            return;
        };
        let mut buf = Vec::new();
        loop {
            let result = if self.batch {
                buf.clear();
                let consumed = encode(&mut buf, &mut state.items, true);
                match socket.try_write(&buf) {
                    Ok(n) if n < buf.len() => {
                        state.items.push_front(Item::Raw(Bytes::copy_from_slice(&buf[n..])));
                        Ok(false)
                    }
                    Ok(_) => Ok(consumed),
                    Err(e) => {
                        state.items.push_front(Item::Raw(Bytes::from(std::mem::take(&mut buf))));
                        Err(e)
                    }
                }
            } else {
                write_vectored(&socket, &mut state.items)
            };
            match result {
                // Everything went out.
                Ok(true) if state.items.is_empty() => {
                    trim(&mut state.items);
                    return;
                }
                // More than one write's worth was queued and the socket took it all so far.
                Ok(true) => continue,
                // The socket is full (or failed): the session waits for it.
                Ok(false) | Err(_) => break,
            }
        }
        state.session_writing = true;
        drop(state);
        self.ready.notify_one();
    }

    /// Asks the session to send what is queued, then close with `code`. The first close wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(Close { code, reason: reason.to_string() });
        }
        drop(state);
        self.ready.notify_one();
        self.closing.notify_one();
    }

    /// For the session: encodes everything queued into `out` and takes over writing until the
    /// queue is seen empty again. Returns the close request once one was made.
    pub fn take(&self, out: &mut Vec<u8>) -> Option<Close> {
        let mut state = self.state();
        while !state.items.is_empty() {
            encode(out, &mut state.items, self.batch);
        }
        state.session_writing = !out.is_empty();
        trim(&mut state.items);
        if state.close.is_some() {
            state.socket = None;
        }
        state.close.clone()
    }

    /// For the session, after its write: hands writing back to kicks when nothing is queued.
    /// Returns true when more is queued and the session should write again.
    pub fn done_writing(&self) -> bool {
        let mut state = self.state();
        if state.items.is_empty() && state.close.is_none() {
            state.session_writing = false;
            false
        } else {
            true
        }
    }

    /// Drops the socket reference (the connection is gone).
    pub fn detach(&self) {
        self.state().socket = None;
    }

    pub fn is_closing(&self) -> bool {
        self.state().close.is_some()
    }

    /// Number of queued items (for tests and benches).
    pub fn len(&self) -> usize {
        self.state().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when the session has work: leftovers a kick could not write, or a close.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Resolves when a close has been requested (used while a write is in progress).
    pub async fn closing(&self) {
        if self.is_closing() {
            return;
        }
        self.closing.notified().await
    }
}

/// A burst can leave a ring of up to `outbound_queue` slots behind; an emptied queue gives it
/// back so idle connections stay small.
fn trim(items: &mut VecDeque<Item>) {
    if items.is_empty() && items.capacity() > 64 {
        items.shrink_to(8);
    }
}

/// One non-blocking vectored write of the queue's head; pops what was written. Ok(true) when the
/// socket took everything offered.
fn write_vectored(socket: &TcpStream, items: &mut VecDeque<Item>) -> std::io::Result<bool> {
    // The common case at low rates: one frame, one plain write.
    let (mut written, offered) =
        if let (1, Some(Item::Frame(only) | Item::Raw(only))) = (items.len(), items.front()) {
            (socket.try_write(only)?, only.len())
        } else {
            let slices: Vec<IoSlice<'_>> = items
                .iter()
                .take(MAX_IOVECS)
                .map(|item| match item {
                    Item::Frame(b) | Item::Raw(b) => IoSlice::new(b),
                })
                .collect();
            let offered = slices.iter().map(|s| s.len()).sum();
            (socket.try_write_vectored(&slices)?, offered)
        };
    let all = written == offered;
    while written > 0 {
        let Some(front) = items.front_mut() else { break };
        let bytes = match front {
            Item::Frame(b) | Item::Raw(b) => b,
        };
        if written >= bytes.len() {
            written -= bytes.len();
            items.pop_front();
        } else {
            let mut rest = bytes.clone();
            rest.advance(written);
            *front = Item::Raw(rest);
            written = 0;
        }
    }
    Ok(all)
}

/// Encodes queued items into `out`, at most one batch frame's worth in batch mode, and pops
/// them. Returns true (the shape `kick` expects for "consumed what it encoded").
fn encode(out: &mut Vec<u8>, items: &mut VecDeque<Item>, batch: bool) -> bool {
    if !batch {
        for item in items.drain(..) {
            match item {
                Item::Frame(b) | Item::Raw(b) => out.extend_from_slice(&b),
            }
        }
        return true;
    }
    // Pack the run of text frames at the head into one frame, objects separated by `\n`.
    let mut run = 0;
    let mut run_len = 0;
    for item in items.iter() {
        match item {
            Item::Frame(f) if f.first() == Some(&(0x80 | wsframe::OP_TEXT)) => {
                let len = wsframe::frame_payload(f).len();
                if run > 0 && run_len + 1 + len > BATCH_FRAME_BYTES {
                    break;
                }
                run_len += len + usize::from(run > 0);
                run += 1;
            }
            _ => break,
        }
    }
    if run == 0 {
        if let Some(Item::Frame(b) | Item::Raw(b)) = items.pop_front() {
            out.extend_from_slice(&b);
        }
        return true;
    }
    if run == 1 {
        if let Some(Item::Frame(b)) = items.pop_front() {
            out.extend_from_slice(&b);
        }
        return true;
    }
    wsframe::put_header(out, wsframe::OP_TEXT, run_len);
    for (i, item) in items.drain(..run).enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        if let Item::Frame(f) = item {
            out.extend_from_slice(wsframe::frame_payload(&f));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detached(capacity: usize, batch: bool) -> Outbox {
        Outbox::new(capacity, batch, None)
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
    }

    #[test]
    fn batches_pack_runs_of_text_frames_only() {
        let o = detached(10, true);
        o.push(wsframe::text_frame(b"{\"a\":1}"));
        o.push(wsframe::text_frame(b"{\"b\":2}"));
        o.push(wsframe::control_frame(wsframe::OP_PONG, b""));
        o.push(wsframe::text_frame(b"{\"c\":3}"));
        let mut out = Vec::new();
        assert!(o.take(&mut out).is_none());
        let first = wsframe::text_frame(b"{\"a\":1}\n{\"b\":2}");
        assert_eq!(&out[..first.len()], &first[..]);
        assert_eq!(out[first.len()], 0x8A);
        assert_eq!(&out[first.len() + 2..], &wsframe::text_frame(b"{\"c\":3}")[..]);
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn kick_writes_to_the_socket_and_leftovers_go_to_the_session() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client =
            TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (mut server_side, _) = listener.accept().await.expect("accept");
        let o = Outbox::new(100_000, false, Some(Arc::new(client)));
        assert_eq!(o.send(wsframe::text_frame(b"hello")), Push::First);
        let mut got = [0u8; 7];
        server_side.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], &wsframe::text_frame(b"hello")[..]);
        // Nobody reads now: pushing megabytes fills the socket, and the rest waits for the session.
        let big = wsframe::text_frame(&vec![b'x'; 60_000]);
        for _ in 0..200 {
            if o.push(big.clone()) == Push::First {
                o.kick();
            }
        }
        assert!(!o.is_empty(), "the socket cannot have taken 12 MB");
        let mut out = Vec::new();
        o.take(&mut out);
        assert!(!out.is_empty());
        assert_eq!(
            o.push(wsframe::text_frame(b"later")),
            Push::Queued,
            "the session owns writing now"
        );
    }
}
