//! Frames of presence channels: the `presence` answer (counts and a page of members) and the
//! `presence_diff` pushed to subscribers when members join and leave.
//!
//! A member is `{"conn":C,"user":U}`, `user` left out for anonymous connections, as in
//! `message` frames.

use bytes::Bytes;
use serde_json::value::RawValue;
use switchyard_backend::{Member, Roster};

use super::{push_id, push_str};

/// Most members one `presence` answer lists (`limit`'s bound and the default page).
pub const MAX_PAGE: usize = 1000;

/// Members listed when a request names no `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// The page size a request asks for (`limit`, absent: [`DEFAULT_PAGE`]); `Err` says why it is
/// refused. Counts alone are asked for with `members: false`, not with a zero limit.
pub fn page_limit(limit: Option<u64>) -> Result<usize, String> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(format!(
            "field `limit` must be 1 to {MAX_PAGE}; ask for the counts alone with \"members\":false"
        )),
    }
}

/// Roughly what one member costs in a frame, for capacity hints.
const MEMBER_BYTES: usize = 48;

fn push_member(out: &mut Vec<u8>, m: &Member) {
    out.extend_from_slice(b"{\"conn\":");
    push_str(out, &m.conn);
    if let Some(user) = &m.user {
        out.extend_from_slice(b",\"user\":");
        push_str(out, user);
    }
    out.push(b'}');
}

fn push_members<'m>(out: &mut Vec<u8>, members: impl IntoIterator<Item = &'m Member>) {
    out.push(b'[');
    for (i, m) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_member(out, m);
    }
    out.push(b']');
}

/// Counts, then (unless `counts_only`) the page and `next_cursor` while more pages remain.
fn push_roster(out: &mut Vec<u8>, channel: &str, roster: &Roster, counts_only: bool) {
    out.extend_from_slice(b",\"channel\":");
    push_str(out, channel);
    out.extend_from_slice(format!(",\"connections\":{}", roster.connections).as_bytes());
    out.extend_from_slice(format!(",\"users\":{}", roster.users).as_bytes());
    if counts_only {
        return;
    }
    out.extend_from_slice(b",\"members\":");
    push_members(out, &roster.members);
    if let Some(next) = &roster.next {
        out.extend_from_slice(b",\"next_cursor\":");
        push_str(out, next);
    }
}

/// `{"op":"presence","id":…,"channel":C,"connections":N,"users":M[,"members":[…][,"next_cursor":X]]}`.
pub fn answer(id: Option<&RawValue>, channel: &str, roster: &Roster, counts_only: bool) -> Bytes {
    let mut out = Vec::with_capacity(96 + channel.len() + roster.members.len() * MEMBER_BYTES);
    out.extend_from_slice(b"{\"op\":\"presence\"");
    push_id(&mut out, id);
    push_roster(&mut out, channel, roster, counts_only);
    out.push(b'}');
    out.into()
}

/// `{"op":"presence_diff","channel":C,"join":[…],"leave":[…]}`.
pub fn diff(channel: &str, join: &[Member], leave: &[Member]) -> Bytes {
    let members = join.len() + leave.len();
    let mut out = Vec::with_capacity(64 + channel.len() + members * MEMBER_BYTES);
    out.extend_from_slice(b"{\"op\":\"presence_diff\",\"channel\":");
    push_str(&mut out, channel);
    out.extend_from_slice(b",\"join\":");
    push_members(&mut out, join);
    out.extend_from_slice(b",\"leave\":");
    push_members(&mut out, leave);
    out.push(b'}');
    out.into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).expect("valid JSON")
    }

    #[test]
    fn answers_and_diffs_are_the_documented_json() {
        let roster = Roster {
            connections: 3,
            users: 1,
            members: vec![Member::new("n:1", Some("al\"ice")), Member::new("n:2", None)],
            next: Some(Arc::from("n:2")),
            expired: vec![],
        };
        let id = serde_json::value::RawValue::from_string("7".into()).expect("raw");
        let a = json(&answer(Some(&id), "room.1", &roster, false));
        assert_eq!(
            a,
            serde_json::json!({"op":"presence","id":7,"channel":"room.1","connections":3,
                "users":1,"members":[{"conn":"n:1","user":"al\"ice"},{"conn":"n:2"}],
                "next_cursor":"n:2"})
        );
        let counts = json(&answer(None, "room.1", &roster, true));
        assert_eq!(
            counts,
            serde_json::json!({"op":"presence","channel":"room.1","connections":3,"users":1})
        );
        let d = json(&diff("room.1", &roster.members[..1], &roster.members[1..]));
        assert_eq!(
            d,
            serde_json::json!({"op":"presence_diff","channel":"room.1",
                "join":[{"conn":"n:1","user":"al\"ice"}],"leave":[{"conn":"n:2"}]})
        );
    }
}
