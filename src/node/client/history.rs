//! A client on history channels: subscribing with its position, recovering what it missed,
//! and reading history.
//!
//! Recovery is all or nothing. The subscription takes effect with live messages held back
//! (see `hub::history`); then one history read tells whether every message after the client's
//! position is still kept (same epoch, none trimmed, at most `recovery_max`). If so, the client
//! gets `recovered: true`, the missed messages and then the held-back live ones; the live ones
//! start right after the last replayed offset because offsets have no holes, so the seam has
//! neither a gap nor a duplicate. If not, `recovered: false` and only live messages follow.

use bytes::Bytes;
use serde_json::value::RawValue;
use switchyard_backend::{Page, Position};

use super::{Client, Done};
use crate::channel::ChannelName;
use crate::hub::{Settled, TopicKey};
use crate::node::ops::{self, Caller, OpError, Purpose};
use crate::protocol::{position, wire, Since};
use crate::routing::HistorySettings;

/// Whether `page` (read with `since` = the client's offset) holds every message the client
/// missed, and no more than it may be given.
fn recoverable(since: &Since<'_>, page: &Page, settings: HistorySettings) -> bool {
    if *since.epoch != *page.epoch || since.offset > page.top {
        return false;
    }
    let missed = page.top - since.offset;
    if missed > settings.recovery_max as u64 {
        return false;
    }
    let kept = page.messages.len() as u64 == missed;
    let contiguous = page.messages.first().is_none_or(|m| m.offset == since.offset + 1);
    kept && contiguous
}

impl Client {
    /// Subscribes a history channel: answers `ok` with the position the subscription took
    /// effect at (always when recovering, else when the frame had an id), replays what was
    /// missed when it can, then lets live messages through.
    pub(super) async fn subscribe_kept(
        &mut self,
        name: ChannelName,
        topic: TopicKey,
        settings: HistorySettings,
        since: Option<&Since<'_>>,
        id: Option<&RawValue>,
    ) -> Result<Done, OpError> {
        let Some(_buffer) = self.member.hold_buffered(&topic).await.map_err(ops::unavailable)?
        else {
            // Held already under another name: its messages flow, there is no seam to make.
            self.subscriptions.insert(name, topic);
            return Ok(Done::Answer);
        };
        // One more than may be recovered, so a read that comes back full means "too many".
        let limit = since.map_or(0, |_| settings.recovery_max.saturating_add(1));
        let read = since.map(|s| s.offset);
        let node = self.node().clone();
        // First a page another recovering client may already have read; when it turns out
        // older than what this node has delivered, a read of our own, which cannot be.
        for fresh in [false, true] {
            let purpose = Purpose::Recovery { any_age: !fresh };
            let page =
                match ops::read_history(&node, &topic, read, limit, settings.retention, purpose)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        self.member.release(&topic).await;
                        return Err(e);
                    }
                };
            let recovered = since.map(|s| recoverable(s, &page, settings));
            let answer = Answer { id, recovered, send: id.is_some() || since.is_some() };
            let replay = since.filter(|_| recovered == Some(true));
            let settled = self.member.promote(&topic, settings.retention, |buffered, delivered| {
                seam(&answer, &page, replay, fresh, buffered, delivered)
            });
            if settled {
                break;
            }
        }
        self.subscriptions.insert(name, topic);
        Ok(Done::Answered)
    }

    /// `{"op":"history",…}`: at most `limit` kept messages of `channel`, oldest first.
    pub(super) async fn history(
        &mut self,
        channel: &str,
        limit: usize,
        since: Option<u64>,
        id: Option<&RawValue>,
    ) -> Result<Done, OpError> {
        self.take_subscribe_token()?;
        let caller = Caller::Client { user: self.user.as_deref() };
        let (name, page) = ops::history(self.node(), caller, channel, limit, since).await?;
        self.reply(position::history(id, name.as_str(), &page));
        Ok(Done::Answered)
    }
}

/// The `ok` a subscribe on a history channel gets.
struct Answer<'a> {
    id: Option<&'a RawValue>,
    recovered: Option<bool>,
    /// Whether to send it at all (always when recovering, else only for frames with an id).
    send: bool,
}

/// What the client's outbox gets when the hold-back ends, in order: the `ok` with the seam
/// position, the replay (when recovering), the held-back live messages; and the seam position.
///
/// The seam is the last offset this client gets from the page rather than live: just before
/// the first held-back message, or, with none held back, the last one this node delivered
/// (anything newer reaches it live, in order, through the node's cursor), or, when the node
/// has delivered nothing of this epoch, the page's top (the cursor then settles there, so
/// live copies of replayed messages are dropped). A `page` that is not `fresh` (shared with
/// another reader) that does not reach the seam, or is of another epoch than what the node
/// delivered, is given back: the caller reads again.
fn seam(
    answer: &Answer<'_>,
    page: &Page,
    replay_after: Option<&Since<'_>>,
    fresh: bool,
    buffered: Vec<Bytes>,
    delivered: Option<Position>,
) -> Result<Settled, Vec<Bytes>> {
    // The first held-back *message*: frames without a position (`presence_diff`) may come
    // before it.
    let first_live = buffered.iter().find_map(|f| position::offset_of(wire::frame_payload(f)));
    let same_epoch = delivered.as_ref().is_some_and(|d| d.epoch == page.epoch);
    let at = match (first_live, &delivered) {
        (Some(first), _) => first.saturating_sub(1),
        (None, Some(d)) if same_epoch => d.offset,
        _ => page.top,
    };
    let stale = at > page.top || (delivered.is_some() && !same_epoch);
    if stale && !fresh {
        return Err(buffered);
    }
    let at = at.min(page.top);
    let took_effect = Position { offset: at, epoch: page.epoch.clone() };
    let mut out = Vec::with_capacity(1 + page.messages.len() + buffered.len());
    if answer.send {
        let ok = position::ok_at(answer.id, &took_effect, answer.recovered);
        out.push(wire::text_frame(&ok));
    }
    if let Some(since) = replay_after {
        for m in page.messages.iter().filter(|m| m.offset > since.offset && m.offset <= at) {
            let position = Position { offset: m.offset, epoch: page.epoch.clone() };
            out.push(wire::text_frame(&position::with_position(&m.payload, &position)));
        }
    }
    out.extend(buffered);
    // A client whose position is ahead of this node (it comes from a node that was ahead)
    // must not get the messages in between again when they arrive here live.
    let floor = match replay_after {
        Some(s) if *s.epoch == *page.epoch && s.offset > at => {
            Position { offset: s.offset, epoch: page.epoch.clone() }
        }
        _ => took_effect.clone(),
    };
    Ok(Settled { frames: out, at: took_effect, floor })
}
