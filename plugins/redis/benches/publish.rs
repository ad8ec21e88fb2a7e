//! Publish throughput of the redis and redis-cluster backends against real local servers
//! (started by the `testing` harness). Each iteration publishes `BATCH` 64-byte messages from
//! `CONCURRENCY` tasks sharing one backend, so the multiplexed publisher connections pipeline.
//!
//! Run: `cargo bench -p switchyard-redis --features testing --bench publish`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_backend::Backend;
use switchyard_redis::testing::{RedisCluster, RedisServer};
use switchyard_redis::{
    wait_ready, RedisBackend, RedisClusterBackend, RedisClusterOptions, RedisOptions,
};

const BATCH: u64 = 20_000;
const CONCURRENCY: u64 = 64;

async fn publish_batch(backend: Arc<dyn Backend>) -> Duration {
    let payload = Bytes::from(vec![b'x'; 64]);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let (backend, payload) = (backend.clone(), payload.clone());
            tokio::spawn(async move {
                let channel = format!("bench.{t}");
                for _ in 0..BATCH / CONCURRENCY {
                    backend.publish(&channel, payload.clone()).await.expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(BATCH)).sample_size(10);

    let server = RedisServer::start();
    let standalone: Arc<dyn Backend> = rt.block_on(async {
        let b = RedisBackend::connect(RedisOptions { url: server.url(), ..Default::default() })
            .expect("connect");
        wait_ready(&b, Duration::from_secs(10)).await.expect("ready");
        Arc::new(b)
    });
    group.bench_function("redis", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let backend = standalone.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += publish_batch(backend.clone()).await;
                }
                total
            }
        })
    });

    let cluster = RedisCluster::start(3, 0);
    let clustered: Arc<dyn Backend> = rt.block_on(async {
        let b = RedisClusterBackend::connect(RedisClusterOptions {
            nodes: cluster.urls(),
            ..Default::default()
        })
        .expect("connect");
        wait_ready(&b, Duration::from_secs(10)).await.expect("ready");
        Arc::new(b)
    });
    group.bench_function("redis-cluster", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let backend = clustered.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += publish_batch(backend.clone()).await;
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
