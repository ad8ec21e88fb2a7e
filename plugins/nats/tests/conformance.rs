//! The backend conformance suite against real nats-server processes: one standalone server,
//! and a 3-server cluster with the two backend instances on different members (so every
//! check also crosses a route).

use switchyard_backend::conformance::{self, Pair};
use switchyard_nats::testing::{backend, NatsCluster, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_one_server() {
    let server = NatsServer::start();
    let url = server.url();
    conformance::run_all(|| {
        let url = url.clone();
        async move { Pair::new(backend(vec![url.clone()]).await, backend(vec![url]).await) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_cluster_across_members() {
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    conformance::run_all(|| {
        // a starts on member 0, b on member 1; both know every member.
        let a_urls = urls.clone();
        let b_urls = vec![urls[1].clone(), urls[2].clone(), urls[0].clone()];
        async move { Pair::new(backend(a_urls).await, backend(b_urls).await) }
    })
    .await;
}
