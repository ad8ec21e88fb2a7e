//! Presence over real sockets on the memory backend, two nodes on one in-process bus: the
//! scenarios of `common::presence` (members of two nodes with counts that count a user once,
//! paging, leaving by unsubscribe, disconnect and node shutdown, coalesced join/leave diffs,
//! permissions and the HTTP API). tests/presence_redis.rs runs them on Redis and a cluster.

mod common;

use std::sync::Arc;

use common::presence::{self as scenario, node_config};
use common::{Secrets, TestBroker};
use switchyard_memory::{MemoryBackend, MemoryBus};

/// Two nodes on one in-process bus.
async fn two_nodes() -> (TestBroker, TestBroker, Secrets) {
    let secrets = Secrets::new();
    let bus = MemoryBus::new();
    let backend = "[backends.bus]\nkind = \"memory\"\n";
    let node = |id: &str| common::config(&node_config(id, &secrets, backend));
    let a = TestBroker::with_backends(node("a"), vec![Arc::new(MemoryBackend::on_bus(&bus))]).await;
    let b = TestBroker::with_backends(node("b"), vec![Arc::new(MemoryBackend::on_bus(&bus))]).await;
    (a, b, secrets)
}

#[tokio::test]
async fn members_of_both_nodes_are_counted_listed_and_paged() {
    let (a, b, _secrets) = two_nodes().await;
    scenario::members_of_both_nodes_are_counted_listed_and_paged(&a, &b).await;
}

#[tokio::test]
async fn members_leave_on_unsubscribe_disconnect_and_node_shutdown() {
    let (a, b, _secrets) = two_nodes().await;
    scenario::members_leave_on_unsubscribe_disconnect_and_node_shutdown(&a, b).await;
}

#[tokio::test]
async fn joins_and_leaves_reach_subscribers_coalesced() {
    let (a, b, _secrets) = two_nodes().await;
    scenario::joins_and_leaves_reach_subscribers_coalesced(&a, &b).await;
}

#[tokio::test]
async fn presence_needs_subscribe_permission_and_a_presence_route() {
    let (a, _b, _secrets) = two_nodes().await;
    scenario::presence_needs_subscribe_permission_and_a_presence_route(&a).await;
}

#[tokio::test]
async fn the_http_api_answers_presence() {
    let (a, _b, _secrets) = two_nodes().await;
    scenario::the_http_api_answers_presence(&a).await;
}

/// A backend that carries messages but keeps neither history nor presence (the trait's
/// defaults), as a new backend kind might.
struct Bare(MemoryBackend);

#[async_trait::async_trait]
impl switchyard_backend::Backend for Bare {
    fn kind(&self) -> &'static str {
        "bare"
    }
    async fn publish(
        &self,
        channel: &str,
        payload: bytes::Bytes,
    ) -> Result<u64, switchyard_backend::BackendError> {
        self.0.publish(channel, payload).await
    }
    async fn subscribe(&self, channel: &str) -> Result<(), switchyard_backend::BackendError> {
        self.0.subscribe(channel).await
    }
    async fn unsubscribe(&self, channel: &str) -> Result<(), switchyard_backend::BackendError> {
        self.0.unsubscribe(channel).await
    }
    fn take_incoming(&self) -> Option<switchyard_backend::Incoming> {
        self.0.take_incoming()
    }
    async fn ready(&self) -> Result<(), switchyard_backend::BackendError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_backend_without_presence_is_refused_for_presence_routes() {
    let secrets = Secrets::new();
    let config = common::config(&node_config("a", &secrets, "[backends.bus]\nkind = \"memory\"\n"));
    let bare: Arc<dyn switchyard_backend::Backend> = Arc::new(Bare(MemoryBackend::new()));
    match switchyard::broker::Broker::start_with_backends(config, vec![bare]).await {
        Err(e @ switchyard::broker::StartError::NoPresence { .. }) => {
            assert!(e.to_string().contains("routes[0] keeps presence"), "{e}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a presence route started on a backend without presence"),
    }
}

/// Every presence question costs a subscribe token: a client asking in a loop is answered
/// `rate_limited`, not with backend reads.
#[tokio::test]
async fn presence_queries_are_paced_by_the_subscribe_bucket() {
    let secrets = Secrets::new();
    let tables = "[limits]\nsubscribe_rate = 0.001\nsubscribe_burst = 3\n[backends.bus]\nkind = \"memory\"\n";
    let broker = TestBroker::start(&node_config("a", &secrets, tables)).await;
    let mut c = broker.connect("").await;
    c.subscribe("room.paced").await;
    for _ in 0..2 {
        scenario::presence(&mut c, "room.paced", serde_json::json!({"members": false})).await;
    }
    let refused =
        c.error(serde_json::json!({"op":"presence","channel":"room.paced"}), "rate_limited").await;
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("per second")), "{refused}");
}
