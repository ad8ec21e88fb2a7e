//! Two broker nodes on one real Redis (standalone, and a 3-master cluster with sharded
//! pub/sub): cross-node publish and `send`, one Redis subscription per channel per node, and
//! delivery resuming after every kind of Redis fault.

mod common;

use std::time::Duration;

use common::cross_node::{
    self, cross_node_publish_and_send, delivery_resumes, new_subscription_and_inbox_heal,
    one_subscription_per_channel_per_node, refused_while_down, subscriber_and_publisher, toml_list,
};
use common::{eventually, TestBroker};
use serde_json::json;
use switchyard_redis::testing::{RedisCluster, RedisServer};

/// The backend lines for `kind` ("redis" or "redis-cluster") at `urls`.
fn redis(kind: &str, urls: &[String]) -> String {
    if kind == "redis" {
        format!("kind = \"redis\"\nurl = \"{}\"", urls[0])
    } else {
        format!("kind = \"redis-cluster\"\nnodes = {}", toml_list(urls))
    }
}

async fn two_nodes(kind: &str, urls: &[String]) -> (TestBroker, TestBroker) {
    cross_node::two_nodes(&redis(kind, urls)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_two_nodes_publish_and_send_across() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes("redis", &[redis.url()]).await;
    cross_node_publish_and_send(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_nodes_publish_and_send_across() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let (a, b) = two_nodes("redis-cluster", &cluster.urls()).await;
    cross_node_publish_and_send(&a, &b).await;
    // Channels spread over every master, and each reaches the other node.
    let mut on_a = a.connect("").await;
    let mut on_b = b.connect("").await;
    let channels: Vec<String> = (0..30).map(|i| format!("spread.{i}")).collect();
    let masters: std::collections::HashSet<usize> =
        channels.iter().map(|c| cluster.master_index_of(&format!("app:{c}"))).collect();
    assert_eq!(masters.len(), 3, "test channels should cover all masters");
    for c in &channels {
        on_b.subscribe(c).await;
    }
    for c in &channels {
        on_a.publish(c, json!(c)).await;
    }
    for _ in &channels {
        let m = on_b.recv().await;
        assert_eq!(m["data"], m["channel"]);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_subscription_per_channel_per_node() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes("redis", &[redis.url()]).await;
    one_subscription_per_channel_per_node(&a, &b, || redis.numsub("im:room:7") as usize).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sharded_subscription_per_channel_per_node() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let (a, b) = two_nodes("redis-cluster", &cluster.urls()).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(a.connect("channel=room.9").await);
        held.push(b.connect("channel=room.9").await);
    }
    let mut probe = a.connect("").await;
    probe.subscribe("room.9").await;
    assert_eq!(cluster.shardnumsub("im:room:9"), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_delivery_resumes_after_client_kill_and_restart() {
    let mut redis = RedisServer::start();
    let (a, b) = two_nodes("redis", &[redis.url()]).await;
    let (mut sub, mut publisher) = subscriber_and_publisher(&a, &b).await;

    assert!(redis.kill_pubsub_clients() >= 2);
    // Node b publishes; until it has seen its own subscriber connection die and re-subscribed
    // on a new one, a probe may pass while b still counts the dead connection as settled, and
    // b's next publish is then (rightly) refused. Its inbox back on Redis proves it has.
    eventually("node b re-subscribed after the kill", || async {
        redis.numsub("#switchyard:inbox:b") == 1
    })
    .await;
    delivery_resumes(&mut publisher, &mut sub, "room.1").await;

    tokio::task::block_in_place(|| redis.kill());
    refused_while_down(&a, &mut publisher).await;
    tokio::task::block_in_place(|| redis.restart());
    delivery_resumes(&mut publisher, &mut sub, "room.1").await;
    new_subscription_and_inbox_heal(&mut sub, &mut publisher).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_delivery_resumes_after_client_kill_failover_and_slot_migration() {
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 1));
    let (a, b) = two_nodes("redis-cluster", &cluster.urls()).await;
    let channel = "room.42";
    let backend_channel = "im:room:42";
    let mut sub = a.connect(&format!("channel={channel}")).await;
    let mut publisher = b.connect("").await;
    publisher.publish(channel, json!("before")).await;
    assert_eq!(sub.recv().await["data"], "before");

    assert!(cluster.kill_pubsub_clients() >= 1);
    delivery_resumes(&mut publisher, &mut sub, channel).await;

    let owner = cluster.master_index_of(backend_channel);
    tokio::task::block_in_place(|| cluster.fail_over(owner));
    delivery_resumes(&mut publisher, &mut sub, channel).await;
    assert_eq!(cluster.shardnumsub(backend_channel), 1, "still one subscription on the new master");

    let owner = cluster.master_index_of(backend_channel);
    let slot = switchyard_redis::slot::key_slot(backend_channel.as_bytes());
    let target = (owner + 1) % cluster.masters.len();
    tokio::task::block_in_place(|| cluster.migrate_slot(slot, target));
    delivery_resumes(&mut publisher, &mut sub, channel).await;
    assert_eq!(cluster.master_index_of(backend_channel), target);
    a.shutdown().await;
    b.shutdown().await;
}

/// The same cross-node suite on the memory backend: two brokers on one in-process bus, the
/// shape the fast tests use for multi-node behaviour without Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_two_nodes_publish_and_send_across() {
    use std::sync::Arc;
    use switchyard_memory::{MemoryBackend, MemoryBus};
    let bus = MemoryBus::new();
    let memory = |node: &str| {
        format!(
            "[node]\nid = \"{node}\"\n[auth]\nsend = \"anyone\"\n[backends.bus]\nkind = \"memory\"\n[[routes]]\nmatch = \"room.{{room}}\"\nchannel = \"im:room:{{room}}\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n"
        )
    };
    let a = TestBroker::with_backends(
        common::config(&memory("a")),
        vec![Arc::new(MemoryBackend::on_bus(&bus))],
    )
    .await;
    let b = TestBroker::with_backends(
        common::config(&memory("b")),
        vec![Arc::new(MemoryBackend::on_bus(&bus))],
    )
    .await;
    cross_node_publish_and_send(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// On Redis, `send` between nodes travels on the target node's inbox channel. With a catch-all
/// route that carries every client channel under its own name, no client channel reaches that
/// inbox: the old inbox name is an ordinary channel, and the reserved name is not a channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_channel_reads_a_node_inbox_on_redis() {
    let redis = RedisServer::start();
    let open = |node: &str| {
        format!(
            "[node]\nid = \"{node}\"\n[auth]\nsend = \"anyone\"\n[backends.main]\nkind = \"redis\"\n\
             url = \"{}\"\n[[routes]]\nmatch = \"**\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n",
            redis.url()
        )
    };
    let a = TestBroker::start(&open("a")).await;
    let b = TestBroker::start(&open("b")).await;
    let mut target = b.connect("").await;
    let mut spy = a.connect("").await;
    for reserved in ["#switchyard:inbox:b", "#switchyard:inbox:a"] {
        spy.error(json!({"op":"subscribe","channel":reserved}), "invalid_channel").await;
    }
    for lookalike in ["switchyard:inbox:b", "switchyard.inbox.b", "inbox.b"] {
        spy.subscribe(lookalike).await;
    }
    for broker in [&a, &b] {
        let addr = broker.addr;
        eventually("the node is ready", || async move {
            common::http(addr, "GET", "/readyz", &[], "").await.0 == 200
        })
        .await;
    }
    let mut sender = a.connect("").await;
    sender.ok(json!({"op":"send","to":target.conn,"data":"secret"})).await;
    assert_eq!(target.recv().await, json!({"op":"direct","from":sender.conn,"data":"secret"}));
    // The spy's next frame is the sentinel published after the send: nothing came before it.
    sender.publish("switchyard:inbox:b", json!("sentinel")).await;
    let first = spy.recv().await;
    assert_eq!(first["data"], "sentinel", "the spy saw inbox traffic: {first}");
    a.shutdown().await;
    b.shutdown().await;
}

/// On a channel without history, `ok` means this node's own subscribers get the message: while
/// the node's subscriber connection is re-subscribing (after Redis killed it, or restarted),
/// publishes through the node are answered `unavailable`, never `ok` and then lost here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_ok_means_this_nodes_subscribers_get_it() {
    let mut redis = RedisServer::start();
    let (a, b) = two_nodes("redis", &[redis.url()]).await;
    let mut sub = a.connect("channel=room.ok").await;
    let mut publisher = a.connect("").await;
    let mut delivered = 0;
    for fault in 0..2 {
        if fault == 0 {
            assert!(redis.kill_pubsub_clients() >= 1);
        } else {
            tokio::task::block_in_place(|| redis.restart());
        }
        for n in 0..150u64 {
            let frame = json!({"op":"publish","channel":"room.ok","data":{"n":n}});
            let answer = publisher.request(frame).await;
            if answer["op"] != "ok" {
                assert_eq!(answer["code"], "unavailable", "{answer}");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let m = sub.recv().await;
            assert_eq!(m["data"]["n"], n, "an acknowledged publish did not reach this node: {m}");
            delivered += 1;
        }
    }
    assert!(delivered > 100, "delivery resumed ({delivered} acknowledged)");
    a.shutdown().await;
    b.shutdown().await;
}
