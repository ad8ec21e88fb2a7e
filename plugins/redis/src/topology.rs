//! The cluster's slot map, read with `CLUSTER SLOTS`.
//!
//! `CLUSTER SLOTS` is used rather than `CLUSTER SHARDS` because it is answered the same way by
//! every Redis since 3.0 (and by Valkey) and its reply is a plain nested array, while this
//! backend needs nothing but "which master serves which slot range".

use std::collections::BTreeSet;

use redis::{AsyncConnectionConfig, Value};

use crate::options::Endpoint;
use crate::slot::SLOTS;

/// One contiguous slot range and the address (`host:port`) of the master serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) start: u16,
    pub(crate) end: u16,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Parses a `CLUSTER SLOTS` reply into ranges (replicas are ignored: shard channels are
/// published and subscribed on masters).
pub(crate) fn parse_cluster_slots(reply: &Value) -> Result<Vec<SlotRange>, String> {
    let Value::Array(ranges) = reply else {
        return Err(format!("CLUSTER SLOTS: expected an array, got {reply:?}"));
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(items) = range else { return Err("CLUSTER SLOTS: bad range".into()) };
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (items.first().and_then(int), items.get(1).and_then(int), items.get(2))
        else {
            return Err("CLUSTER SLOTS: bad range entry".into());
        };
        let host = master.first().and_then(text).ok_or("CLUSTER SLOTS: bad master host")?;
        let port = master.get(1).and_then(int).ok_or("CLUSTER SLOTS: bad master port")?;
        let (Ok(start), Ok(end), Ok(port)) =
            (u16::try_from(start), u16::try_from(end), u16::try_from(port))
        else {
            return Err("CLUSTER SLOTS: number out of range".into());
        };
        if start > end || end >= SLOTS {
            return Err("CLUSTER SLOTS: slot out of range".into());
        }
        out.push(SlotRange { start, end, host, port });
    }
    Ok(out)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Slot → master index, plus the master addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// `owner[slot]` indexes `masters`; `u16::MAX` for an unserved slot.
    owner: Vec<u16>,
    pub(crate) masters: Vec<(String, u16)>,
}

impl SlotMap {
    pub(crate) fn from_ranges(ranges: &[SlotRange]) -> SlotMap {
        let set: BTreeSet<(String, u16)> =
            ranges.iter().map(|r| (r.host.clone(), r.port)).collect();
        let masters: Vec<(String, u16)> = set.into_iter().collect();
        let mut owner = vec![u16::MAX; usize::from(SLOTS)];
        for r in ranges {
            let index = masters
                .iter()
                .position(|(h, p)| *h == r.host && *p == r.port)
                .and_then(|i| u16::try_from(i).ok())
                .unwrap_or(u16::MAX);
            for slot in r.start..=r.end {
                owner[usize::from(slot)] = index;
            }
        }
        SlotMap { owner, masters }
    }

    /// The index into `masters` of the master serving `slot`.
    pub(crate) fn owner(&self, slot: u16) -> Option<usize> {
        match self.owner.get(usize::from(slot)) {
            Some(&i) if i != u16::MAX => Some(usize::from(i)),
            _ => None,
        }
    }

    /// `host:port` of the master serving `slot`.
    pub(crate) fn owner_addr(&self, slot: u16) -> Option<String> {
        self.owner(slot).map(|i| format!("{}:{}", self.masters[i].0, self.masters[i].1))
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.owner.iter().all(|&i| i != u16::MAX)
    }
}

/// Reads `CLUSTER SLOTS` from the first candidate that answers with a complete map (or, if
/// none does, the first partial one).
pub(crate) async fn fetch_slot_map(
    candidates: &[Endpoint],
    timeout: std::time::Duration,
) -> Result<SlotMap, String> {
    let mut partial = None;
    let mut last_error = String::from("no node to ask");
    for endpoint in candidates {
        let attempt = async {
            let client = endpoint.client().map_err(|e| e.to_string())?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| e.to_string())?;
            let reply: redis::Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            parse_cluster_slots(&reply)
        };
        match tokio::time::timeout(timeout * 2, attempt).await {
            Ok(Ok(ranges)) => {
                let map = SlotMap::from_ranges(&ranges);
                if map.is_complete() {
                    return Ok(map);
                }
                partial.get_or_insert(map);
            }
            Ok(Err(e)) => last_error = format!("{}: {e}", endpoint.addr()),
            Err(_) => last_error = format!("{}: timed out", endpoint.addr()),
        }
    }
    partial.ok_or(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn parses_ranges_and_maps_slots() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(8191), node("127.0.0.1", 7001)]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                node("127.0.0.1", 7002),
                node("127.0.0.1", 7003),
            ]),
        ]);
        let ranges = parse_cluster_slots(&reply).expect("parse");
        let map = SlotMap::from_ranges(&ranges);
        assert!(map.is_complete());
        assert_eq!(map.owner_addr(0).as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(map.owner_addr(16383).as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(map.masters.len(), 2);
    }
}
