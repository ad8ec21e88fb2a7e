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
use crate::hub::TopicKey;
use crate::node::ops::{self, Caller, OpError};
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
        let page = match ops::read_history(&node, &topic, read, limit, settings).await {
            Ok(page) => page,
            Err(e) => {
                self.member.release(&topic).await;
                return Err(e);
            }
        };
        let recovered = since.map(|s| recoverable(s, &page, settings));
        let answer = id.is_some() || since.is_some();
        let mut at = Position { offset: page.top, epoch: page.epoch.clone() };
        self.member.promote(&topic, |buffered| {
            let replay = since.filter(|_| recovered == Some(true));
            let (frames, took_effect) = seam(id, &page, replay, recovered, answer, buffered);
            at = took_effect;
            frames
        });
        // Tells the hub's gap healing where this channel stands and how to read it.
        self.member.learn(&topic, at, settings.retention);
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

/// What the client's outbox gets when the hold-back ends, in order: the `ok` with the position
/// the subscription took effect at, the replay (when recovering), the held-back live messages.
fn seam(
    id: Option<&RawValue>,
    page: &Page,
    replay_after: Option<&Since<'_>>,
    recovered: Option<bool>,
    answer: bool,
    buffered: Vec<Bytes>,
) -> (Vec<Bytes>, Position) {
    // Held-back messages were published after the subscription took effect; the first of them
    // follows the last one before it, so the position is the one before it (offsets have no
    // holes). With none held back, nothing was published since the read.
    let first_live = buffered.first().and_then(|f| position::offset_of(wire::frame_payload(f)));
    let at = first_live.map_or(page.top, |o| o.saturating_sub(1).min(page.top));
    let took_effect = Position { offset: at, epoch: page.epoch.clone() };
    let mut out = Vec::with_capacity(1 + page.messages.len() + buffered.len());
    if answer {
        out.push(wire::text_frame(&position::ok_at(id, &took_effect, recovered)));
    }
    if let Some(since) = replay_after {
        for m in page.messages.iter().filter(|m| m.offset > since.offset && m.offset <= at) {
            let position = Position { offset: m.offset, epoch: page.epoch.clone() };
            out.push(wire::text_frame(&position::with_position(&m.payload, &position)));
        }
    }
    out.extend(buffered);
    (out, took_effect)
}
