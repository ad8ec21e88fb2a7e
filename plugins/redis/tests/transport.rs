//! TLS (`rediss://`) and unix sockets (`unix://`) on real redis-servers, for both stacks: the
//! publisher (redis-rs) and the hand-driven subscriber connections. Certificates come from a
//! throwaway CA made with the `openssl` CLI.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::conformance::{next, unique};
use switchyard_backend::Backend;
use switchyard_redis::testing::{RedisCluster, RedisServer, TestTls};
use switchyard_redis::{
    wait_ready, RedisBackend, RedisClusterBackend, RedisClusterOptions, RedisOptions, TlsFiles,
};

fn standalone(url: String, tls: TlsFiles) -> RedisBackend {
    let mut o = RedisOptions { url, ..RedisOptions::default() };
    o.connection.reconnect_min = Duration::from_millis(20);
    o.connection.reconnect_max = Duration::from_millis(300);
    o.connection.tls = tls;
    RedisBackend::connect(o).expect("connect")
}

/// `a` subscribes to each channel, `b` publishes to it, and `a` gets it.
async fn delivers(a: &dyn Backend, b: &dyn Backend, channels: &[String]) {
    wait_ready(a, Duration::from_secs(15)).await.expect("subscriber side ready");
    wait_ready(b, Duration::from_secs(15)).await.expect("publisher side ready");
    let mut incoming = a.take_incoming().expect("incoming");
    for ch in channels {
        a.subscribe(ch).await.expect("subscribe");
    }
    for ch in channels {
        let payload = Bytes::from(format!("over the wire to {ch}"));
        assert_eq!(b.publish(ch, payload.clone()).await.expect("publish"), 1, "receivers");
        let m = next(&mut incoming, ch).await;
        assert_eq!((&*m.channel, m.payload), (ch.as_str(), payload));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_standalone_delivers_with_a_private_ca() {
    let tls = Arc::new(TestTls::generate());
    let server = RedisServer::start_tls(&tls, false);
    assert!(server.url().starts_with("rediss://"));
    let ca_only = TlsFiles { ca_file: Some(tls.ca()), ..TlsFiles::default() };
    let a = standalone(server.url(), ca_only.clone());
    let b = standalone(server.url(), ca_only);
    delivers(&a, &b, &[unique("tls"), unique("tls2")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate_is_presented_when_the_server_requires_one() {
    let tls = Arc::new(TestTls::generate());
    let server = RedisServer::start_tls(&tls, true);
    let a = standalone(server.url(), tls.files());
    let b = standalone(server.url(), tls.files());
    delivers(&a, &b, &[unique("mtls")]).await;
    // Without the client certificate the server refuses the handshake: never ready.
    let ca_only = TlsFiles { ca_file: Some(tls.ca()), ..TlsFiles::default() };
    let refused = standalone(server.url(), ca_only);
    assert!(wait_ready(&refused, Duration::from_secs(2)).await.is_err(), "ready without cert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_an_untrusted_ca_never_becomes_ready() {
    let (tls, other) = (Arc::new(TestTls::generate()), TestTls::generate());
    let server = RedisServer::start_tls(&tls, false);
    let wrong = TlsFiles { ca_file: Some(other.ca()), ..TlsFiles::default() };
    let b = standalone(server.url(), wrong);
    assert!(wait_ready(&b, Duration::from_secs(2)).await.is_err(), "trusted a foreign CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_delivers() {
    let server = RedisServer::start_unix();
    let url = server.url();
    assert!(url.starts_with("unix://"), "{url}");
    let a = standalone(url.clone(), TlsFiles::default());
    // redis-rs's spelling of the same thing.
    let b = standalone(url.replacen("unix://", "redis+unix://", 1), TlsFiles::default());
    delivers(&a, &b, &[unique("unix"), unique("unix2")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_delivers_on_every_master() {
    let tls = Arc::new(TestTls::generate());
    let cluster = RedisCluster::start_tls(3, &tls);
    let options = || {
        let mut o = RedisClusterOptions { nodes: cluster.urls(), ..Default::default() };
        o.connection.reconnect_min = Duration::from_millis(20);
        o.connection.reconnect_max = Duration::from_millis(300);
        o.connection.tls = tls.files();
        o
    };
    let a = RedisClusterBackend::connect(options()).expect("connect");
    let b = RedisClusterBackend::connect(options()).expect("connect");
    // Enough channels that every master (learned from CLUSTER SLOTS, so over TLS too) gets
    // some.
    let channels = cluster.channels_on_every_master(&unique("tlscluster"), 4);
    delivers(&a, &b, &channels).await;
}
