//! Reconnects: the backend moves to another member when its server dies, async-nats restores
//! the subscriptions (one each), and a standalone server's restart heals by itself.

use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::conformance::{next, unique};
use switchyard_backend::{Backend, BackendError};
use switchyard_nats::subject::to_subject;
use switchyard_nats::testing::{backend, NatsCluster, NatsServer};
use switchyard_nats::wait_ready;

/// Publishes from `publisher` until `channel`'s next message arrives on `incoming`.
async fn arrives(publisher: &dyn Backend, incoming: &mut switchyard_backend::Incoming, ch: &str) {
    for _ in 0..200 {
        let _ = publisher.publish(ch, Bytes::from_static(b"probe")).await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), incoming.recv()).await
        {
            assert_eq!(&*m.channel, ch);
            return;
        }
    }
    panic!("delivery on {ch} did not resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_moves_to_another_member_when_its_server_dies() {
    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let urls = cluster.urls();
    let a = backend(urls.clone()).await;
    let b = backend(vec![urls[1].clone(), urls[2].clone(), urls[0].clone()]).await;
    let mut a_in = a.take_incoming().expect("incoming");
    let ch = unique("failover");
    a.subscribe(&ch).await.expect("subscribe");
    assert_eq!(cluster.servers[0].subscriptions(&to_subject(&ch)), 1);

    tokio::task::block_in_place(|| cluster.kill(0));
    wait_ready(&*a, Duration::from_secs(15)).await.expect("a reconnects to another member");
    arrives(&*b, &mut a_in, &ch).await;
    assert_eq!(cluster.subscriptions(&to_subject(&ch)), 1, "restored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_restart_heals_and_unavailable_is_quick() {
    let mut server = tokio::task::block_in_place(NatsServer::start);
    let a = backend(vec![server.url()]).await;
    let mut a_in = a.take_incoming().expect("incoming");
    let ch = unique("restart");
    a.subscribe(&ch).await.expect("subscribe");

    tokio::task::block_in_place(|| server.kill());
    wait_until_unready(&*a).await;
    let started = std::time::Instant::now();
    let answer = a.publish(&ch, Bytes::from_static(b"lost")).await;
    assert!(matches!(answer, Err(BackendError::Unavailable(_))), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "unavailable at once, never a hang");

    tokio::task::block_in_place(|| server.restart());
    wait_ready(&*a, Duration::from_secs(15)).await.expect("a reconnects");
    arrives(&*a, &mut a_in, &ch).await;
    assert_eq!(server.subscriptions(&to_subject(&ch)), 1, "restored by async-nats");
    a.publish(&ch, Bytes::from_static(b"after")).await.expect("publish");
    assert_eq!(next(&mut a_in, "after").await.payload, Bytes::from_static(b"after"));
}

async fn wait_until_unready(backend: &dyn Backend) {
    for _ in 0..500 {
        if backend.ready().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the backend still reports ready with its only server dead");
}
