//! Presence on Redis: four keys per channel, written and read by Lua scripts so that each
//! update and each read is one atomic step on the server, on the server's clock.
//!
//! Keys (under the broker's reserved prefix, hash-tagged on the backend channel like the
//! history keys, so on a cluster one script reaches all four on the channel's master):
//! - `#switchyard:presence:{<channel>}:members`: sorted set of conns, all scored 0, so it is
//!   ordered by conn and a page is one `ZRANGEBYLEX` after the cursor;
//! - `…:leases`: sorted set conn → the end of its lease in ms, so ended leases are found with
//!   one range query, and purged by whichever script runs next;
//! - `…:users`: hash conn → user, for members with one;
//! - `…:counts`: hash user → how many members have that user; its `HLEN` is the users count.
//!
//! `connections` is `ZCARD` and `users` is `HLEN`: O(1) however big the channel. Purging is
//! paid once per ended lease. All four keys expire a lease after the last join or renewal, so
//! a channel whose nodes all died leaves nothing behind.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Value;
use switchyard_backend::{BackendError, Changes, Member, Roster};

use crate::history::{number, text, Lua, ScriptCall};

static UPDATE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("opening.lua"), include_str!("update.lua"))));

static READ: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("opening.lua"), include_str!("read.lua"))));

/// The four keys of `channel`'s presence.
fn keys(channel: &str) -> Result<Vec<Vec<u8>>, BackendError> {
    // A brace would change the hash tag (see `history::keys`).
    if channel.contains(['{', '}']) {
        return Err(BackendError::Invalid(format!(
            "channel {channel:?} cannot have presence: it contains a brace"
        )));
    }
    Ok(["members", "leases", "users", "counts"]
        .iter()
        .map(|k| format!("#switchyard:presence:{{{channel}}}:{k}").into_bytes())
        .collect())
}

/// The script call of one `presence_update`.
pub(crate) fn update_call(
    channel: &str,
    add: &[Member],
    remove: &[Arc<str>],
    ttl: Duration,
) -> Result<ScriptCall, BackendError> {
    let ttl = ttl.as_millis().clamp(1, i64::MAX as u128);
    let mut args = Vec::with_capacity(2 + 2 * add.len() + remove.len());
    args.push(ttl.to_string().into_bytes());
    args.push(add.len().to_string().into_bytes());
    for m in add {
        args.push(m.conn.as_bytes().to_vec());
        args.push(m.user.as_deref().unwrap_or("").as_bytes().to_vec());
    }
    args.extend(remove.iter().map(|c| c.as_bytes().to_vec()));
    Ok(ScriptCall::new(&UPDATE, keys(channel)?, args, false))
}

/// The script call of one `presence_read`.
pub(crate) fn read_call(
    channel: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<ScriptCall, BackendError> {
    let args = vec![after.unwrap_or("").as_bytes().to_vec(), limit.to_string().into_bytes()];
    Ok(ScriptCall::new(&READ, keys(channel)?, args, false))
}

fn unexpected(what: &str, reply: &Value) -> BackendError {
    BackendError::Unavailable(format!("unexpected reply to a presence {what}: {reply:?}"))
}

/// A flat list `conn, user, …` ('' for no user).
fn members(value: &Value) -> Option<Vec<Member>> {
    let Value::Array(items) = value else { return None };
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks_exact(2)
        .map(|pair| {
            let conn = text(&pair[0])?;
            let user = text(&pair[1])?;
            Some(Member {
                conn: Arc::from(conn.as_str()),
                user: (!user.is_empty()).then(|| Arc::from(user.as_str())),
            })
        })
        .collect()
}

/// What `update.lua` returns: `{joined, left, expired}`.
pub(crate) fn parse_changes(reply: &Value) -> Result<Changes, BackendError> {
    let parse = || {
        let Value::Array(items) = reply else { return None };
        let [joined, left, expired] = items.as_slice() else { return None };
        Some(Changes { joined: members(joined)?, left: members(left)?, expired: members(expired)? })
    };
    parse().ok_or_else(|| unexpected("update", reply))
}

/// What `read.lua` returns: `{connections, users, members, next, expired}`.
pub(crate) fn parse_roster(reply: &Value) -> Result<Roster, BackendError> {
    let parse = || {
        let Value::Array(items) = reply else { return None };
        let [connections, users, page, next, expired] = items.as_slice() else { return None };
        let next = text(next)?;
        Some(Roster {
            connections: number(connections)?,
            users: number(users)?,
            members: members(page)?,
            next: (!next.is_empty()).then(|| Arc::from(next.as_str())),
            expired: members(expired)?,
        })
    };
    parse().ok_or_else(|| unexpected("read", reply))
}
