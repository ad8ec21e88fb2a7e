//! What happens to a socket before hyper sees it: binding with a chosen backlog, backing off
//! when `accept` fails, and the cap on sockets that are open but not (yet) WebSockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Gauge;
use socket2::{Domain, Protocol, Socket, Type};
use switchyard_backend::backoff::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Binds `addr` with a listen backlog of `backlog` connections.
///
/// `TcpListener::bind` always asks for 128, which a burst of a few hundred connects overflows;
/// the dropped SYNs are then only retried a second later.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio does on Unix: a restarted broker can bind while old sockets sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// The first pause after a failed accept, doubled on each further failure up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// A failing accept loop logs at most once per this long.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Exponential backoff and rate-limited logging for `accept` errors.
pub(crate) struct AcceptBackoff {
    /// Without jitter: only this process's accept loop retries, so there is no herd to spread.
    pause: Backoff,
    last_log: Option<Instant>,
    /// Errors not logged since the last log line.
    unlogged: u64,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            pause: Backoff::new(FIRST_PAUSE, MAX_PAUSE).without_jitter(),
            last_log: None,
            unlogged: 0,
        }
    }
}

impl AcceptBackoff {
    /// A successful accept: the next failure starts from the shortest pause again.
    pub(crate) fn succeeded(&mut self) {
        self.pause.reset();
    }

    /// Counts and (at most once per second) logs `e`; returns how long to pause before the
    /// next accept, if at all.
    pub(crate) fn failed(&mut self, e: &std::io::Error, now: Instant) -> Option<Duration> {
        let kind = error_kind(e);
        Metrics::accept_error(kind);
        if self.last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(error = %e, kind, suppressed = self.unlogged, "accept failed");
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        if !is_resource_exhaustion(kind) {
            // The failed connection is gone from the queue; the next one may be fine.
            return None;
        }
        Some(self.pause.next_delay())
    }
}

/// A short label for an accept error, for the metric and the log.
pub(crate) fn error_kind(e: &std::io::Error) -> &'static str {
    // EMFILE and ENFILE have these numbers on Linux, the BSDs and macOS alike; std has no
    // ErrorKind for them.
    #[cfg(unix)]
    match e.raw_os_error() {
        Some(24) => return "emfile",
        Some(23) => return "enfile",
        _ => {}
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionAborted => "econnaborted",
        std::io::ErrorKind::ConnectionReset => "econnreset",
        std::io::ErrorKind::OutOfMemory => "enomem",
        std::io::ErrorKind::Interrupted => "eintr",
        _ => "other",
    }
}

/// Whether retrying at once would only fail again (and spin a core doing it).
fn is_resource_exhaustion(kind: &str) -> bool {
    matches!(kind, "emfile" | "enfile" | "enomem" | "other")
}

/// How many accepted sockets are not WebSocket sessions (yet): HTTP requests, upgrades in
/// progress, and connections that have not sent a full request.
#[derive(Default, Clone)]
pub(crate) struct OpenSockets {
    count: Arc<AtomicUsize>,
}

impl OpenSockets {
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A slot for one more socket when `sessions` plus the sockets already open stay under
    /// `max`; `None` when the socket must be refused.
    ///
    /// Only the accept loop calls this, so the check and the increment cannot race with
    /// another increment; slots given back meanwhile only make room.
    pub(crate) fn take(&self, sessions: usize, max: usize, gauge: &Gauge) -> Option<SocketSlot> {
        if self.get().saturating_add(sessions) >= max {
            return None;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        gauge.increment(1.0);
        Some(SocketSlot { count: self.count.clone(), gauge: gauge.clone() })
    }
}

/// One counted socket; dropping it gives the slot back, whichever way the connection ended.
pub(crate) struct SocketSlot {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.gauge.decrement(1.0);
    }
}

/// Refusals in flight at once; past this a refused socket is closed without an answer, so a
/// flood cannot make the refusals themselves hold descriptors.
const MAX_REFUSALS: usize = 64;
/// How long a refusal waits for the client to finish sending and close.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 59\r\n\r\n\
{\"code\":\"unavailable\",\"message\":\"connection limit reached\"}";

/// Refuses sockets over the cap with a fixed 503, or by closing them when too many refusals
/// are already in flight.
#[derive(Default)]
pub(crate) struct Refuser {
    in_flight: Arc<AtomicUsize>,
}

impl Refuser {
    pub(crate) fn refuse(&self, stream: TcpStream, node: &crate::node::Node) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSALS {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let in_flight = self.in_flight.clone();
        node.spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_LINGER, answer_503(stream)).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn answer_503(mut stream: TcpStream) -> std::io::Result<()> {
    stream.write_all(REFUSAL).await?;
    stream.shutdown().await?;
    // Closing with the client's request still unread would send a reset, which can destroy
    // the answer before the client reads it: read until the client closes.
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(24)
    }

    #[test]
    fn backoff_doubles_up_to_a_second_and_resets_on_success() {
        let mut b = AcceptBackoff::default();
        let now = Instant::now();
        let pauses: Vec<u64> = (0..10)
            .filter_map(|_| b.failed(&emfile(), now))
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(&emfile(), now), Some(FIRST_PAUSE));
    }

    #[test]
    fn a_connection_specific_error_is_retried_at_once() {
        let mut b = AcceptBackoff::default();
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(error_kind(&aborted), "econnaborted");
        assert_eq!(b.failed(&aborted, Instant::now()), None);
    }

    #[test]
    fn errors_are_logged_at_most_once_per_second() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        b.failed(&emfile(), t0);
        b.failed(&emfile(), t0 + Duration::from_millis(300));
        b.failed(&emfile(), t0 + Duration::from_millis(600));
        assert_eq!(b.unlogged, 2);
        b.failed(&emfile(), t0 + Duration::from_millis(1000));
        assert_eq!((b.unlogged, b.last_log), (0, Some(t0 + Duration::from_millis(1000))));
    }

    #[test]
    fn error_kinds_name_descriptor_exhaustion() {
        assert_eq!(error_kind(&emfile()), "emfile");
        assert_eq!(error_kind(&std::io::Error::from_raw_os_error(23)), "enfile");
    }

    #[test]
    fn slots_count_sockets_and_sessions_against_the_cap() {
        let open = OpenSockets::default();
        let gauge = Gauge::noop();
        let a = open.take(1, 3, &gauge).expect("room for a second");
        let b = open.take(1, 3, &gauge).expect("room for a third");
        assert!(open.take(1, 3, &gauge).is_none(), "1 session + 2 sockets fill 3");
        drop(a);
        assert_eq!(open.get(), 1);
        let _c = open.take(1, 3, &gauge).expect("a slot given back is free again");
        drop(b);
        assert_eq!(open.get(), 1);
    }

    #[test]
    fn refusal_body_matches_its_content_length() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head} / {body:?}");
        let v: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON body");
        assert_eq!(v["code"], "unavailable");
    }
}
