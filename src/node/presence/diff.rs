//! Join and leave, coalesced per channel over [`WINDOW`] before they go to subscribers.
//!
//! A storm of joins must cost each subscriber a few frames per second, not a frame per join:
//! so each node gathers its own changes per channel and, every [`WINDOW`], publishes one
//! `presence_diff` per channel through the channel's backend (chunked at [`MEMBERS_PER_FRAME`]
//! members, so one frame never outgrows a subscriber's queue). Every node receives it like a
//! message and fans it out to its subscribers. A member that joins and leaves within one
//! window is not mentioned at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::Member;

use crate::hub::TopicKey;
use crate::protocol::presence as frames;

/// How long changes are gathered before a channel's subscribers hear of them.
pub(crate) const WINDOW: Duration = Duration::from_millis(250);

/// Most members one `presence_diff` frame names (about 25 KB): a storm becomes several frames,
/// each small enough for any subscriber's queue.
pub(crate) const MEMBERS_PER_FRAME: usize = 500;

/// One channel's changes since the last flush.
#[derive(Default)]
struct Changes {
    /// The client channel name the frames carry.
    channel: Arc<str>,
    /// conn → member, so a storm's cancellations cost O(1) each.
    join: HashMap<Arc<str>, Member>,
    leave: HashMap<Arc<str>, Member>,
}

/// Every channel's changes since the last flush.
#[derive(Default)]
pub(crate) struct Pending {
    channels: HashMap<TopicKey, Changes>,
}

impl Pending {
    /// Notes joins and leaves on `topic` (client channel `channel`). A join cancels a pending
    /// leave of the same connection and the other way round: subscribers saw neither.
    pub(crate) fn note(
        &mut self,
        topic: &TopicKey,
        channel: &Arc<str>,
        joined: Vec<Member>,
        left: Vec<Member>,
    ) {
        if joined.is_empty() && left.is_empty() {
            return;
        }
        let c = self
            .channels
            .entry(topic.clone())
            .or_insert_with(|| Changes { channel: channel.clone(), ..Changes::default() });
        for m in joined {
            if c.leave.remove(&m.conn).is_none() {
                c.join.insert(m.conn.clone(), m);
            }
        }
        for m in left {
            if c.join.remove(&m.conn).is_none() {
                c.leave.insert(m.conn.clone(), m);
            }
        }
    }

    /// Takes everything gathered: each topic with the frames that tell its subscribers.
    pub(crate) fn take(&mut self) -> Vec<(TopicKey, Vec<Bytes>)> {
        std::mem::take(&mut self.channels)
            .into_iter()
            .filter(|(_, c)| !c.join.is_empty() || !c.leave.is_empty())
            .map(|(topic, c)| (topic, encode(&c)))
            .collect()
    }
}

/// The frames for one channel's changes, joins first, at most [`MEMBERS_PER_FRAME`] each.
fn encode(c: &Changes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let join: Vec<Member> = c.join.values().cloned().collect();
    let leave: Vec<Member> = c.leave.values().cloned().collect();
    let (mut join, mut leave) = (join.as_slice(), leave.as_slice());
    while !join.is_empty() || !leave.is_empty() {
        let j = join.len().min(MEMBERS_PER_FRAME);
        let l = leave.len().min(MEMBERS_PER_FRAME - j);
        frames.push(frames::diff(&c.channel, &join[..j], &leave[..l]));
        join = &join[j..];
        leave = &leave[l..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> TopicKey {
        TopicKey { backend: 0, channel: Arc::from("room.1") }
    }

    fn m(conn: &str) -> Member {
        Member::new(conn, None)
    }

    fn members(frame: &Bytes, side: &str) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(frame).expect("JSON");
        v[side]
            .as_array()
            .expect("list")
            .iter()
            .map(|m| m["conn"].as_str().expect("conn").to_string())
            .collect()
    }

    #[test]
    fn a_join_and_leave_in_one_window_cancel_out() {
        let mut p = Pending::default();
        let ch: Arc<str> = Arc::from("room.1");
        p.note(&topic(), &ch, vec![m("a"), m("b")], vec![]);
        p.note(&topic(), &ch, vec![], vec![m("a"), m("c")]);
        let taken = p.take();
        assert_eq!(taken.len(), 1);
        let frames = &taken[0].1;
        assert_eq!(frames.len(), 1);
        assert_eq!(members(&frames[0], "join"), ["b"]);
        assert_eq!(members(&frames[0], "leave"), ["c"]);
        assert!(p.take().is_empty(), "taken once");
        p.note(&topic(), &ch, vec![m("x")], vec![m("x")]);
        assert!(p.take().is_empty(), "nothing to tell");
    }

    #[test]
    fn a_storm_is_split_into_bounded_frames() {
        let mut p = Pending::default();
        let ch: Arc<str> = Arc::from("room.1");
        let joins: Vec<Member> = (0..1200).map(|i| m(&format!("j{i}"))).collect();
        let leaves: Vec<Member> = (0..100).map(|i| m(&format!("l{i}"))).collect();
        p.note(&topic(), &ch, joins, leaves);
        let frames = p.take().remove(0).1;
        assert_eq!(frames.len(), 3, "1300 members, 500 per frame");
        let named: usize =
            frames.iter().map(|f| members(f, "join").len() + members(f, "leave").len()).sum();
        assert_eq!(named, 1300, "every member once");
        assert!(frames.iter().all(|f| f.len() < 30_000), "each frame stays small");
    }
}
