//! Calling the history scripts over a publisher connection.
//!
//! Not `ScriptInvocation::invoke_async`: it would bypass [`Publisher::run`], which keeps the
//! command deadline, the connection's health clock and the MOVED / unavailable classification
//! the cluster routing relies on. So the EVALSHA is sent through it, and on NOSCRIPT (a Redis
//! that restarted or flushed its scripts) the script is sent whole with EVAL, which runs it and
//! caches it for the next EVALSHA in the same round trip (where `invoke_async` would need a
//! SCRIPT LOAD and a second EVALSHA).

use std::sync::LazyLock;

use redis::{Cmd, Script, Value};
use tokio::time::Instant;

use crate::publisher::{PublishError, Publisher};

/// `publish_kept`'s script (see `publish.lua`), with the shared opening `stream.lua`.
pub(crate) static PUBLISH: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("stream.lua"), include_str!("publish.lua"))));

/// `history`'s script (see `read.lua`).
pub(crate) static READ: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("stream.lua"), include_str!("read.lua"))));

/// A script's source and its SHA1 (computed once by redis-rs's [`Script`]).
pub(crate) struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    pub(crate) fn new(source: &'static str) -> Lua {
        Lua { source, sha: Script::new(source).get_hash().to_owned() }
    }
}

/// One call of a script: its keys and arguments, sent as EVALSHA and, if Redis does not know
/// the script, as EVAL.
pub(crate) struct ScriptCall {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
    /// Whether the script publishes (counted in the publish metrics) or only reads.
    publishes: bool,
}

impl ScriptCall {
    pub(crate) fn new(
        lua: &'static Lua,
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
        publishes: bool,
    ) -> ScriptCall {
        ScriptCall { lua, keys, args, publishes }
    }

    fn cmd(&self, whole: bool) -> Cmd {
        let mut cmd = if whole { redis::cmd("EVAL") } else { redis::cmd("EVALSHA") };
        cmd.arg(if whole { self.lua.source } else { self.lua.sha.as_str() })
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Runs the script on `publisher`'s server, answering by `deadline` at the latest.
    pub(crate) async fn run(
        &self,
        publisher: &Publisher,
        deadline: Instant,
    ) -> Result<Value, PublishError> {
        let send = |cmd: Cmd| async move {
            if self.publishes {
                publisher.run(&cmd, deadline).await
            } else {
                publisher.read(&cmd, deadline).await
            }
        };
        match send(self.cmd(false)).await {
            Err(PublishError::NoScript) => send(self.cmd(true)).await,
            other => other,
        }
    }
}
