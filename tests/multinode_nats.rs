//! Two broker nodes on real NATS (one standalone server, and a 3-server cluster joined by
//! routes): cross-node publish and `send`, one NATS subscription per channel per node, and
//! delivery resuming after the server a node is connected to dies or restarts.

mod common;

use common::cross_node::{
    self, cross_node_publish_and_send, delivery_resumes, new_subscription_and_inbox_heal,
    one_subscription_per_channel_per_node, refused_while_down, subscriber_and_publisher, toml_list,
};
use common::{eventually, TestBroker};
use serde_json::json;
use switchyard_nats::subject::to_subject;
use switchyard_nats::testing::{NatsCluster, NatsServer};

async fn two_nodes(urls: &[String]) -> (TestBroker, TestBroker) {
    cross_node::two_nodes(&format!("kind = \"nats\"\nservers = {}", toml_list(urls))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_two_nodes_publish_and_send_across() {
    let nats = tokio::task::block_in_place(NatsServer::start);
    let (a, b) = two_nodes(&[nats.url()]).await;
    cross_node_publish_and_send(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_nodes_publish_and_send_across() {
    let cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let (a, b) = two_nodes(&cluster.urls()).await;
    cross_node_publish_and_send(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nats_subscription_per_channel_per_node() {
    let cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let (a, b) = two_nodes(&cluster.urls()).await;
    let subject = to_subject("im:room:7");
    one_subscription_per_channel_per_node(&a, &b, || cluster.subscriptions(&subject)).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_delivery_resumes_after_the_nodes_server_is_killed() {
    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let (a, b) = two_nodes(&cluster.urls()).await;
    let subject = to_subject("im:room:1");
    let (mut sub, mut publisher) = subscriber_and_publisher(&a, &b).await;

    // Only node a subscribes to room.1, so the member holding that subscription is a's.
    let a_server = (0..3)
        .find(|&i| cluster.servers[i].subscriptions(&subject) == 1)
        .expect("one member holds node a's subscription");
    tokio::task::block_in_place(|| cluster.kill(a_server));
    let addr = a.addr;
    eventually("node a is ready again, on another member", || async move {
        common::http(addr, "GET", "/readyz", &[], "").await.0 == 200
    })
    .await;
    delivery_resumes(&mut publisher, &mut sub, "room.1").await;
    assert_eq!(cluster.subscriptions(&subject), 1, "restored once, on another member");
    // The inbox moved along: send still reaches node a.
    publisher.ok(json!({"op":"send","to":sub.conn,"data":"inbox moved"})).await;
    assert_eq!(sub.recv().await["data"], "inbox moved");

    // The member comes back and joins the routes again; nothing is lost or doubled.
    tokio::task::block_in_place(|| cluster.restart(a_server));
    delivery_resumes(&mut publisher, &mut sub, "room.1").await;
    assert_eq!(cluster.subscriptions(&subject), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_delivery_resumes_after_restart() {
    let mut nats = tokio::task::block_in_place(NatsServer::start);
    let (a, b) = two_nodes(&[nats.url()]).await;
    let (mut sub, mut publisher) = subscriber_and_publisher(&a, &b).await;

    tokio::task::block_in_place(|| nats.kill());
    refused_while_down(&a, &mut publisher).await;
    tokio::task::block_in_place(|| nats.restart());
    delivery_resumes(&mut publisher, &mut sub, "room.1").await;
    assert_eq!(nats.subscriptions(&to_subject("im:room:1")), 1, "restored by async-nats");
    assert_eq!(nats.subscriptions(&to_subject("im:room:2")), 0, "the refused one left nothing");
    new_subscription_and_inbox_heal(&mut sub, &mut publisher).await;
    a.shutdown().await;
    b.shutdown().await;
}
