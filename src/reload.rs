//! Hot reload: the config file is re-read when it changes (polled, so editors that replace the
//! file and network filesystems both work) and on SIGHUP. A file that fails to load is
//! reported and counted; the running rules stay.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::Reloader;
use crate::config::Config;

/// How often the file is read and compared.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The file's bytes, or None while it cannot be read. Compared by content rather than by
/// modification time and length: an edit that keeps the length within the clock's resolution
/// (or a copy that keeps the mtime) would otherwise go unnoticed.
fn contents(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Watches `path` until the broker shuts down.
pub async fn watch(reloader: Reloader, path: PathBuf) {
    let mut last = contents(&path);
    let mut hangup = hangup_signal();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = reloader.stopped() => return,
            _ = tick.tick() => false,
            _ = recv(&mut hangup) => true,
        };
        let now = contents(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        reload(&reloader, &path);
    }
}

/// Loads `path` and swaps its rules in; logs and counts the outcome.
pub fn reload(reloader: &Reloader, path: &Path) -> bool {
    let result = Config::load(path).map_err(|e| e.to_string()).and_then(|c| {
        reloader.reload(&c).map(|()| c.rules.routes().len()).map_err(|e| e.to_string())
    });
    match result {
        Ok(routes) => {
            reloader.count(true);
            tracing::info!(file = %path.display(), routes, "config reloaded");
            true
        }
        Err(e) => {
            reloader.count(false);
            tracing::error!(file = %path.display(), "config reload failed; the running rules stay:\n{e}");
            false
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn recv(h: &mut Hangup) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv(_: &mut Hangup) {
    std::future::pending().await
}
