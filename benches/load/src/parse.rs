//! Cheap classification of server frames.
//!
//! The receive path has to keep up with well over a million deliveries per second on a core
//! shared with the broker, so we never build a `serde_json::Value` per message. A targeted
//! scanner pulls out the handful of fields we need (`op`, `id`, `code`, and the bench payload
//! `data.p/s/t`) by looking for the key tokens; when the scanner cannot make sense of an object
//! (unexpected spacing, escaped strings, a payload that is not ours) we fall back to serde with
//! borrowed fields, which is still allocation-free for the common shapes.

use memchr::memmem;
use serde::Deserialize;

/// One JSON object from a server frame, reduced to what the load generator counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A delivery carrying our bench payload.
    Message(Stamp),
    /// A delivery whose `data` is not a bench payload (someone else's traffic on the channel).
    ForeignMessage,
    Ok {
        id: u64,
    },
    Error {
        id: Option<u64>,
        code: &'a str,
    },
    Welcome,
    Pong {
        id: Option<u64>,
    },
    /// `unsubscribed`, `direct`, or any op this tool does not know.
    Other(&'a str),
    /// Not a JSON object we could read.
    Malformed,
}

/// The bench payload `{"p":stream,"s":seq,"t":unix_nanos}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher stream: one publisher connection on one channel.
    pub stream: u32,
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
}

/// Calls `f` for every JSON object in a text frame. With `?batch=1` the server may pack several
/// objects separated by `\n`; without it this is exactly one call. Returns the number of objects.
pub fn for_each_object<'a>(payload: &'a [u8], mut f: impl FnMut(Frame<'a>)) -> usize {
    let mut n = 0;
    for obj in payload.split(|&b| b == b'\n') {
        let obj = trim(obj);
        if obj.is_empty() {
            continue;
        }
        n += 1;
        f(parse_object(obj));
    }
    n
}

/// Like [`for_each_object`], also handing over each object's bytes (for [`position`]).
pub fn for_each_raw<'a>(payload: &'a [u8], mut f: impl FnMut(&'a [u8], Frame<'a>)) -> usize {
    let mut n = 0;
    for obj in payload.split(|&b| b == b'\n') {
        let obj = trim(obj);
        if obj.is_empty() {
            continue;
        }
        n += 1;
        f(obj, parse_object(obj));
    }
    n
}

/// The history fields of a server object: `offset`, `epoch` and `recovered` (on `ok` and
/// `message` frames of channels with history).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position<'a> {
    pub offset: Option<u64>,
    pub epoch: Option<&'a str>,
    pub recovered: Option<bool>,
}

/// Reads the history fields of one object. The first key of each name counts: in a `message`
/// it must not also appear inside `data` (bench payloads have none of them).
pub fn position(obj: &[u8]) -> Position<'_> {
    let recovered = value_start(obj, b"\"recovered\"").and_then(|v| {
        let rest = &obj[v..];
        if rest.starts_with(b"true") {
            Some(true)
        } else if rest.starts_with(b"false") {
            Some(false)
        } else {
            None
        }
    });
    let pos = Position {
        offset: u64_value(obj, b"\"offset\""),
        epoch: str_value(obj, b"\"epoch\""),
        recovered,
    };
    if pos.epoch.is_none() && pos.offset.is_some() {
        // An escaped epoch (never produced by the broker): fall back to serde.
        #[derive(Deserialize)]
        struct P<'a> {
            offset: Option<u64>,
            #[serde(borrow)]
            epoch: Option<&'a str>,
            recovered: Option<bool>,
        }
        if let Ok(p) = serde_json::from_slice::<P<'_>>(obj) {
            return Position { offset: p.offset, epoch: p.epoch, recovered: p.recovered };
        }
    }
    pos
}

/// A `presence` answer, reduced to what the presence scenario checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceAnswer<'a> {
    pub id: Option<u64>,
    pub connections: u64,
    pub users: u64,
    /// Members listed on this page (0 for counts alone).
    pub members: usize,
    pub next_cursor: Option<&'a str>,
}

/// Reads a `presence` answer; None for any other object. The counts come before the members
/// in the broker's answer, so the first key of each name is the top-level one; members are
/// counted by their `{"conn":` (bench connections are anonymous: no user text can hold one).
pub fn presence_answer(obj: &[u8]) -> Option<PresenceAnswer<'_>> {
    if str_value(obj, b"\"op\"")? != "presence" {
        return None;
    }
    Some(PresenceAnswer {
        id: u64_value(obj, b"\"id\""),
        connections: u64_value(obj, b"\"connections\"")?,
        users: u64_value(obj, b"\"users\"")?,
        members: memmem::find_iter(obj, b"{\"conn\":").count(),
        next_cursor: str_value(obj, b"\"next_cursor\""),
    })
}

/// The members a `presence_diff` names: the conns that joined, and how many left. None for
/// any other object. Conn ids hold no quotes or brackets, and bench members have no user, so
/// the `join` list ends at the first `]`.
pub fn diff_members(obj: &[u8]) -> Option<(Vec<&str>, usize)> {
    if str_value(obj, b"\"op\"")? != "presence_diff" {
        return None;
    }
    let list = |key: &[u8]| -> Option<&[u8]> {
        let start = value_start(obj, key)?;
        let rest = &obj[start..];
        let end = memchr::memchr(b']', rest)?;
        Some(&rest[..end])
    };
    let joined = list(b"\"join\"")?;
    let conns = memmem::find_iter(joined, b"\"conn\":\"")
        .filter_map(|i| {
            let rest = &joined[i + 8..];
            let end = memchr::memchr(b'"', rest)?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .collect();
    let left = list(b"\"leave\"").map_or(0, |l| memmem::find_iter(l, b"{\"conn\":").count());
    Some((conns, left))
}

/// The bench payload at the start of `data` (a JSON object without escapes, e.g. a NATS
/// message's payload, or the `data` of a switchyard message): None when it is not ours.
pub fn stamp(data: &[u8]) -> Option<Stamp> {
    if data.first() != Some(&b'{') {
        return None;
    }
    // Only the data object itself: a later key must not be mistaken for ours.
    let end = memchr::memchr(b'}', data)?;
    let data = &data[..=end];
    match (u64_value(data, b"\"p\""), u64_value(data, b"\"s\""), u64_value(data, b"\"t\"")) {
        (Some(p), Some(s), Some(t)) => {
            Some(Stamp { stream: u32::try_from(p).ok()?, seq: s, sent_ns: t })
        }
        _ => None,
    }
}

/// Classifies one JSON object.
pub fn parse_object(obj: &[u8]) -> Frame<'_> {
    match fast(obj) {
        Some(f) => f,
        None => slow(obj),
    }
}

fn fast(obj: &[u8]) -> Option<Frame<'_>> {
    if obj.first() != Some(&b'{') {
        return None;
    }
    // Escapes would break the "string ends at the next quote" shortcut below.
    if memchr::memchr(b'\\', obj).is_some() {
        return None;
    }
    let op = str_value(obj, b"\"op\"")?;
    Some(match op {
        "message" => {
            let d = value_start(obj, b"\"data\"")?;
            let data = &obj[d..];
            if data.first() != Some(&b'{') {
                return Some(Frame::ForeignMessage);
            }
            // An object that never closes: let the slow path judge it.
            memchr::memchr(b'}', data)?;
            match stamp(data) {
                Some(st) => Frame::Message(st),
                None => Frame::ForeignMessage,
            }
        }
        "ok" => Frame::Ok { id: u64_value(obj, b"\"id\"")? },
        "error" => {
            Frame::Error { id: u64_value(obj, b"\"id\""), code: str_value(obj, b"\"code\"")? }
        }
        "welcome" => Frame::Welcome,
        "pong" => Frame::Pong { id: u64_value(obj, b"\"id\"") },
        other => Frame::Other(other),
    })
}

#[derive(Deserialize)]
struct Loose<'a> {
    #[serde(borrow)]
    op: Option<&'a str>,
    id: Option<u64>,
    #[serde(borrow)]
    code: Option<&'a str>,
    data: Option<LooseData>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LooseData {
    Stamp { p: u32, s: u64, t: u64 },
    Other(serde::de::IgnoredAny),
}

fn slow(obj: &[u8]) -> Frame<'_> {
    let Ok(v) = serde_json::from_slice::<Loose<'_>>(obj) else {
        return Frame::Malformed;
    };
    match v.op {
        Some("message") => match v.data {
            Some(LooseData::Stamp { p, s, t }) => {
                Frame::Message(Stamp { stream: p, seq: s, sent_ns: t })
            }
            _ => Frame::ForeignMessage,
        },
        Some("ok") => match v.id {
            Some(id) => Frame::Ok { id },
            None => Frame::Other("ok"),
        },
        // A code with escapes would not borrow; "unknown" keeps the frame counted.
        Some("error") => Frame::Error { id: v.id, code: v.code.unwrap_or("unknown") },
        Some("welcome") => Frame::Welcome,
        Some("pong") => Frame::Pong { id: v.id },
        Some(other) => Frame::Other(other),
        None => Frame::Malformed,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Index of the first byte of the value of `key` (a quoted key token such as `"op"`).
/// Skips matches that are not followed by a colon (a string *value* equal to the key).
fn value_start(obj: &[u8], key: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memmem::find(&obj[from..], key) {
        let mut j = from + i + key.len();
        while obj.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
            j += 1;
        }
        if obj.get(j) == Some(&b':') {
            j += 1;
            while obj.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
                j += 1;
            }
            return Some(j);
        }
        from = from + i + key.len();
    }
    None
}

fn str_value<'a>(obj: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let v = value_start(obj, key)?;
    if obj.get(v) != Some(&b'"') {
        return None;
    }
    let rest = &obj[v + 1..];
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn u64_value(obj: &[u8], key: &[u8]) -> Option<u64> {
    let v = value_start(obj, key)?;
    let digits = obj[v..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in &obj[v..v + digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Frame<'_> {
        parse_object(s.as_bytes())
    }

    #[test]
    fn message_with_stamp() {
        let f = one(
            r#"{"op":"message","channel":"bench.x","data":{"p":3,"s":17,"t":1700000000000000000}}"#,
        );
        assert_eq!(
            f,
            Frame::Message(Stamp { stream: 3, seq: 17, sent_ns: 1_700_000_000_000_000_000 })
        );
    }

    #[test]
    fn message_key_order_and_user_do_not_matter() {
        let f = one(
            r#"{"channel":"a","data":{"t":5,"s":2,"p":1,"pad":"xx"},"user":"alice","op":"message"}"#,
        );
        assert_eq!(f, Frame::Message(Stamp { stream: 1, seq: 2, sent_ns: 5 }));
        let f = one(r#"{ "op" : "message", "data" : { "p" : 1, "s" : 2, "t" : 3 } }"#);
        assert_eq!(f, Frame::Message(Stamp { stream: 1, seq: 2, sent_ns: 3 }));
    }

    #[test]
    fn foreign_message() {
        assert_eq!(
            one(r#"{"op":"message","channel":"a","data":{"text":"hi"}}"#),
            Frame::ForeignMessage
        );
        assert_eq!(one(r#"{"op":"message","channel":"a","data":"s"}"#), Frame::ForeignMessage);
        // Our keys outside data must not be picked up.
        assert_eq!(
            one(r#"{"op":"message","data":{"x":1},"p":1,"s":2,"t":3}"#),
            Frame::ForeignMessage
        );
    }

    #[test]
    fn control_frames() {
        assert_eq!(one(r#"{"op":"ok","id":42}"#), Frame::Ok { id: 42 });
        assert_eq!(
            one(r#"{"op":"error","id":7,"code":"rate_limited","message":"slow down"}"#),
            Frame::Error { id: Some(7), code: "rate_limited" }
        );
        assert_eq!(
            one(r#"{"op":"error","code":"bad_request","message":"a \"quoted\" thing"}"#),
            Frame::Error { id: None, code: "bad_request" }
        );
        assert_eq!(one(r#"{"op":"welcome","conn":"c1","node":"n1"}"#), Frame::Welcome);
        assert_eq!(one(r#"{"op":"pong","id":5}"#), Frame::Pong { id: Some(5) });
        assert_eq!(
            one(r#"{"op":"unsubscribed","channel":"a","reason":"forbidden"}"#),
            Frame::Other("unsubscribed")
        );
        assert_eq!(one("not json"), Frame::Malformed);
        assert_eq!(one("[1,2]"), Frame::Malformed);
    }

    #[test]
    fn a_channel_named_like_a_key_is_not_a_key() {
        let f = one(r#"{"channel":"op","op":"ok","id":1}"#);
        assert_eq!(f, Frame::Ok { id: 1 });
    }

    #[test]
    fn batched_frames_are_each_counted() {
        let payload = concat!(
            r#"{"op":"message","channel":"c","data":{"p":0,"s":0,"t":1}}"#,
            "\n",
            r#"{"op":"message","channel":"c","data":{"p":0,"s":1,"t":2}}"#,
            "\n",
            r#"{"op":"ok","id":9}"#,
            "\n"
        );
        let mut seen = Vec::new();
        let n = for_each_object(payload.as_bytes(), |f| seen.push(f));
        assert_eq!(n, 3);
        assert_eq!(seen[0], Frame::Message(Stamp { stream: 0, seq: 0, sent_ns: 1 }));
        assert_eq!(seen[1], Frame::Message(Stamp { stream: 0, seq: 1, sent_ns: 2 }));
        assert_eq!(seen[2], Frame::Ok { id: 9 });
    }

    #[test]
    fn history_positions() {
        let p = position(br#"{"op":"ok","id":1,"offset":45,"epoch":"9f2c","recovered":true}"#);
        assert_eq!(p, Position { offset: Some(45), epoch: Some("9f2c"), recovered: Some(true) });
        let p = position(br#"{"op":"ok","offset":3,"epoch":"e","recovered":false}"#);
        assert_eq!(p.recovered, Some(false));
        let m = br#"{"op":"message","channel":"c","data":{"p":0,"s":1,"t":2},"offset":42,"epoch":"e1"}"#;
        assert_eq!(position(m), Position { offset: Some(42), epoch: Some("e1"), recovered: None });
        assert_eq!(position(br#"{"op":"ok","id":1}"#), Position::default());
        let mut seen = Vec::new();
        let n = for_each_raw(
            b"{\"op\":\"ok\",\"offset\":1,\"epoch\":\"e\"}\n{\"op\":\"welcome\"}",
            |o, f| seen.push((position(o).offset, f)),
        );
        assert_eq!(n, 2);
        assert_eq!(seen[0], (Some(1), Frame::Other("ok")));
        assert_eq!(seen[1], (None, Frame::Welcome));
    }

    #[test]
    fn presence_answers_and_diffs() {
        let a = presence_answer(
            br#"{"op":"presence","id":3,"channel":"p.c","connections":10000,"users":0}"#,
        )
        .expect("an answer");
        assert_eq!(
            a,
            PresenceAnswer {
                id: Some(3),
                connections: 10000,
                users: 0,
                members: 0,
                next_cursor: None
            }
        );
        let page = br#"{"op":"presence","id":4,"channel":"p","connections":3,"users":1,"members":[{"conn":"a:1","user":"u"},{"conn":"a:2"}],"next_cursor":"a:2"}"#;
        let a = presence_answer(page).expect("a page");
        assert_eq!((a.members, a.next_cursor), (2, Some("a:2")));
        assert_eq!(presence_answer(br#"{"op":"ok","id":1}"#), None);
        let d = br#"{"op":"presence_diff","channel":"p","join":[{"conn":"a:1"},{"conn":"b:2"}],"leave":[{"conn":"c:3"}]}"#;
        assert_eq!(diff_members(d), Some((vec!["a:1", "b:2"], 1)));
        let d = br#"{"op":"presence_diff","channel":"p","join":[],"leave":[]}"#;
        assert_eq!(diff_members(d), Some((vec![], 0)));
        assert_eq!(diff_members(br#"{"op":"presence","connections":1,"users":0}"#), None);
    }

    #[test]
    fn single_frame_is_one_object() {
        let n = for_each_object(br#"{"op":"ok","id":1}"#, |_| {});
        assert_eq!(n, 1);
        assert_eq!(for_each_object(b"", |_| {}), 0);
    }
}
