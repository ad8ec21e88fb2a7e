//! Hub fan-out: one backend message queued to 10, 1,000 and 100,000 local subscribers. Measures
//! framing once plus one outbox push per subscriber (the outboxes have no socket, so the
//! syscalls are left out); throughput is per delivery.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::hub::{Hub, HubBackend, TopicKey};
use switchyard::metrics::Metrics;
use switchyard::outbox::Outbox;
use switchyard_backend::Message;
use switchyard_memory::MemoryBackend;

fn fanout(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("hub_fanout");
    for subscribers in [10usize, 1_000, 100_000] {
        let hub = Hub::new(
            Arc::from("bench"),
            vec![HubBackend { name: Arc::from("local"), backend: Arc::new(MemoryBackend::new()) }],
            None,
            Metrics::new(),
        );
        let key = TopicKey { backend: 0, channel: Arc::from("room.42") };
        let outboxes: Vec<Arc<Outbox>> =
            (0..subscribers).map(|_| Arc::new(Outbox::new(1 << 20, false, None))).collect();
        runtime.block_on(async {
            for (i, o) in outboxes.iter().enumerate() {
                hub.subscribe(&key, i as u64, o).await.expect("subscribe");
            }
        });
        let payload = Bytes::from(
            r#"{"op":"message","channel":"room.42","data":{"text":"hello, room"},"user":"alice"}"#,
        );
        group.throughput(Throughput::Elements(subscribers as u64));
        let mut drained = Vec::new();
        // Kicks of many connections are spread over spawned tasks, which need a runtime.
        let _runtime = runtime.enter();
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter(|| {
                hub.deliver(0, Message { channel: key.channel.clone(), payload: payload.clone() });
                // Drain so queues stay bounded and the next iteration measures the same work.
                for o in &outboxes {
                    o.take(&mut drained);
                    drained.clear();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
