//! Metric names, defined once with their descriptions, and the handles the hot paths use.
//!
//! Handles are created once (here, or per route when rules are compiled) so delivery never
//! looks a metric up by name.

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub(crate) const CONNECTIONS: &str = "switchyard_connections";
pub(crate) const CONNECTIONS_TOTAL: &str = "switchyard_connections_total";
pub(crate) const CONNECTIONS_REFUSED: &str = "switchyard_connections_refused_total";
pub(crate) const SUBSCRIPTIONS: &str = "switchyard_subscriptions";
pub(crate) const BACKEND_SUBSCRIPTIONS: &str = "switchyard_backend_subscriptions";
pub(crate) const MESSAGES_PUBLISHED: &str = "switchyard_messages_published_total";
pub(crate) const MESSAGES_RECEIVED: &str = "switchyard_messages_received_total";
pub(crate) const MESSAGES_DELIVERED: &str = "switchyard_messages_delivered_total";
pub(crate) const MESSAGES_DROPPED: &str = "switchyard_messages_dropped_total";
pub(crate) const SLOW_CONSUMER_DISCONNECTS: &str = "switchyard_slow_consumer_disconnects_total";
pub(crate) const CLIENT_ERRORS: &str = "switchyard_client_errors_total";
pub(crate) const BACKEND_PUBLISH_SECONDS: &str = "switchyard_backend_publish_seconds";
pub(crate) const CONFIG_RELOADS: &str = "switchyard_config_reloads_total";
pub(crate) const HTTP_CONNECTIONS: &str = "switchyard_http_connections";
pub(crate) const ACCEPT_ERRORS: &str = "switchyard_accept_errors_total";
pub(crate) const HISTORY_READS: &str = "switchyard_history_reads_total";
pub(crate) const HISTORY_BACKEND_READS: &str = "switchyard_history_backend_reads_total";
pub(crate) const MESSAGES_HEALED: &str = "switchyard_messages_healed_total";
pub(crate) const GAPS_UNHEALED: &str = "switchyard_history_gaps_unhealed_total";
pub(crate) const DISPATCH_RESTARTS: &str = "switchyard_dispatch_restarts_total";
pub(crate) const HTTP_ABORTED: &str = "switchyard_http_aborted_total";
pub(crate) const PRESENCE_MEMBERS: &str = "switchyard_presence_members";
pub(crate) const PRESENCE_WRITES: &str = "switchyard_presence_writes_total";
pub(crate) const PRESENCE_READS: &str = "switchyard_presence_reads_total";
pub(crate) const PRESENCE_DIFFS: &str = "switchyard_presence_diff_frames_total";

/// Installs the Prometheus recorder once per process and returns its handle for `/metrics`.
/// A failure is logged once: the broker runs on, but its metrics go nowhere.
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match install() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!(error = %e, "metrics recorder not installed: /metrics will be empty");
                None
            }
        })
        .clone()
}

fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
        )?
        .install_recorder()?;
    describe();
    #[cfg(feature = "redis")]
    switchyard_redis::metrics::describe();
    spawn_upkeep(handle.clone());
    Ok(handle)
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep folds it into buckets, and upkeep
/// otherwise runs only when someone scrapes `/metrics`: a broker nobody scrapes would grow by
/// every sample recorded (about 17 bytes per publish) until it ran out of memory. A plain
/// thread does it, so it runs for the whole process whatever runtime is current.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_INTERVAL);
        handle.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the metrics upkeep thread; histograms grow until /metrics is scraped");
    }
}

fn describe() {
    describe_gauge!(CONNECTIONS, "WebSocket connections open now");
    describe_counter!(CONNECTIONS_TOTAL, "WebSocket connections accepted");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "WebSocket upgrades (capacity, auth, origin) and sockets (socket_limit) refused, by reason"
    );
    describe_gauge!(SUBSCRIPTIONS, "Client subscriptions held now");
    describe_gauge!(BACKEND_SUBSCRIPTIONS, "Backend channels this node is subscribed to");
    describe_counter!(
        MESSAGES_PUBLISHED,
        "Messages published by clients and the HTTP API, by route"
    );
    describe_counter!(MESSAGES_RECEIVED, "Messages received from backends, by backend");
    describe_counter!(
        HISTORY_READS,
        "History reads from backends, by purpose (recovery, history, healing)"
    );
    describe_counter!(
        MESSAGES_HEALED,
        "Messages a node read from history to fill a gap in its live stream"
    );
    describe_counter!(
        HISTORY_BACKEND_READS,
        "History reads that went to a backend (concurrent reads of one channel are shared)"
    );
    describe_counter!(
        GAPS_UNHEALED,
        "Gaps history no longer held; the channel's connections were closed with 4004 to recover"
    );
    describe_counter!(
        DISPATCH_RESTARTS,
        "Dispatch tasks (backend to local subscribers) restarted after a panic, by backend"
    );
    describe_counter!(MESSAGES_DELIVERED, "Frames queued to local subscribers");
    describe_counter!(MESSAGES_DROPPED, "Messages dropped, by reason");
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTS,
        "Connections closed with 4001 because their outbound queue overflowed"
    );
    describe_counter!(CLIENT_ERRORS, "Error frames sent to clients, by code");
    describe_histogram!(
        BACKEND_PUBLISH_SECONDS,
        Unit::Seconds,
        "Time a backend publish took, by backend"
    );
    describe_counter!(CONFIG_RELOADS, "Config reloads, by result");
    describe_gauge!(
        HTTP_CONNECTIONS,
        "Accepted sockets that are not WebSocket sessions (yet); they count against max_connections"
    );
    describe_counter!(ACCEPT_ERRORS, "Failed accepts, by error kind (emfile, enfile, ...)");
    describe_gauge!(PRESENCE_MEMBERS, "Presence members (subscriptions) held by this node");
    describe_counter!(
        PRESENCE_WRITES,
        "Presence updates sent to backends, by purpose (change, renew) and result (ok, failed)"
    );
    describe_counter!(PRESENCE_READS, "Presence queries answered (WebSocket and HTTP API)");
    describe_counter!(PRESENCE_DIFFS, "presence_diff frames published, by result (ok, failed)");
    describe_counter!(
        HTTP_ABORTED,
        "HTTP connections closed before a full request, by reason (header_timeout, header_too_large, body_timeout)"
    );
}

/// Handles used on hot paths.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub refused_capacity: Counter,
    pub refused_auth: Counter,
    pub refused_origin: Counter,
    pub subscriptions: Gauge,
    pub backend_subscriptions: Gauge,
    pub delivered: Counter,
    pub dropped_no_subscriber: Counter,
    pub dropped_closed: Counter,
    pub dropped_malformed: Counter,
    pub history_reads: Counter,
    pub history_reads_recovery: Counter,
    pub history_reads_client: Counter,
    pub history_backend_reads: Counter,
    pub healed: Counter,
    pub gaps_unhealed: Counter,
    pub slow_consumers: Counter,
    pub reload_ok: Counter,
    pub reload_failed: Counter,
    pub http_connections: Gauge,
    pub refused_socket_limit: Counter,
    pub header_timeouts: Counter,
    pub headers_too_large: Counter,
    pub body_timeouts: Counter,
    pub presence: PresenceMetrics,
}

/// The presence keeper's handles.
#[derive(Clone)]
pub(crate) struct PresenceMetrics {
    pub members: Gauge,
    pub change_ok: Counter,
    pub change_failed: Counter,
    pub renew_ok: Counter,
    pub renew_failed: Counter,
    pub reads: Counter,
    pub diffs_ok: Counter,
    pub diffs_failed: Counter,
}

impl PresenceMetrics {
    fn new() -> PresenceMetrics {
        PresenceMetrics {
            members: gauge!(PRESENCE_MEMBERS),
            change_ok: counter!(PRESENCE_WRITES, "purpose" => "change", "result" => "ok"),
            change_failed: counter!(PRESENCE_WRITES, "purpose" => "change", "result" => "failed"),
            renew_ok: counter!(PRESENCE_WRITES, "purpose" => "renew", "result" => "ok"),
            renew_failed: counter!(PRESENCE_WRITES, "purpose" => "renew", "result" => "failed"),
            reads: counter!(PRESENCE_READS),
            diffs_ok: counter!(PRESENCE_DIFFS, "result" => "ok"),
            diffs_failed: counter!(PRESENCE_DIFFS, "result" => "failed"),
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            connections: gauge!(CONNECTIONS),
            connections_total: counter!(CONNECTIONS_TOTAL),
            refused_capacity: counter!(CONNECTIONS_REFUSED, "reason" => "capacity"),
            refused_auth: counter!(CONNECTIONS_REFUSED, "reason" => "auth"),
            refused_origin: counter!(CONNECTIONS_REFUSED, "reason" => "origin"),
            subscriptions: gauge!(SUBSCRIPTIONS),
            backend_subscriptions: gauge!(BACKEND_SUBSCRIPTIONS),
            delivered: counter!(MESSAGES_DELIVERED),
            dropped_no_subscriber: counter!(MESSAGES_DROPPED, "reason" => "no_subscriber"),
            dropped_closed: counter!(MESSAGES_DROPPED, "reason" => "connection_closing"),
            dropped_malformed: counter!(MESSAGES_DROPPED, "reason" => "malformed_inbox"),
            history_reads: counter!(HISTORY_READS, "purpose" => "healing"),
            history_reads_recovery: counter!(HISTORY_READS, "purpose" => "recovery"),
            history_reads_client: counter!(HISTORY_READS, "purpose" => "history"),
            history_backend_reads: counter!(HISTORY_BACKEND_READS),
            healed: counter!(MESSAGES_HEALED),
            gaps_unhealed: counter!(GAPS_UNHEALED),
            slow_consumers: counter!(SLOW_CONSUMER_DISCONNECTS),
            reload_ok: counter!(CONFIG_RELOADS, "result" => "ok"),
            reload_failed: counter!(CONFIG_RELOADS, "result" => "failed"),
            http_connections: gauge!(HTTP_CONNECTIONS),
            refused_socket_limit: counter!(CONNECTIONS_REFUSED, "reason" => "socket_limit"),
            header_timeouts: counter!(HTTP_ABORTED, "reason" => "header_timeout"),
            headers_too_large: counter!(HTTP_ABORTED, "reason" => "header_too_large"),
            body_timeouts: counter!(HTTP_ABORTED, "reason" => "body_timeout"),
            presence: PresenceMetrics::new(),
        }
    }

    pub(crate) fn client_error(code: crate::protocol::ErrorCode) {
        counter!(CLIENT_ERRORS, "code" => code.as_str()).increment(1);
    }

    pub(crate) fn accept_error(kind: &'static str) {
        counter!(ACCEPT_ERRORS, "kind" => kind).increment(1);
    }

    pub(crate) fn received(backend: &str) -> Counter {
        counter!(MESSAGES_RECEIVED, "backend" => backend.to_string())
    }

    pub(crate) fn published(route: &str) -> Counter {
        counter!(MESSAGES_PUBLISHED, "route" => route.to_string())
    }

    pub(crate) fn dispatch_restarts(backend: &str) -> Counter {
        counter!(DISPATCH_RESTARTS, "backend" => backend.to_string())
    }

    pub(crate) fn publish_latency(backend: &str) -> Histogram {
        histogram!(BACKEND_PUBLISH_SECONDS, "backend" => backend.to_string())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
