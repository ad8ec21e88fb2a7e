//! Publish and send, shared by WebSocket sessions and the HTTP API.

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use switchyard_backend::{BackendError, Page, Position, Retention, Roster};

use super::{Live, Node};
use crate::channel::ChannelName;
use crate::config::SendPermission;
use crate::hub::{ConnKey, TopicKey};
use crate::protocol::{encode, ErrorCode};
use crate::routing::{HistorySettings, Resolved, Rules};

/// A refused operation, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl OpError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> OpError {
        OpError { code, message: message.into() }
    }
}

/// Who is asking: a WebSocket client (subject to route permissions) or the HTTP API (trusted
/// by its API key).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller<'a> {
    Client { user: Option<&'a str> },
    Api,
}

impl Caller<'_> {
    fn user(&self) -> Option<&str> {
        match self {
            Caller::Client { user } => *user,
            Caller::Api => None,
        }
    }
}

/// A backend that could not confirm the operation: `unavailable`, which clients must read as
/// "not known to have happened" (a retry may duplicate it).
pub(crate) fn unavailable(e: BackendError) -> OpError {
    OpError::new(ErrorCode::Unavailable, e.to_string())
}

pub(crate) fn parse_channel(channel: &str) -> Result<ChannelName, OpError> {
    ChannelName::parse(channel).map_err(|e| OpError::new(ErrorCode::InvalidChannel, e.to_string()))
}

/// Who was refused, as error messages name them.
fn who(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user {u:?}"),
        None => "anonymous clients".to_string(),
    }
}

pub(crate) fn forbidden(action: &str, channel: &ChannelName, user: Option<&str>) -> OpError {
    let who = who(user);
    OpError::new(ErrorCode::Forbidden, format!("{action} on {channel} is not allowed for {who}"))
}

/// The route `name` takes: `no_route` when none matches, `forbidden` when the route cannot
/// carry this channel without sharing a backend channel with another (see `Resolved::refusal`).
pub(crate) fn route<'r, 'c>(
    rules: &'r Rules,
    name: &'c ChannelName,
) -> Result<Resolved<'r, 'c>, OpError> {
    let resolved = rules.resolve(name).ok_or_else(|| {
        OpError::new(ErrorCode::NoRoute, format!("no route matches channel {name}"))
    })?;
    if let Some(why) = resolved.refusal() {
        return Err(OpError::new(ErrorCode::Forbidden, format!("{name} is refused: {why}")));
    }
    Ok(resolved)
}

/// Refuses `data` that is not I-JSON, which subscribers' parsers might choke on.
fn valid_data(data: &RawValue, live: &Live) -> Result<(), OpError> {
    crate::ijson::check(data.get(), live.limits.max_data_depth)
        .map_err(|m| OpError::new(ErrorCode::BadRequest, m))
}

/// Publishes `data` on `channel`; resolves once the backend has taken the message, with its
/// position when the channel keeps history.
pub(crate) async fn publish(
    node: &Node,
    caller: Caller<'_>,
    channel: &str,
    data: &RawValue,
) -> Result<Option<Position>, OpError> {
    let name = parse_channel(channel)?;
    let live = node.live_full();
    let resolved = route(&live.rules, &name)?;
    if let Caller::Client { user } = caller {
        if !resolved.may_publish(user) {
            return Err(forbidden("publishing", &name, user));
        }
    }
    let limit = resolved.route.max_message_bytes;
    if data.get().len() > limit {
        return Err(OpError::new(
            ErrorCode::TooLarge,
            format!(
                "data is {} bytes; route {} allows {limit}",
                data.get().len(),
                resolved.route.pattern
            ),
        ));
    }
    valid_data(data, &live)?;
    let backend = resolved.route.backend;
    let backend_channel = resolved.backend_channel(&name);
    let frame = encode::message(name.as_str(), data.get(), caller.user());
    let started = Instant::now();
    let result = match resolved.route.history {
        None => node.hub.publish(backend, &backend_channel, frame).await.map(|_| None),
        Some(h) => {
            node.hub.publish_kept(backend, &backend_channel, frame, h.retention).await.map(Some)
        }
    };
    if let Some(h) = node.publish_latency(backend) {
        h.record(started.elapsed().as_secs_f64());
    }
    let position = result.map_err(unavailable)?;
    // Counted once the backend took it: refused and unavailable publishes are not traffic.
    if let Some(c) = live.published.get(resolved.route.index) {
        c.increment(1);
    }
    Ok(position)
}

/// A route's history settings, or `bad_request` naming the channel when it keeps none.
pub(crate) fn history_of(
    resolved: &Resolved<'_, '_>,
    name: &ChannelName,
) -> Result<HistorySettings, OpError> {
    resolved.route.history.ok_or_else(|| {
        let message = format!("{name} keeps no history (its route has no history_size)");
        OpError::new(ErrorCode::BadRequest, message)
    })
}

/// Why a history read is made; reads are counted by purpose.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// A subscribe on a history channel; with `any_age`, a page another reader already has
    /// may serve (the seam checks it).
    Recovery { any_age: bool },
    /// A `history` frame or `/api/history`.
    Client,
}

/// Reads a channel's history from its backend.
pub(crate) async fn read_history(
    node: &Node,
    topic: &TopicKey,
    since: Option<u64>,
    limit: usize,
    retention: Retention,
    purpose: Purpose,
) -> Result<Page, OpError> {
    let any_age = match purpose {
        Purpose::Recovery { any_age } => {
            node.metrics.history_reads_recovery.increment(1);
            any_age
        }
        Purpose::Client => {
            node.metrics.history_reads_client.increment(1);
            false
        }
    };
    node.hub
        .history(topic.backend, &topic.channel, since, limit, retention, any_age)
        .await
        .map_err(unavailable)
}

/// Answers `history` for `channel` (WebSocket clients: if they may subscribe to it; the HTTP
/// API: always): at most `limit` kept messages, the first after `since` or the latest.
pub(crate) async fn history(
    node: &Node,
    caller: Caller<'_>,
    channel: &str,
    limit: usize,
    since: Option<u64>,
) -> Result<(ChannelName, Page), OpError> {
    let name = parse_channel(channel)?;
    let live = node.live_full();
    let resolved = route(&live.rules, &name)?;
    if let Caller::Client { user } = caller {
        if !resolved.may_subscribe(user) {
            return Err(forbidden("reading the history of", &name, user));
        }
    }
    let settings = history_of(&resolved, &name)?;
    if limit > settings.retention.size {
        let message =
            format!("limit {limit} is over the {} messages {name} keeps", settings.retention.size);
        return Err(OpError::new(ErrorCode::BadRequest, message));
    }
    let topic = TopicKey {
        backend: resolved.route.backend,
        channel: Arc::from(resolved.backend_channel(&name)),
    };
    let page =
        read_history(node, &topic, since, limit, settings.retention, Purpose::Client).await?;
    Ok((name, page))
}

/// Answers `presence` for `channel` (WebSocket clients: if they may subscribe to it; the HTTP
/// API: always): the counts and, with `limit > 0`, up to `limit` members after `after`.
pub(crate) async fn presence(
    node: &Node,
    caller: Caller<'_>,
    channel: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(ChannelName, Roster), OpError> {
    let name = parse_channel(channel)?;
    let live = node.live_full();
    let resolved = route(&live.rules, &name)?;
    if let Caller::Client { user } = caller {
        if !resolved.may_subscribe(user) {
            return Err(forbidden("reading the presence of", &name, user));
        }
    }
    let settings = resolved.route.presence.ok_or_else(|| {
        let message = format!("{name} keeps no presence (its route has no presence = true)");
        OpError::new(ErrorCode::BadRequest, message)
    })?;
    let topic = TopicKey {
        backend: resolved.route.backend,
        channel: Arc::from(resolved.backend_channel(&name)),
    };
    let roster = node
        .presence()
        .read(&topic, name.as_str(), settings, after, limit)
        .await
        .map_err(unavailable)?;
    Ok((name, roster))
}

/// Hex digits of the random part of a connection id.
const CONN_DIGITS: usize = 16;

/// The id clients see for connection `key` on `node`: `<node>:<16 hex digits>`.
pub(crate) fn conn_id(node: &str, key: ConnKey) -> String {
    format!("{node}:{key:0width$x}", width = CONN_DIGITS)
}

/// Splits a connection id into its node and key; None unless it is exactly what [`conn_id`]
/// makes (node ids never contain `:`).
pub(crate) fn parse_conn_id(id: &str) -> Option<(&str, ConnKey)> {
    let (node, key) = id.rsplit_once(':')?;
    let canonical = key.len() == CONN_DIGITS
        && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if node.is_empty() || !canonical {
        return None;
    }
    ConnKey::from_str_radix(key, 16).ok().map(|k| (node, k))
}

/// Whether a WebSocket client may `send` at all (`auth.send`); the HTTP API is not asked.
pub(crate) fn may_send(permission: SendPermission, user: Option<&str>) -> Result<(), OpError> {
    if permission.allows(user) {
        return Ok(());
    }
    Err(OpError::new(ErrorCode::Forbidden, format!("send is not allowed for {}", who(user))))
}

/// Sends `data` to connection `to` (`<node>:<16 hex digits>`) on any node.
pub(crate) async fn send(
    node: &Node,
    from: &str,
    user: Option<&str>,
    to: &str,
    data: &RawValue,
) -> Result<(), OpError> {
    valid_data(data, &node.live())?;
    let not_found = || OpError::new(ErrorCode::NotFound, format!("no connection {to:?}"));
    let (to_node, number) = parse_conn_id(to).ok_or_else(not_found)?;
    // No size check here: `data` is part of a WebSocket frame or an API body, and both are
    // already bounded by server.max_frame_bytes.
    let frame = encode::direct(from, data.get(), user);
    match node.hub.send_direct(to_node, number, frame).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(not_found()),
        Err(e) => Err(unavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_round_trip_and_nothing_else_parses() {
        let id = conn_id("node-1", 0x00ab_cdef_0123_4567);
        assert_eq!(id, "node-1:00abcdef01234567");
        assert_eq!(parse_conn_id(&id), Some(("node-1", 0x00ab_cdef_0123_4567)));
        for bad in [
            "node-1:1",
            "node-1:00ABCDEF01234567",
            "node-1:+0abcdef01234567",
            "node-1:00abcdef012345678",
            ":00abcdef01234567",
            "00abcdef01234567",
            "node-1:00abcdef0123456g",
        ] {
            assert_eq!(parse_conn_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn send_permission_refuses_with_forbidden() {
        assert!(may_send(SendPermission::Anyone, None).is_ok());
        assert!(may_send(SendPermission::Authenticated, Some("alice")).is_ok());
        let e = may_send(SendPermission::Authenticated, None).expect_err("anonymous");
        assert_eq!(e.code, ErrorCode::Forbidden);
        let e = may_send(SendPermission::Nobody, Some("alice")).expect_err("nobody");
        assert_eq!(e.code, ErrorCode::Forbidden);
    }
}
