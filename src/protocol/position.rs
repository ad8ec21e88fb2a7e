//! Frames of history channels: the position every message carries, positions clients send
//! back (`since`), and the `history` answer.
//!
//! A message on a history channel is the ordinary `message` frame with
//! `,"offset":N,"epoch":"E"` before its closing brace. The publisher's node frames the message
//! once without them (the backend assigns the offset), and each receiving node adds them once
//! per message, however many subscribers get it.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_backend::{Page, Position};

use super::{push_data, push_id, push_str};

/// A position a client sends back: "everything after `offset` of `epoch`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since<'a> {
    pub offset: u64,
    pub epoch: Cow<'a, str>,
}

/// Parses `{"offset":N,"epoch":"E"}`.
pub(crate) fn parse_since(raw: &RawValue) -> Result<Since<'_>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire<'b> {
        offset: u64,
        #[serde(borrow)]
        epoch: Cow<'b, str>,
    }
    serde_json::from_str::<Wire<'_>>(raw.get())
        .map(|w| Since { offset: w.offset, epoch: w.epoch })
        .map_err(|_| "field `since` must be {\"offset\": <integer>, \"epoch\": <string>}".into())
}

/// Parses one `?since=` entry, `<channel>:<offset>:<epoch>` (the channel may itself hold `:`).
pub fn parse_since_entry(entry: &str) -> Option<(&str, Since<'_>)> {
    let mut parts = entry.rsplitn(3, ':');
    let epoch = parts.next()?;
    let offset = parts.next()?.parse().ok()?;
    let channel = parts.next()?;
    if channel.is_empty() || epoch.is_empty() {
        return None;
    }
    Some((channel, Since { offset, epoch: Cow::Borrowed(epoch) }))
}

/// Appends `,"offset":N,"epoch":"E"`.
fn push_position(out: &mut Vec<u8>, position: &Position) {
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(position.offset.to_string().as_bytes());
    out.extend_from_slice(b",\"epoch\":");
    push_str(out, &position.epoch);
}

/// `frame` (a JSON object) with its position added before the closing brace.
pub fn with_position(frame: &[u8], position: &Position) -> Bytes {
    let body = frame.strip_suffix(b"}").unwrap_or(frame);
    let mut out = Vec::with_capacity(frame.len() + 40 + position.epoch.len());
    out.extend_from_slice(body);
    push_position(&mut out, position);
    out.push(b'}');
    out.into()
}

/// The offset a history frame made by [`with_position`] carries, read from its end.
pub fn offset_of(frame: &[u8]) -> Option<u64> {
    let key = b"\"offset\":";
    let at = frame.windows(key.len()).rposition(|w| w == key)? + key.len();
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&frame[at..at + digits]).ok()?.parse().ok()
}

/// `{"op":"ok","id":…,"offset":N,"epoch":"E"[,"recovered":b]}`: the answer to a publish or a
/// subscribe on a history channel.
pub fn ok_at(id: Option<&RawValue>, position: &Position, recovered: Option<bool>) -> Bytes {
    let mut out = Vec::with_capacity(64 + position.epoch.len());
    out.extend_from_slice(b"{\"op\":\"ok\"");
    push_id(&mut out, id);
    push_position(&mut out, position);
    if let Some(r) = recovered {
        out.extend_from_slice(if r { b",\"recovered\":true" } else { b",\"recovered\":false" });
    }
    out.push(b'}');
    out.into()
}

/// `{"status":"ok","offset":N,"epoch":"E"}`: the HTTP API's answer to a kept publish.
pub fn api_ok_at(position: &Position) -> Bytes {
    let mut out = Vec::with_capacity(48 + position.epoch.len());
    out.extend_from_slice(b"{\"status\":\"ok\"");
    push_position(&mut out, position);
    out.push(b'}');
    out.into()
}

/// The `data` and `user` of a stored `message` frame.
#[derive(Deserialize)]
struct StoredFrame<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
}

/// `{"op":"history","id":…,"channel":C,"epoch":E,"offset":TOP,"messages":[…]}`, each message
/// `{"offset":n,"data":D[,"user":U]}`, oldest first. Stored frames that do not parse (written
/// by something else) are left out rather than failing the whole answer.
pub fn history(id: Option<&RawValue>, channel: &str, page: &Page) -> Bytes {
    let size: usize = page.messages.iter().map(|m| m.payload.len() + 24).sum();
    let mut out = Vec::with_capacity(96 + channel.len() + size);
    out.extend_from_slice(b"{\"op\":\"history\"");
    push_id(&mut out, id);
    out.extend_from_slice(b",\"channel\":");
    push_str(&mut out, channel);
    let top = Position { offset: page.top, epoch: page.epoch.clone() };
    push_position(&mut out, &top);
    out.extend_from_slice(b",\"messages\":[");
    let mut first = true;
    for m in &page.messages {
        let Ok(frame) = serde_json::from_slice::<StoredFrame<'_>>(&m.payload) else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"offset\":");
        out.extend_from_slice(m.offset.to_string().as_bytes());
        out.extend_from_slice(b",\"data\":");
        push_data(&mut out, frame.data.get());
        if let Some(user) = &frame.user {
            out.extend_from_slice(b",\"user\":");
            push_str(&mut out, user);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out.into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_backend::Stored;

    use super::*;

    fn pos(offset: u64) -> Position {
        Position { offset, epoch: Arc::from("e1") }
    }

    #[test]
    fn positions_are_added_and_read_back() {
        let frame = br#"{"op":"message","channel":"c","data":{"offset":"x"}}"#;
        let with = with_position(frame, &pos(42));
        let v: serde_json::Value = serde_json::from_slice(&with).expect("json");
        assert_eq!((v["offset"].as_u64(), v["epoch"].as_str()), (Some(42), Some("e1")));
        assert_eq!(v["data"]["offset"], "x");
        assert_eq!(offset_of(&with), Some(42), "the position's offset, not the data's");
    }

    #[test]
    fn since_parses_from_frames_and_query_entries() {
        let raw: &RawValue = serde_json::from_str(r#"{"offset":7,"epoch":"ab"}"#).expect("raw");
        assert_eq!(parse_since(raw), Ok(Since { offset: 7, epoch: "ab".into() }));
        let bad: &RawValue = serde_json::from_str(r#"{"offset":-1,"epoch":"ab"}"#).expect("raw");
        assert!(parse_since(bad).is_err());
        let (c, s) = parse_since_entry("chat:room:1:12:ff00").expect("entry");
        assert_eq!((c, s.offset, &*s.epoch), ("chat:room:1", 12, "ff00"));
        assert_eq!(parse_since_entry("room:x:ff"), None);
        assert_eq!(parse_since_entry(":1:ff"), None);
    }

    #[test]
    fn history_pages_carry_offset_data_and_user() {
        let stored =
            |offset, frame: &str| Stored { offset, payload: Bytes::from(frame.to_string()) };
        let page = Page {
            epoch: Arc::from("e1"),
            top: 9,
            messages: vec![
                stored(8, r#"{"op":"message","channel":"c","data":[1],"user":"u"}"#),
                stored(9, r#"{"op":"message","channel":"c","data":{"a":2}}"#),
            ],
        };
        let raw: &RawValue = serde_json::from_str("3").expect("id");
        let v: serde_json::Value =
            serde_json::from_slice(&history(Some(raw), "c", &page)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"op":"history","id":3,"channel":"c","offset":9,"epoch":"e1",
                "messages":[{"offset":8,"data":[1],"user":"u"},{"offset":9,"data":{"a":2}}]})
        );
    }
}
