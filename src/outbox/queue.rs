//! The queued frames of one connection with their exact byte count, and the non-blocking
//! writes that move them into the socket (whole, vectored, or packed as `?batch=1` frames).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

use crate::protocol::wire;

/// Largest payload of one batched frame (`?batch=1`); bigger bursts go out as several frames.
const BATCH_FRAME_BYTES: usize = 64 * 1024;
/// Buffers handed to one vectored write (Linux accepts up to 1024).
const MAX_IOVECS: usize = 256;

/// One queued item.
#[derive(Debug, Clone)]
pub(super) enum Item {
    /// A complete frame as the hub or session encoded it (batchable when it is a text frame).
    Frame(Bytes),
    /// Bytes already encoded for the wire, e.g. the rest of a partly written frame.
    Raw(Bytes),
}

impl Item {
    pub(super) fn bytes(&self) -> &Bytes {
        match self {
            Item::Frame(b) | Item::Raw(b) => b,
        }
    }
}

/// The items with their exact byte total; every change to the items goes through here.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) items: VecDeque<Item>,
    pub(super) bytes: usize,
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn push_back(&mut self, item: Item) {
        self.bytes += item.bytes().len();
        self.items.push_back(item);
    }

    pub(super) fn push_front(&mut self, item: Item) {
        self.bytes += item.bytes().len();
        self.items.push_front(item);
    }

    pub(super) fn pop_front(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        self.bytes -= item.bytes().len();
        Some(item)
    }

    /// Pops `written` bytes off the head; a frame written in part stays as its unwritten rest.
    pub(super) fn consume(&mut self, mut written: usize) {
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
    pub(super) fn drop_unstarted(&mut self) {
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
    pub(super) fn trim(&mut self) {
        if self.items.is_empty() && self.items.capacity() > 64 {
            self.items.shrink_to(8);
        }
    }
}

/// Non-blocking writes of the queue until it is empty (Ok(true)) or the socket is full
/// (Ok(false)); pops exactly what was written.
pub(super) fn write_queue(
    queue: &mut Queue,
    socket: &TcpStream,
    batch: bool,
) -> std::io::Result<bool> {
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
pub(super) fn encode(out: &mut Vec<u8>, queue: &mut Queue, batch: bool) {
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
