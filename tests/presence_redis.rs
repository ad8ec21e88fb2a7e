//! Presence on real redis-server processes: the shared scenarios (`common::presence`) on two
//! broker nodes over a standalone Redis and over a 3-master cluster; and, on the cluster with
//! two `switchyard serve` processes, a channel of 10,000 members paged while members come and
//! go, and a node killed with SIGKILL whose members are gone within the route's lease.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::presence::{self as scenario, all_members, counts, members, node_config, presence};
use common::{Client, RawWs, Secrets, ServedBroker, TestBroker};
use futures_util::future::join_all;
use serde_json::json;
use switchyard_redis::testing::{RedisCluster, RedisServer};

fn redis_backend(url: &str) -> String {
    format!("[backends.main]\nkind = \"redis\"\nurl = \"{url}\"\n")
}

fn cluster_backend(cluster: &RedisCluster) -> String {
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!("[backends.main]\nkind = \"redis-cluster\"\nnodes = [{}]\n", nodes.join(", "))
}

async fn two_nodes(backend: &str) -> (TestBroker, TestBroker, Secrets) {
    let secrets = Secrets::new();
    let a = TestBroker::start(&node_config("a", &secrets, backend)).await;
    let b = TestBroker::start(&node_config("b", &secrets, backend)).await;
    common::wait_ready(&[&a, &b]).await;
    (a, b, secrets)
}

/// Every scenario, each on two fresh nodes of `backend`.
async fn run_scenarios(backend: &str) {
    let (a, b, _s) = two_nodes(backend).await;
    scenario::members_of_both_nodes_are_counted_listed_and_paged(&a, &b).await;
    scenario::joins_and_leaves_reach_subscribers_coalesced(&a, &b).await;
    scenario::presence_needs_subscribe_permission_and_a_presence_route(&a).await;
    scenario::the_http_api_answers_presence(&a).await;
    let (a, b, _s) = two_nodes(backend).await;
    scenario::members_leave_on_unsubscribe_disconnect_and_node_shutdown(&a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_two_nodes_on_redis() {
    let server = RedisServer::start();
    run_scenarios(&redis_backend(&server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_two_nodes_on_a_redis_cluster() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    run_scenarios(&cluster_backend(&cluster)).await;
}

/// The lease of the served nodes' presence route: the shortest allowed, so the SIGKILL check
/// waits little.
const TTL_S: u64 = 3;

/// `big.*` keeps presence without diffs (10,000 joins would be diffs to nobody).
fn served_config(node: &str, backend: &str) -> String {
    format!(
        "[node]\nid = \"{node}\"\n{backend}\n[[routes]]\nmatch = \"big.{{id}}\"\n\
         subscribe = \"anyone\"\npublish = \"anyone\"\npresence = true\npresence_ttl_s = {TTL_S}\n"
    )
}

/// `n` connections to `addr`, each subscribed to `channel` on connect, opened 100 at a time.
async fn open(addr: SocketAddr, channel: &str, n: usize) -> Vec<RawWs> {
    let mut out = Vec::with_capacity(n);
    let path = format!("/ws?channel={channel}");
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        out.extend(join_all(chunk.iter().map(|_| RawWs::connect(addr, &path))).await);
    }
    out
}

/// Polls the counts of `channel` until they are `want`.
async fn wait_counts(reader: &mut Client, channel: &str, want: (u64, u64), within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = counts(&presence(reader, channel, json!({"members": false})).await);
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "counts stayed {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_members_paged_with_churn_and_a_killed_node() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let backend = cluster_backend(&cluster);
    let a = ServedBroker::start(&served_config("a", &backend)).await;
    let b = ServedBroker::start(&served_config("b", &backend)).await;
    let mut on_a = open(a.addr, "big.1", 5000).await;
    let on_b = open(b.addr, "big.1", 5000).await;
    let mut reader = Client::connect(&format!("ws://{}/ws", a.addr)).await;
    wait_counts(&mut reader, "big.1", (10_000, 0), Duration::from_secs(60)).await;
    let everyone: BTreeSet<String> = on_a.iter().chain(&on_b).map(|c| c.conn.clone()).collect();
    assert_eq!(everyone.len(), 10_000);
    assert_eq!(
        all_members(&mut reader, "big.1", 1000).await.into_keys().collect::<BTreeSet<_>>(),
        everyone,
        "a quiet walk lists every member once"
    );

    // Walk again while members come and go between pages: 50 leave and 50 join each time.
    let mut leavers: Vec<RawWs> = on_a.drain(..500).collect();
    let steady: BTreeSet<String> = on_a.iter().chain(&on_b).map(|c| c.conn.clone()).collect();
    let mut comers = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut extra = json!({"limit": 1000});
        if let Some(c) = &cursor {
            extra["cursor"] = json!(c);
        }
        let page = presence(&mut reader, "big.1", extra).await;
        for conn in members(&page).into_keys() {
            *seen.entry(conn).or_default() += 1;
        }
        leavers.truncate(leavers.len().saturating_sub(50));
        comers.extend(open(a.addr, "big.1", 50).await);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let repeated: Vec<&String> = seen.iter().filter(|(_, n)| **n > 1).map(|(c, _)| c).collect();
    assert!(repeated.is_empty(), "members listed twice: {repeated:?}");
    let lost: Vec<&String> = steady.iter().filter(|c| !seen.contains_key(*c)).collect();
    assert!(lost.is_empty(), "{} steady members were skipped, e.g. {:?}", lost.len(), lost.first());

    // SIGKILL node b: nothing tells Redis, but its members' leases end within the TTL.
    let present = (steady.len() + comers.len() + leavers.len()) as u64;
    wait_counts(&mut reader, "big.1", (present, 0), Duration::from_secs(30)).await;
    let b_members = on_b.len() as u64;
    drop(b);
    tokio::time::sleep(Duration::from_millis(TTL_S * 1000 + 300)).await;
    let answer = presence(&mut reader, "big.1", json!({"members": false})).await;
    assert_eq!(
        counts(&answer),
        (present - b_members, 0),
        "a lease after the kill, the killed node's {b_members} members are gone"
    );
    drop(on_b);
}
