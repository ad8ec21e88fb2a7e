//! Hub fan-out: one backend message queued to 10, 1,000 and 100,000 local subscribers. Measures
//! framing once plus one outbox push per subscriber (the outboxes have no socket, so the
//! syscalls are left out); throughput is per delivery.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::bench::Fanout;
use switchyard_memory::MemoryBackend;

fn fanout(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("hub_fanout");
    for subscribers in [10usize, 1_000, 100_000] {
        let mut fixture =
            runtime.block_on(Fanout::new(Arc::new(MemoryBackend::new()), subscribers));
        group.throughput(Throughput::Elements(subscribers as u64));
        // Kicks of many connections are spread over spawned tasks, which need a runtime.
        let _runtime = runtime.enter();
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter(|| fixture.deliver_and_drain())
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
