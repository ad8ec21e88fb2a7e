//! The NATS client protocol (text, core NATS only), as carried over WebSocket by nats-server's
//! `websocket {}` listener, so the same scenarios can be run against nats-server.
//!
//! nats-server treats the WebSocket as a byte stream: a protocol operation may be split over
//! frames, and one frame usually holds many. The connection therefore keeps a byte buffer
//! ([`crate::client::Conn`]) and hands the scenarios runs of *complete* operations, which
//! [`for_each_frame`] maps onto the same [`Frame`]s the switchyard protocol yields:
//!
//! | server sends | becomes |
//! | --- | --- |
//! | `INFO {...}` | `Frame::Welcome` |
//! | `MSG <subject> <sid> [reply] <n>` + payload | `Frame::Message` (bench payload) or `ForeignMessage` |
//! | `PONG` | `Frame::Pong { id: None }` |
//! | `-ERR '<text>'` | `Frame::Error { id: None, code: <text> }` |
//! | `PING` | answered with `PONG` by the connection; `Frame::Other("PING")` |
//! | `+OK` | `Frame::Other("+OK")` (not sent: we connect with `verbose: false`) |
//!
//! Core NATS has no publish acknowledgement: a publish counts as accepted once written.

use std::io::Write as _;

use crate::parse::{self, Frame};

/// What the client sends right after the server's `INFO`: no `+OK` per operation, no headers
/// (so deliveries are plain `MSG`), then a `PING` whose `PONG` says the server accepted it.
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false,\
\"no_responders\":false,\"protocol\":1,\"lang\":\"switchyard-load\",\"version\":\"0.1.0\"}\r\nPING\r\n";

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// Operations longer than this (a control line without its `\r\n`, or a payload) are refused:
/// nats-server's default max_payload is 1 MiB, and a corrupt length must not grow the buffer
/// without bound.
const MAX_OP: usize = 64 * 1024 * 1024;

/// One server operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Info(&'a [u8]),
    Msg { subject: &'a [u8], sid: &'a [u8], payload: &'a [u8] },
    Ping,
    Pong,
    Ok,
    Err(&'a str),
}

/// Parses the operation at the start of `buf`: `Ok(Some((op, bytes)))` when it is complete,
/// `Ok(None)` until all of it has arrived, `Err` when it is not NATS.
pub fn parse_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, String> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > MAX_OP {
            return Err(format!("no end of line in {} bytes", buf.len()));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let (verb, rest) = match memchr::memchr2(b' ', b'\t', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let op = if verb.eq_ignore_ascii_case(b"MSG") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let args: Vec<&[u8]> =
            rest.split(|b| *b == b' ' || *b == b'\t').filter(|a| !a.is_empty()).collect();
        let (subject, sid, size) = match args.as_slice() {
            [s, i, n] | [s, i, _, n] => (*s, *i, *n),
            _ => return Err(format!("bad MSG line {:?}", String::from_utf8_lossy(line))),
        };
        let n: usize = std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n| n <= MAX_OP)
            .ok_or_else(|| format!("bad MSG size in {:?}", String::from_utf8_lossy(line)))?;
        if buf.len() < after + n + 2 {
            return Ok(None);
        }
        if &buf[after + n..after + n + 2] != b"\r\n" {
            return Err("MSG payload not followed by CRLF".into());
        }
        return Ok(Some((
            Op::Msg { subject, sid, payload: &buf[after..after + n] },
            after + n + 2,
        )));
    } else if verb.eq_ignore_ascii_case(b"PING") {
        Op::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        Op::Pong
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        Op::Info(rest)
    } else if verb.eq_ignore_ascii_case(b"+OK") {
        Op::Ok
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        let text = std::str::from_utf8(rest).unwrap_or("?").trim().trim_matches('\'');
        Op::Err(text)
    } else {
        return Err(format!("unknown NATS operation {:?}", String::from_utf8_lossy(line)));
    };
    Ok(Some((op, after)))
}

/// How many leading bytes of `buf` are complete operations, and how many of them are `PING`s
/// (which the caller must answer).
pub fn complete(buf: &[u8]) -> Result<(usize, usize), String> {
    let (mut at, mut pings) = (0, 0);
    while let Some((op, n)) = parse_op(&buf[at..])? {
        if op == Op::Ping {
            pings += 1;
        }
        at += n;
    }
    Ok((at, pings))
}

/// Calls `f` for every operation in `chunk` (complete operations, as `Conn::recv` yields them)
/// as a [`Frame`]. Returns the number of operations.
pub fn for_each_frame<'a>(chunk: &'a [u8], mut f: impl FnMut(Frame<'a>)) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < chunk.len() {
        let Ok(Some((op, len))) = parse_op(&chunk[at..]) else {
            f(Frame::Malformed);
            return n + 1;
        };
        at += len;
        n += 1;
        f(match op {
            Op::Info(_) => Frame::Welcome,
            Op::Msg { payload, .. } => match parse::stamp(payload) {
                Some(st) => Frame::Message(st),
                None => Frame::ForeignMessage,
            },
            Op::Pong => Frame::Pong { id: None },
            Op::Err(text) => Frame::Error { id: None, code: text },
            Op::Ping => Frame::Other("PING"),
            Op::Ok => Frame::Other("+OK"),
        });
    }
    n
}

/// `SUB <subject> <sid>` for every channel (sids from 1), then a `PING`: its `PONG` means the
/// server has processed every `SUB` before it.
pub fn subscribe(out: &mut Vec<u8>, channels: &[String]) {
    out.clear();
    for (i, ch) in channels.iter().enumerate() {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "SUB {ch} {}\r\n", i + 1);
    }
    out.extend_from_slice(PING);
}

/// `PUB <subject> <n>` with the bench payload the switchyard protocol carries in `data`
/// (`{"p":stream,"s":seq,"t":unix_nanos}`, plus the padding), so deliveries are tracked alike.
pub fn publish(out: &mut Vec<u8>, subject: &str, stream: u32, seq: u64, pad: &str) {
    out.clear();
    let mut payload = Vec::with_capacity(64 + pad.len());
    crate::scenario::write_stamp(&mut payload, stream, seq, pad);
    let _ = write!(out, "PUB {subject} {}\r\n", payload.len());
    out.extend_from_slice(&payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Stamp;

    #[test]
    fn ops_and_incomplete_input() {
        let buf = b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG room.7 2 19\r\n{\"p\":3,\"s\":4,\"t\":5}\r\n+OK\r\n";
        let (op, n) = parse_op(buf).expect("nats").expect("complete");
        assert_eq!(op, Op::Info(b"{\"server_id\":\"x\"}"));
        let (op, m) = parse_op(&buf[n..]).expect("nats").expect("complete");
        assert_eq!(op, Op::Ping);
        let (op, k) = parse_op(&buf[n + m..]).expect("nats").expect("complete");
        assert_eq!(
            op,
            Op::Msg { subject: b"room.7", sid: b"2", payload: b"{\"p\":3,\"s\":4,\"t\":5}" }
        );
        assert_eq!(n + m + k + 5, buf.len());
        // Every strict prefix that ends inside the MSG is incomplete, not an error.
        for cut in n + m..n + m + k {
            assert_eq!(parse_op(&buf[n + m..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(complete(&buf[..buf.len() - 2]), Ok((n + m + k, 1)));
        assert_eq!(complete(buf), Ok((buf.len(), 1)));
    }

    #[test]
    fn msg_with_reply_and_errors() {
        let buf = b"MSG a.b 9 _INBOX.x 2\r\nhi\r\n-ERR 'Slow Consumer'\r\nPONG\r\n";
        let mut frames = Vec::new();
        assert_eq!(for_each_frame(buf, |f| frames.push(f)), 3);
        assert_eq!(
            frames,
            vec![
                Frame::ForeignMessage,
                Frame::Error { id: None, code: "Slow Consumer" },
                Frame::Pong { id: None }
            ]
        );
        assert!(parse_op(b"MSG a 1 x\r\n").is_err());
        assert!(parse_op(b"MSG a 1 2\r\nabcd\r\n").is_err());
        assert!(parse_op(b"HELLO\r\n").is_err());
    }

    #[test]
    fn publish_round_trips_the_stamp() {
        let mut out = Vec::new();
        publish(&mut out, "room.3", 7, 11, "xx");
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert!(text.starts_with("PUB room.3 "), "{text}");
        // What the server would deliver for it.
        let line_end = text.find("\r\n").expect("line");
        let n: usize = text[11..line_end].parse().expect("size");
        let msg = format!("MSG room.3 1 {n}\r\n{}", &text[line_end + 2..]);
        let mut got = None;
        for_each_frame(msg.as_bytes(), |f| got = Some(f));
        match got {
            Some(Frame::Message(Stamp { stream: 7, seq: 11, sent_ns })) => assert!(sent_ns > 0),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subscribe_ends_with_ping() {
        let mut out = Vec::new();
        subscribe(&mut out, &["user.1".into(), "room.0".into()]);
        assert_eq!(out, b"SUB user.1 1\r\nSUB room.0 2\r\nPING\r\n");
    }
}
