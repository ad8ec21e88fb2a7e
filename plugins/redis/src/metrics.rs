//! Metric names of the Redis backends, defined once, and their descriptions.
//!
//! Every metric carries a `backend` label with the backend kind (`redis` or `redis-cluster`).
//! The broker calls [`describe`] once at start, after installing its recorder.

use metrics::{counter, describe_counter, Counter};

/// Connections (subscriber or publisher) re-established after a loss.
pub const RECONNECTS: &str = "switchyard_backend_reconnects_total";
/// Channels re-subscribed after a reconnect, failover or slot migration.
pub const RESUBSCRIBES: &str = "switchyard_backend_resubscribes_total";
/// Messages handed to Redis by `publish`.
pub const MESSAGES_OUT: &str = "switchyard_backend_messages_out_total";
/// Messages received from Redis and handed to the hub.
pub const MESSAGES_IN: &str = "switchyard_backend_messages_in_total";
/// Publishes answered with an error.
pub const PUBLISH_ERRORS: &str = "switchyard_backend_publish_errors_total";
/// History messages dropped on receipt because their position header was malformed.
pub const MALFORMED: &str = "switchyard_backend_malformed_messages_total";
/// Label carrying the backend kind.
pub const LABEL_BACKEND: &str = "backend";

/// Registers descriptions and units of every metric above with the installed recorder.
pub fn describe() {
    describe_counter!(RECONNECTS, "Backend connections re-established after a loss");
    describe_counter!(
        RESUBSCRIBES,
        "Channels re-subscribed after a reconnect, failover or slot migration"
    );
    describe_counter!(MESSAGES_OUT, "Messages published to the backend");
    describe_counter!(MESSAGES_IN, "Messages received from the backend");
    describe_counter!(PUBLISH_ERRORS, "Backend publishes that failed");
    describe_counter!(MALFORMED, "Received history messages dropped for a malformed header");
}

/// Metric handles of one backend instance, created once so the hot path does no lookups.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) reconnects: Counter,
    pub(crate) resubscribes: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) publish_errors: Counter,
    pub(crate) malformed: Counter,
}

impl Metrics {
    pub(crate) fn new(kind: &'static str) -> Metrics {
        Metrics {
            reconnects: counter!(RECONNECTS, LABEL_BACKEND => kind),
            resubscribes: counter!(RESUBSCRIBES, LABEL_BACKEND => kind),
            messages_out: counter!(MESSAGES_OUT, LABEL_BACKEND => kind),
            messages_in: counter!(MESSAGES_IN, LABEL_BACKEND => kind),
            publish_errors: counter!(PUBLISH_ERRORS, LABEL_BACKEND => kind),
            malformed: counter!(MALFORMED, LABEL_BACKEND => kind),
        }
    }

    /// Publish latency is not recorded here: the broker times every backend's publishes
    /// once, as `switchyard_backend_publish_seconds`.
    pub(crate) fn published(&self) {
        self.messages_out.increment(1);
    }
}
