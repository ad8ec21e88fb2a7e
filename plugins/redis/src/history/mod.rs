//! History on Redis: one Redis Stream and one metadata hash per channel, written and read by
//! Lua scripts so that each publish and each read is one atomic step on the server.
//!
//! Keys (under the broker's reserved prefix, hash-tagged on the backend channel so that on a
//! cluster both keys and the shard channel live in one slot and one script can touch them):
//! - `#switchyard:history:{<channel>}:meta`: hash `{epoch, top}`, the stream's current epoch
//!   and its latest offset;
//! - `#switchyard:history:{<channel>}:stream`: the kept messages, entry ID `<offset>-1`, field
//!   `p` holding the payload, trimmed to exactly `size` entries.
//!
//! Both keys expire `ttl` after the last publish, together. A publish or read that finds the
//! metadata gone (expired, Redis restarted without persistence) starts a new epoch with the
//! name passed in by the caller ([`switchyard_backend::history::new_epoch`]): scripts cannot
//! make good random names themselves.
//!
//! Wire format of a published history message (what subscribers receive):
//! `\0<offset>:<epoch>\n<payload>`. A plain `publish` whose payload itself starts with NUL is
//! sent as `\0\n<payload>`, so the leading NUL always means "a header follows" and the receive
//! path of ordinary messages only ever looks at the first byte.

mod script;

use bytes::Bytes;
use redis::Value;
use switchyard_backend::{BackendError, Page, Position, Retention, Stored};

pub(crate) use script::{Lua, ScriptCall};

/// First byte of every payload that carries a header.
const MARK: u8 = 0;

/// Longest header accepted: 20 digits of offset, `:`, an epoch name with room to spare, `\n`.
const MAX_HEADER: usize = 128;

/// The two keys of `channel`'s history.
fn keys(channel: &str) -> Result<[Vec<u8>; 2], BackendError> {
    // A brace in the name would change the hash tag, putting the keys in another slot than the
    // channel on a cluster. Broker channel names never contain one; refuse rather than misroute.
    if channel.contains(['{', '}']) {
        return Err(BackendError::Invalid(format!(
            "channel {channel:?} cannot have history: it contains a brace"
        )));
    }
    Ok([
        format!("#switchyard:history:{{{channel}}}:meta").into_bytes(),
        format!("#switchyard:history:{{{channel}}}:stream").into_bytes(),
    ])
}

/// The TTL argument in ms; at least 1, because PEXPIRE 0 would delete the keys at once.
fn ttl_ms(retention: Retention) -> Vec<u8> {
    retention.ttl.as_millis().clamp(1, i64::MAX as u128).to_string().into_bytes()
}

/// The script call of one `publish_kept`. `publish` is `PUBLISH` or `SPUBLISH`.
pub(crate) fn publish_call(
    channel: &str,
    payload: &[u8],
    retention: Retention,
    publish: &str,
) -> Result<ScriptCall, BackendError> {
    let [meta, stream] = keys(channel)?;
    let size = retention.size.max(1).to_string().into_bytes();
    let epoch = switchyard_backend::history::new_epoch();
    let args = vec![
        epoch.as_bytes().to_vec(),
        ttl_ms(retention),
        size,
        payload.to_vec(),
        publish.as_bytes().to_vec(),
    ];
    Ok(ScriptCall::new(
        &script::PUBLISH,
        vec![meta, stream, channel.as_bytes().to_vec()],
        args,
        true,
    ))
}

/// The script call of one `history` read.
pub(crate) fn read_call(
    channel: &str,
    since: Option<u64>,
    limit: usize,
    retention: Retention,
) -> Result<ScriptCall, BackendError> {
    let [meta, stream] = keys(channel)?;
    let epoch = switchyard_backend::history::new_epoch();
    // COUNT is a signed 64-bit number to Redis.
    let limit = limit.min(i64::MAX as usize).to_string().into_bytes();
    // Entries after `since` start at ID `<since+1>-0` (IDs are `<offset>-1`).
    let start = since.map(|s| format!("{}-0", s.saturating_add(1))).unwrap_or_default();
    let args = vec![epoch.as_bytes().to_vec(), ttl_ms(retention), limit, start.into_bytes()];
    Ok(ScriptCall::new(&script::READ, vec![meta, stream], args, false))
}

/// The position `publish.lua` returns: `{offset, epoch}`.
pub(crate) fn parse_position(reply: &Value) -> Result<Position, BackendError> {
    let unexpected =
        || BackendError::Unavailable(format!("unexpected reply to a history publish: {reply:?}"));
    let Value::Array(items) = reply else { return Err(unexpected()) };
    match items.as_slice() {
        [offset, epoch] => Ok(Position {
            offset: number(offset).ok_or_else(unexpected)?,
            epoch: text(epoch).ok_or_else(unexpected)?.into(),
        }),
        _ => Err(unexpected()),
    }
}

/// The page `read.lua` returns: `{epoch, top, id1, payload1, ...}`.
pub(crate) fn parse_page(reply: &Value) -> Result<Page, BackendError> {
    let unexpected =
        || BackendError::Unavailable(format!("unexpected reply to a history read: {reply:?}"));
    let Value::Array(items) = reply else { return Err(unexpected()) };
    let [epoch, top, entries @ ..] = items.as_slice() else { return Err(unexpected()) };
    if entries.len() % 2 != 0 {
        return Err(unexpected());
    }
    let messages = entries
        .chunks_exact(2)
        .map(|pair| {
            let id = text(&pair[0])?;
            let offset = id.split_once('-')?.0.parse().ok()?;
            Some(Stored { offset, payload: bulk(&pair[1])? })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(unexpected)?;
    Ok(Page {
        epoch: text(epoch).ok_or_else(unexpected)?.into(),
        top: number(top).ok_or_else(unexpected)?,
        messages,
    })
}

fn bulk(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `PUBLISH`/`SPUBLISH` (`name`) of a plain `publish`, its payload escaped by [`plain_wire`].
pub(crate) fn publish_cmd(name: &str, channel: &str, payload: &Bytes) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(channel);
    match plain_wire(payload) {
        Some(escaped) => cmd.arg(escaped),
        None => cmd.arg(payload.as_ref()),
    };
    cmd
}

/// The payload a plain `publish` puts on the wire: unchanged (`None`), unless it starts with
/// the header mark itself (then it gets an empty header, so it is not read as a history
/// message).
pub(crate) fn plain_wire(payload: &Bytes) -> Option<Vec<u8>> {
    if payload.first() != Some(&MARK) {
        return None;
    }
    let mut wire = Vec::with_capacity(payload.len() + 2);
    wire.extend_from_slice(&[MARK, b'\n']);
    wire.extend_from_slice(payload);
    Some(wire)
}

/// Whether a received payload carries a header (checks the first byte only).
#[inline]
pub(crate) fn has_header(payload: &[u8]) -> bool {
    payload.first() == Some(&MARK)
}

/// Splits a received payload that [`has_header`] into its position (`None` for an escaped
/// plain payload) and the payload the publisher gave. `Err` names what is malformed.
pub(crate) fn split_header(wire: &Bytes) -> Result<(Option<Position>, Bytes), &'static str> {
    if !has_header(wire) {
        return Err("no header mark");
    }
    let window = &wire[..wire.len().min(MAX_HEADER)];
    // Searched from byte 1: the mark is byte 0, so `end >= 1` and the slices below hold.
    let end = 1 + window[1..].iter().position(|&b| b == b'\n').ok_or("no end of header")?;
    let payload = wire.slice(end + 1..);
    if end == 1 {
        return Ok((None, payload));
    }
    let header = std::str::from_utf8(&window[1..end]).map_err(|_| "header is not UTF-8")?;
    let (offset, epoch) = header.split_once(':').ok_or("no ':' in header")?;
    let offset = offset.parse().map_err(|_| "offset is not a number")?;
    if epoch.is_empty() {
        return Err("empty epoch");
    }
    Ok((Some(Position { offset, epoch: epoch.into() }), payload))
}

#[cfg(test)]
mod tests;
