//! Wire frames of the client protocol (docs/protocol.md): decoding client frames and encoding
//! server frames.
//!
//! Decoding borrows from the received text and keeps `data` as raw JSON, so a publish is never
//! parsed into a tree and re-serialized: the bytes the publisher sent are spliced into the
//! `message` frame that subscribers receive.

pub mod position;
pub mod presence;
pub mod wire;

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use position::Since;

/// Error codes of `{"op":"error"}` frames and of HTTP API error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidChannel,
    NoRoute,
    Forbidden,
    TooLarge,
    RateLimited,
    Unavailable,
    NotFound,
    Unauthorized,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

/// A client frame's operation.
#[derive(Debug)]
pub enum ClientOp<'a> {
    /// `since`: recover what was missed after this position (history channels).
    Subscribe {
        channel: Cow<'a, str>,
        since: Option<Since<'a>>,
    },
    Unsubscribe {
        channel: Cow<'a, str>,
    },
    Publish {
        channel: Cow<'a, str>,
        data: &'a RawValue,
    },
    Send {
        to: Cow<'a, str>,
        data: &'a RawValue,
    },
    /// At most `limit` kept messages: the first after `since`, or the latest.
    History {
        channel: Cow<'a, str>,
        limit: usize,
        since: Option<u64>,
    },
    /// `channel`'s counts and, unless `counts_only`, up to `limit` members after `cursor`.
    Presence {
        channel: Cow<'a, str>,
        limit: usize,
        cursor: Option<Cow<'a, str>>,
        counts_only: bool,
    },
    Ping,
}

/// A decoded client frame.
#[derive(Debug)]
pub struct ClientFrame<'a> {
    /// The request id, as raw JSON (a number or a string), echoed in the answer.
    pub id: Option<&'a RawValue>,
    pub op: ClientOp<'a>,
}

/// A frame that could not be decoded; answered with an `error` frame.
#[derive(Debug)]
pub struct DecodeError<'a> {
    pub id: Option<&'a RawValue>,
    pub code: ErrorCode,
    pub message: String,
}

/// Every field as raw JSON, so that a mistyped field is reported as such (with the frame's id)
/// instead of failing the whole decode.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cursor: Option<&'a RawValue>,
    #[serde(borrow, default)]
    members: Option<&'a RawValue>,
}

fn bad<'a>(id: Option<&'a RawValue>, message: impl Into<String>) -> DecodeError<'a> {
    DecodeError { id, code: ErrorCode::BadRequest, message: message.into() }
}

fn string_field<'a>(
    id: Option<&'a RawValue>,
    name: &str,
    raw: Option<&'a RawValue>,
) -> Result<Cow<'a, str>, DecodeError<'a>> {
    let raw = raw.ok_or_else(|| bad(id, format!("missing field `{name}`")))?;
    // Cow<str> only borrows when serde is told to; a string with escapes is owned.
    #[derive(Deserialize)]
    struct S<'b>(#[serde(borrow)] Cow<'b, str>);
    serde_json::from_str::<S<'a>>(raw.get())
        .map(|s| s.0)
        .map_err(|_| bad(id, format!("field `{name}` must be a string")))
}

/// An optional non-negative integer field.
fn count_field<'a>(
    id: Option<&'a RawValue>,
    name: &str,
    raw: Option<&'a RawValue>,
) -> Result<Option<u64>, DecodeError<'a>> {
    raw.map(|r| {
        serde_json::from_str::<u64>(r.get())
            .map_err(|_| bad(id, format!("field `{name}` must be a non-negative integer")))
    })
    .transpose()
}

/// Decodes one client frame.
pub fn decode(text: &str) -> Result<ClientFrame<'_>, DecodeError<'_>> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(bad(
            None,
            if serde_json::from_str::<&RawValue>(text).is_ok() {
                "frame must be a JSON object"
            } else {
                "frame is not JSON"
            },
        ));
    }
    let wire: Wire<'_> = serde_json::from_str(text)
        .map_err(|e| bad(None, format!("frame is not valid JSON: {e}")))?;
    let id = match wire.id {
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            let first = raw.get().as_bytes().first().copied().unwrap_or(b' ');
            if !(first == b'"' || first == b'-' || first.is_ascii_digit()) {
                return Err(bad(None, "field `id` must be a number or a string"));
            }
            Some(raw)
        }
        None => None,
    };
    let Some(op_raw) = wire.op else {
        // The original design's frame shape: {"channel": C, "payload": P}.
        if wire.channel.is_some() && wire.payload.is_some() {
            let channel = string_field(id, "channel", wire.channel)?;
            let data = wire.payload.ok_or_else(|| bad(id, "missing field `payload`"))?;
            return Ok(ClientFrame { id, op: ClientOp::Publish { channel, data } });
        }
        return Err(bad(id, "missing field `op`"));
    };
    let name = string_field(id, "op", Some(op_raw))?;
    let op = operation(id, &name, &wire)?;
    Ok(ClientFrame { id, op })
}

/// The operation `name` with its fields taken from `wire`.
fn operation<'a>(
    id: Option<&'a RawValue>,
    name: &str,
    wire: &Wire<'a>,
) -> Result<ClientOp<'a>, DecodeError<'a>> {
    let data = || wire.data.ok_or_else(|| bad(id, "missing field `data`"));
    Ok(match name {
        "subscribe" => ClientOp::Subscribe {
            channel: string_field(id, "channel", wire.channel)?,
            since: wire.since.map(position::parse_since).transpose().map_err(|m| bad(id, m))?,
        },
        "history" => ClientOp::History {
            channel: string_field(id, "channel", wire.channel)?,
            limit: count_field(id, "limit", wire.limit)?
                .ok_or_else(|| bad(id, "missing field `limit`"))? as usize,
            since: count_field(id, "since", wire.since)?,
        },
        "presence" => presence_op(id, wire)?,
        "unsubscribe" => {
            ClientOp::Unsubscribe { channel: string_field(id, "channel", wire.channel)? }
        }
        "publish" => {
            ClientOp::Publish { channel: string_field(id, "channel", wire.channel)?, data: data()? }
        }
        "send" => ClientOp::Send { to: string_field(id, "to", wire.to)?, data: data()? },
        "ping" => ClientOp::Ping,
        other => {
            let expected = "subscribe, unsubscribe, publish, send, history, presence or ping";
            return Err(bad(id, format!("unknown op {other:?}; expected {expected}")));
        }
    })
}

/// `presence`: `limit` (default [`presence::DEFAULT_PAGE`], at most [`presence::MAX_PAGE`]),
/// `cursor` (a `next_cursor` from the previous page) and `members` (false: counts only).
fn presence_op<'a>(
    id: Option<&'a RawValue>,
    wire: &Wire<'a>,
) -> Result<ClientOp<'a>, DecodeError<'a>> {
    let channel = string_field(id, "channel", wire.channel)?;
    let limit =
        presence::page_limit(count_field(id, "limit", wire.limit)?).map_err(|m| bad(id, m))?;
    let cursor = wire.cursor.map(|c| string_field(id, "cursor", Some(c))).transpose()?;
    let counts_only = match wire.members.map(|m| m.get()) {
        None | Some("true") => false,
        Some("false") => true,
        Some(_) => return Err(bad(id, "field `members` must be true or false")),
    };
    Ok(ClientOp::Presence { channel, limit, cursor, counts_only })
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail; serde_json escapes exactly as JSON requires.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends raw JSON `data`. A raw newline in JSON can only be insignificant whitespace
/// (inside strings it must be escaped), so it becomes a space: `?batch=1` clients split
/// frames on `\n`, and a newline inside one object must not split it.
fn push_data(out: &mut Vec<u8>, data: &str) {
    let start = out.len();
    out.extend_from_slice(data.as_bytes());
    if data.contains('\n') {
        for b in &mut out[start..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
    }
}

fn push_id(out: &mut Vec<u8>, id: Option<&RawValue>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.get().as_bytes());
    }
}

/// Server frames, encoded straight into bytes.
pub mod encode {
    use super::*;

    pub fn welcome(conn: &str, node: &str) -> Bytes {
        let mut out = Vec::with_capacity(48 + conn.len() + node.len());
        out.extend_from_slice(b"{\"op\":\"welcome\",\"conn\":");
        push_str(&mut out, conn);
        out.extend_from_slice(b",\"node\":");
        push_str(&mut out, node);
        out.push(b'}');
        out.into()
    }

    pub fn ok(id: Option<&RawValue>) -> Bytes {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(b"{\"op\":\"ok\"");
        push_id(&mut out, id);
        out.push(b'}');
        out.into()
    }

    pub fn pong(id: Option<&RawValue>) -> Bytes {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(b"{\"op\":\"pong\"");
        push_id(&mut out, id);
        out.push(b'}');
        out.into()
    }

    pub fn error(id: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
        let mut out = Vec::with_capacity(48 + message.len());
        out.extend_from_slice(b"{\"op\":\"error\"");
        push_id(&mut out, id);
        out.extend_from_slice(b",\"code\":\"");
        out.extend_from_slice(code.as_str().as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        push_str(&mut out, message);
        out.push(b'}');
        out.into()
    }

    /// `{"op":"message",...}`: what a publish becomes for subscribers. `data` is the publisher's
    /// raw JSON; `user` the publisher's verified identity.
    pub fn message(channel: &str, data: &str, user: Option<&str>) -> Bytes {
        carrying_data(b"{\"op\":\"message\",\"channel\":", channel, data, user)
    }

    /// `{"op":"direct",...}`: what a `send` becomes for its target.
    pub fn direct(from: &str, data: &str, user: Option<&str>) -> Bytes {
        carrying_data(b"{\"op\":\"direct\",\"from\":", from, data, user)
    }

    /// `<head>"<value>","data":<data>[,"user":"<user>"]}`: the frames that carry a publisher's
    /// data.
    fn carrying_data(head: &[u8], value: &str, data: &str, user: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(48 + value.len() + data.len());
        out.extend_from_slice(head);
        push_str(&mut out, value);
        out.extend_from_slice(b",\"data\":");
        push_data(&mut out, data);
        if let Some(user) = user {
            out.extend_from_slice(b",\"user\":");
            push_str(&mut out, user);
        }
        out.push(b'}');
        out.into()
    }

    pub fn unsubscribed(channel: &str, reason: &str) -> Bytes {
        let mut out = Vec::with_capacity(64 + channel.len());
        out.extend_from_slice(b"{\"op\":\"unsubscribed\",\"channel\":");
        push_str(&mut out, channel);
        out.extend_from_slice(b",\"reason\":");
        push_str(&mut out, reason);
        out.push(b'}');
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).expect("server frames are JSON")
    }

    #[test]
    fn decodes_history_ops_and_positions() {
        let f = decode(r#"{"op":"subscribe","channel":"c","since":{"offset":3,"epoch":"e"}}"#)
            .expect("frame");
        let expected = Some(Since { offset: 3, epoch: "e".into() });
        assert!(matches!(f.op, ClientOp::Subscribe { ref since, .. } if *since == expected));
        let f = decode(r#"{"op":"history","channel":"c","limit":5,"since":2}"#).expect("frame");
        assert!(matches!(f.op, ClientOp::History { limit: 5, since: Some(2), .. }));
        for bad in [
            r#"{"op":"history","channel":"c"}"#,
            r#"{"op":"history","channel":"c","limit":-1}"#,
            r#"{"op":"history","channel":"c","limit":1,"since":"x"}"#,
            r#"{"op":"subscribe","channel":"c","since":5}"#,
        ] {
            assert_eq!(
                decode(bad).map(|_| ()).map_err(|e| e.code),
                Err(ErrorCode::BadRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn decodes_presence_ops_with_their_bounds() {
        let f = decode(r#"{"op":"presence","channel":"c","id":1}"#).expect("frame");
        assert!(matches!(
            f.op,
            ClientOp::Presence {
                limit: presence::DEFAULT_PAGE,
                cursor: None,
                counts_only: false,
                ..
            }
        ));
        let f =
            decode(r#"{"op":"presence","channel":"c","limit":5,"cursor":"n:1","members":false}"#)
                .expect("frame");
        match f.op {
            ClientOp::Presence { limit: 5, cursor: Some(c), counts_only: true, .. } => {
                assert_eq!(c, "n:1")
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"op":"presence"}"#,
            r#"{"op":"presence","channel":"c","limit":0}"#,
            r#"{"op":"presence","channel":"c","limit":1001}"#,
            r#"{"op":"presence","channel":"c","cursor":5}"#,
            r#"{"op":"presence","channel":"c","members":"no"}"#,
        ] {
            assert_eq!(
                decode(bad).map(|_| ()).map_err(|e| e.code),
                Err(ErrorCode::BadRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn decodes_every_op() {
        let f = decode(r#"{"op":"subscribe","channel":"room.42","id":1}"#).expect("frame");
        assert!(
            matches!(f.op, ClientOp::Subscribe { ref channel, since: None } if channel == "room.42")
        );
        assert_eq!(f.id.map(|i| i.get()), Some("1"));
        let f = decode(r#"{"op":"publish","channel":"r","data":{"text":"hi"},"id":"x"}"#)
            .expect("frame");
        match f.op {
            ClientOp::Publish { channel, data } => {
                assert_eq!(channel, "r");
                assert_eq!(data.get(), r#"{"text":"hi"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(r#"{"op":"ping"}"#).expect("ping").op, ClientOp::Ping));
        assert!(matches!(
            decode(r#"{"op":"send","to":"n1:7","data":1}"#).expect("send").op,
            ClientOp::Send { .. }
        ));
        assert!(matches!(
            decode(r#"{"op":"unsubscribe","channel":"a"}"#).expect("unsub").op,
            ClientOp::Unsubscribe { .. }
        ));
    }

    #[test]
    fn original_frame_shape_is_a_publish() {
        let f = decode(r#"{"channel":"room.1","payload":"hello"}"#).expect("frame");
        assert!(
            matches!(f.op, ClientOp::Publish { ref channel, data } if channel == "room.1" && data.get() == "\"hello\"")
        );
    }

    #[test]
    fn bad_frames_are_bad_requests_with_their_id() {
        for (text, id, needle) in [
            ("not json", None, "not JSON"),
            ("[1,2]", None, "object"),
            (r#"{"id":3}"#, Some("3"), "missing field `op`"),
            (r#"{"op":"dance","id":4}"#, Some("4"), "unknown op"),
            (r#"{"op":"subscribe","channel":5,"id":5}"#, Some("5"), "must be a string"),
            (r#"{"op":"publish","channel":"a","id":6}"#, Some("6"), "`data`"),
            (r#"{"op":7}"#, None, "`op` must be a string"),
            (r#"{"op":"ping","id":{}}"#, None, "`id`"),
            ("{\"op\":\"ping\"", None, "not valid JSON"),
        ] {
            let e = decode(text).expect_err(text);
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(e.id.map(|i| i.get()), id, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }

    /// Mutations of valid frames (bytes flipped, cut, duplicated) decode or fail with
    /// `bad_request`; they never panic.
    #[test]
    fn mutated_frames_never_panic() {
        let valid = [
            r#"{"op":"publish","channel":"room.42","data":{"text":"hi","n":[1,2.5,null]},"id":3}"#,
            r#"{"op":"send","to":"n1:7","data":"\u00e9\n","id":"x"}"#,
            r#"{"channel":"a","payload":[{"deep":{"er":[true,false]}}]}"#,
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..30_000 {
            let mut bytes = valid[round % valid.len()].as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len().max(1);
                match next() % 3 {
                    0 => bytes[i] = next() as u8,
                    1 => bytes.truncate(i),
                    _ => {
                        let b = bytes.get(i).copied().unwrap_or(b'{');
                        bytes.insert(i, b);
                    }
                }
                if bytes.is_empty() {
                    bytes.push(b'{');
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if let Err(e) = decode(text) {
                    assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
                }
            }
        }
    }

    #[test]
    fn escaped_strings_decode() {
        let f = decode(r#"{"op":"subscribe","channel":"a\u002eb"}"#).expect("frame");
        assert!(
            matches!(f.op, ClientOp::Subscribe { ref channel, since: None } if channel == "a.b")
        );
    }

    #[test]
    fn raw_newlines_in_data_never_reach_the_wire() {
        let frame = encode::message("r", "{\n\"a\":\n\"x\\ny\"}", None);
        assert!(!frame.contains(&b'\n'));
        assert_eq!(json(&frame)["data"], serde_json::json!({"a":"x\ny"}));
        assert!(!encode::direct("n:1", "[1,\n2]", None).contains(&b'\n'));
    }

    #[test]
    fn server_frames_are_valid_json() {
        let id = RawValue::from_string("\"q\"".into()).expect("raw");
        assert_eq!(json(&encode::ok(Some(&id))), serde_json::json!({"op":"ok","id":"q"}));
        assert_eq!(json(&encode::pong(None)), serde_json::json!({"op":"pong"}));
        assert_eq!(
            json(&encode::error(Some(&id), ErrorCode::NoRoute, "no \"rule\"")),
            serde_json::json!({"op":"error","id":"q","code":"no_route","message":"no \"rule\""})
        );
        assert_eq!(
            json(&encode::message("r.1", r#"{"a":[1]}"#, Some("al\"ice"))),
            serde_json::json!({"op":"message","channel":"r.1","data":{"a":[1]},"user":"al\"ice"})
        );
        assert_eq!(
            json(&encode::direct("n:1", "2", None)),
            serde_json::json!({"op":"direct","from":"n:1","data":2})
        );
        assert_eq!(
            json(&encode::welcome("n:1", "n")),
            serde_json::json!({"op":"welcome","conn":"n:1","node":"n"})
        );
        assert_eq!(
            json(&encode::unsubscribed("a", "forbidden")),
            serde_json::json!({"op":"unsubscribed","channel":"a","reason":"forbidden"})
        );
    }
}
