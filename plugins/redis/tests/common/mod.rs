//! Helpers shared by the Redis backends' test files.

#![allow(dead_code)] // not every test file uses every helper

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::{Backend, Incoming};
use switchyard_redis::testing::{RedisCluster, RedisServer};
use switchyard_redis::{wait_ready, RedisBackend, RedisClusterBackend};
use switchyard_redis::{RedisClusterOptions, RedisOptions};

/// Options for a standalone backend on `server`, with fast reconnects and a 2 s command timeout.
pub fn standalone_options(server: &RedisServer) -> RedisOptions {
    let mut o = RedisOptions { url: server.url(), ..RedisOptions::default() };
    o.connection.reconnect_min = Duration::from_millis(20);
    o.connection.reconnect_max = Duration::from_millis(300);
    o.connection.command_timeout = Duration::from_secs(2);
    o
}

/// A ready standalone backend on `server`.
pub async fn standalone(server: &RedisServer) -> Arc<dyn Backend> {
    let b = RedisBackend::connect(standalone_options(server)).expect("connect");
    wait_ready(&b, Duration::from_secs(10)).await.expect("ready");
    Arc::new(b)
}

/// A ready cluster backend on `cluster`, with fast reconnects and topology refreshes.
pub async fn clustered(cluster: &RedisCluster) -> Arc<dyn Backend> {
    let mut o = RedisClusterOptions { nodes: cluster.urls(), ..RedisClusterOptions::default() };
    o.connection.reconnect_min = Duration::from_millis(20);
    o.connection.reconnect_max = Duration::from_millis(300);
    o.connection.command_timeout = Duration::from_secs(2);
    o.topology_refresh_interval = Duration::from_secs(2);
    let b = RedisClusterBackend::connect(o).expect("connect");
    wait_ready(&b, Duration::from_secs(15)).await.expect("ready");
    Arc::new(b)
}

/// Publishes until a message arrives with the expected prefix: after a fault the first
/// publishes may be refused or land before the re-subscription. Fails after `within`.
pub async fn publish_until_delivered(
    publisher: &dyn Backend,
    incoming: &mut Incoming,
    channel: &str,
    what: &str,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let payload = format!("{what} #{attempt}");
        let _ = publisher.publish(channel, Bytes::from(payload)).await;
        match tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await {
            Ok(Some(m)) => {
                assert_eq!(&*m.channel, channel);
                assert!(
                    m.payload.starts_with(what.as_bytes()),
                    "unexpected payload {:?}",
                    m.payload
                );
                // Drain copies of earlier attempts that raced with this one.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(100), incoming.recv()).await
                {
                }
                return;
            }
            Ok(None) => panic!("incoming ended"),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "delivery on {channel} did not resume ({what})"
            ),
        }
    }
}
