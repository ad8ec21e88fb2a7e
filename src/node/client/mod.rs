//! One WebSocket client's protocol state: its identity, its subscriptions and its rate limits.
//!
//! It turns client frames into operations on the node and queues the replies to its outbox.
//! It holds no socket: the gateway's session reads frames and keeps the connection alive, and
//! hands each text frame here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use metrics::Gauge;
use serde_json::value::RawValue;

use super::bucket::Bucket;
use super::ops::{self, Caller, OpError};
use super::presence::Seat;
use super::{Membership, Node};
use crate::auth::Identity;
use crate::channel::ChannelName;
use crate::hub::TopicKey;
use crate::outbox::Outbox;
use crate::protocol::presence as presence_frames;
use crate::protocol::{self, encode, position, wire, ClientOp, ErrorCode, Since};
use crate::routing::PresenceSettings;
use switchyard_backend::Member;

mod history;

/// Failed `?channel=` entries answered one by one; the rest are summed up in one error.
const QUERY_ERRORS_SHOWN: usize = 16;

/// What an operation left for `on_text` to answer.
enum Done {
    /// A plain `ok` (when the frame had an id).
    Answer,
    /// The operation answered itself (a position, a history page, a recovery).
    Answered,
}

pub(crate) struct Client {
    member: Membership,
    /// The connection id clients see: `<node>:<16 hex digits of the key>`.
    id: String,
    user: Option<Arc<str>>,
    expires_at: Option<SystemTime>,
    subscriptions: Subscriptions,
    /// Publishes and sends.
    publish_bucket: Bucket,
    /// Subscribes and unsubscribes, `?channel=` included.
    subscribe_bucket: Bucket,
}

impl Client {
    /// Registers a client whose frames go to `outbox`.
    pub(crate) fn new(node: &Arc<Node>, identity: Identity, outbox: Arc<Outbox>) -> Client {
        let member = node.join(outbox);
        let id = ops::conn_id(node.id(), member.key());
        let limits = &node.live().limits;
        Client {
            id,
            user: identity.user,
            expires_at: identity.expires_at,
            subscriptions: Subscriptions::new(node.metrics().subscriptions.clone()),
            publish_bucket: Bucket::full(limits.publish_burst),
            subscribe_bucket: Bucket::full(limits.subscribe_burst),
            member,
        }
    }

    fn node(&self) -> &Arc<Node> {
        self.member.node()
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        self.member.outbox()
    }

    /// When the client's token expires.
    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    fn reply(&self, json: Bytes) {
        self.outbox().send(wire::text_frame(&json));
    }

    fn reply_error(&self, id: Option<&RawValue>, code: ErrorCode, message: &str) {
        crate::metrics::Metrics::client_error(code);
        self.reply(encode::error(id, code, message));
    }

    /// Answers a frame that is not JSON text.
    pub(crate) fn refuse_binary(&self) {
        let message = "binary frames are not supported; send JSON text frames";
        self.reply_error(None, ErrorCode::BadRequest, message);
    }

    /// Sends the welcome and subscribes the `?channel=` list, answering failures (each draws
    /// a subscribe token). `since` holds `?since=` entries (`channel:offset:epoch`).
    pub(crate) async fn start(&mut self, channels: Vec<String>, since: Vec<String>) {
        self.reply(encode::welcome(&self.id, self.node().id()));
        let positions: HashMap<&str, Since<'_>> =
            since.iter().filter_map(|e| position::parse_since_entry(e)).collect();
        let mut failed = 0;
        for channel in &channels {
            let since = positions.get(channel.as_str());
            let subscribed = match self.take_subscribe_token() {
                Ok(()) => self.subscribe(channel, since, None).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = subscribed {
                failed += 1;
                // A long bad list must not fill the outbox before the client can read it.
                if failed <= QUERY_ERRORS_SHOWN {
                    self.reply_error(None, e.code, &format!("{channel}: {}", e.message));
                }
            }
        }
        if failed > QUERY_ERRORS_SHOWN {
            let more = failed - QUERY_ERRORS_SHOWN;
            let message = format!("{more} more channels in ?channel= failed");
            self.reply_error(None, ErrorCode::BadRequest, &message);
        }
    }

    /// Handles one text frame (already checked to be UTF-8) and queues its answer.
    pub(crate) async fn on_text(&mut self, text: &str) {
        let frame = match protocol::decode(text) {
            Ok(f) => f,
            Err(e) => return self.reply_error(e.id, e.code, &e.message),
        };
        let id = frame.id;
        let result = match frame.op {
            ClientOp::Ping => {
                self.reply(encode::pong(id));
                return;
            }
            ClientOp::Subscribe { channel, since } => match self.take_subscribe_token() {
                Ok(()) => self.subscribe(&channel, since.as_ref(), id).await,
                Err(e) => Err(e),
            },
            ClientOp::Unsubscribe { channel } => match self.take_subscribe_token() {
                Ok(()) => self.unsubscribe(&channel).await.map(|()| Done::Answer),
                Err(e) => Err(e),
            },
            ClientOp::Publish { channel, data } => self.publish(&channel, data, id).await,
            ClientOp::Send { to, data } => self.send(&to, data).await.map(|()| Done::Answer),
            ClientOp::History { channel, limit, since } => {
                self.history(&channel, limit, since, id).await
            }
            ClientOp::Presence { channel, limit, cursor, counts_only } => {
                self.presence(&channel, limit, cursor.as_deref(), counts_only, id).await
            }
        };
        match result {
            Ok(Done::Answer) if id.is_some() => self.reply(encode::ok(id)),
            Ok(_) => {}
            Err(e) => self.reply_error(id, e.code, &e.message),
        }
    }

    async fn publish(
        &mut self,
        channel: &str,
        data: &RawValue,
        id: Option<&RawValue>,
    ) -> Result<Done, OpError> {
        self.take_publish_token()?;
        let caller = Caller::Client { user: self.user.as_deref() };
        match ops::publish(self.node(), caller, channel, data).await? {
            None => Ok(Done::Answer),
            Some(_) if id.is_none() => Ok(Done::Answered),
            Some(position) => {
                self.reply(position::ok_at(id, &position, None));
                Ok(Done::Answered)
            }
        }
    }

    async fn send(&mut self, to: &str, data: &RawValue) -> Result<(), OpError> {
        ops::may_send(self.node().send_permission(), self.user.as_deref())?;
        self.take_publish_token()?;
        ops::send(self.node(), &self.id, self.user.as_deref(), to, data).await
    }

    fn take_publish_token(&mut self) -> Result<(), OpError> {
        let limits = &self.member.node().live().limits;
        if self.publish_bucket.take(limits.publish_rate, limits.publish_burst) {
            return Ok(());
        }
        let message = format!("over {} publishes per second", limits.publish_rate);
        Err(OpError::new(ErrorCode::RateLimited, message))
    }

    /// Every subscribe or unsubscribe may cost a backend command, so they are paced too.
    fn take_subscribe_token(&mut self) -> Result<(), OpError> {
        let limits = &self.member.node().live().limits;
        if self.subscribe_bucket.take(limits.subscribe_rate, limits.subscribe_burst) {
            return Ok(());
        }
        let message =
            format!("over {} subscribes and unsubscribes per second", limits.subscribe_rate);
        Err(OpError::new(ErrorCode::RateLimited, message))
    }

    /// Subscribes `channel`; on a history channel, answers with its position itself (and
    /// recovers from `since` when given).
    async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<&Since<'_>>,
        id: Option<&RawValue>,
    ) -> Result<Done, OpError> {
        let name = ops::parse_channel(channel)?;
        if self.subscriptions.map.contains_key(&name) {
            return Ok(Done::Answer);
        }
        let live = self.node().live_full();
        let resolved = ops::route(&live.rules, &name)?;
        if !resolved.may_subscribe(self.user.as_deref()) {
            return Err(ops::forbidden("subscribing", &name, self.user.as_deref()));
        }
        if self.subscriptions.map.len() >= live.limits.max_subscriptions {
            return Err(OpError::new(
                ErrorCode::RateLimited,
                format!("subscription limit of {} channels reached", live.limits.max_subscriptions),
            ));
        }
        let topic = TopicKey {
            backend: resolved.route.backend,
            channel: Arc::from(resolved.backend_channel(&name)),
        };
        if since.is_some() && resolved.route.history.is_none() {
            ops::history_of(&resolved, &name)?;
        }
        // Present before subscribed: a join the backend did not take fails the subscribe, and
        // a subscribe that fails drops the seat, which takes the member out again.
        let seat = match resolved.route.presence {
            Some(settings) => Some(self.take_seat(&name, &topic, settings).await?),
            None => None,
        };
        let done = match resolved.route.history {
            Some(settings) => self.subscribe_kept(name.clone(), topic, settings, since, id).await?,
            None => {
                self.member.hold(&topic).await.map_err(ops::unavailable)?;
                self.subscriptions.insert(name.clone(), topic);
                Done::Answer
            }
        };
        if let Some(seat) = seat {
            self.subscriptions.seats.insert(name, seat);
        }
        Ok(done)
    }

    /// Joins `name`'s presence as this connection.
    async fn take_seat(
        &self,
        name: &ChannelName,
        topic: &TopicKey,
        settings: PresenceSettings,
    ) -> Result<Seat, OpError> {
        // An empty `sub` is no identity to show.
        let user = self.user.as_deref().filter(|u| !u.is_empty());
        let member = Member::new(&self.id, user);
        let presence = self.node().presence();
        presence.join(topic, name.as_str(), settings, member).await.map_err(ops::unavailable)
    }

    /// `{"op":"presence",…}`: `channel`'s counts and a page of its members.
    async fn presence(
        &mut self,
        channel: &str,
        limit: usize,
        cursor: Option<&str>,
        counts_only: bool,
        id: Option<&RawValue>,
    ) -> Result<Done, OpError> {
        self.take_subscribe_token()?;
        let caller = Caller::Client { user: self.user.as_deref() };
        let limit = if counts_only { 0 } else { limit };
        let (name, roster) = ops::presence(self.node(), caller, channel, cursor, limit).await?;
        self.reply(presence_frames::answer(id, name.as_str(), &roster, counts_only));
        Ok(Done::Answered)
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<(), OpError> {
        let name = ops::parse_channel(channel)?;
        if let Some(seat) = self.subscriptions.seats.remove(&name) {
            seat.leave().await;
        }
        if let Some(topic) = self.subscriptions.remove(&name) {
            self.member.release(&topic).await;
        }
        Ok(())
    }

    /// After a reload: ends subscriptions the new rules no longer allow, and moves those whose
    /// backend channel changed.
    pub(crate) async fn revalidate(&mut self) {
        let live = self.node().live_full();
        let names: Vec<ChannelName> = self.subscriptions.map.keys().cloned().collect();
        for name in names {
            let verdict = match live.rules.resolve(&name) {
                None => Err("no_route"),
                Some(r) if !r.may_subscribe(self.user.as_deref()) => Err("forbidden"),
                Some(r) => Ok((
                    TopicKey {
                        backend: r.route.backend,
                        channel: Arc::from(r.backend_channel(&name)),
                    },
                    r.route.presence,
                )),
            };
            let Some(old) = self.subscriptions.map.get(&name).cloned() else { continue };
            let reason = match verdict {
                Ok((new, _)) if new == old => continue,
                Ok((new, presence)) => match self.member.hold(&new).await {
                    Ok(()) => {
                        self.subscriptions.insert(name.clone(), new.clone());
                        self.member.release(&old).await;
                        // The member moves with the subscription; should the new channel's
                        // join fail, the connection is merely not shown there.
                        self.subscriptions.seats.remove(&name);
                        if let Some(settings) = presence {
                            match self.take_seat(&name, &new, settings).await {
                                Ok(seat) => {
                                    self.subscriptions.seats.insert(name.clone(), seat);
                                }
                                Err(e) => {
                                    tracing::warn!(channel = %name, error = %e.message, "presence join after a reload failed")
                                }
                            }
                        }
                        continue;
                    }
                    Err(_) => "unavailable",
                },
                Err(reason) => reason,
            };
            self.subscriptions.remove(&name);
            self.member.release(&old).await;
            self.reply(encode::unsubscribed(name.as_str(), reason));
        }
    }

    /// Leaves the node in order: socket, then backend subscriptions, then the key.
    pub(crate) async fn leave(self) {
        let Client { member, subscriptions, .. } = self;
        drop(subscriptions);
        member.leave().await;
    }
}

/// Client channel → the topic it is carried on, counted in `switchyard_subscriptions` for as
/// long as it is held, however the connection ends.
struct Subscriptions {
    map: HashMap<ChannelName, TopicKey>,
    /// The presence seats of those on presence routes; dropped with the subscription.
    seats: HashMap<ChannelName, Seat>,
    gauge: Gauge,
}

impl Subscriptions {
    fn new(gauge: Gauge) -> Subscriptions {
        Subscriptions { map: HashMap::new(), seats: HashMap::new(), gauge }
    }

    fn insert(&mut self, name: ChannelName, topic: TopicKey) {
        if self.map.insert(name, topic).is_none() {
            self.gauge.increment(1.0);
        }
    }

    fn remove(&mut self, name: &ChannelName) -> Option<TopicKey> {
        self.seats.remove(name);
        let topic = self.map.remove(name)?;
        self.gauge.decrement(1.0);
        Some(topic)
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.gauge.decrement(self.map.len() as f64);
    }
}
