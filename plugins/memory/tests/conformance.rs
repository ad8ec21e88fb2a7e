//! The backend conformance suite on the memory backend: two nodes on one in-process bus.

use std::sync::Arc;

use switchyard_backend::conformance::{self, Pair};
use switchyard_memory::{MemoryBackend, MemoryBus};

fn pair() -> Pair {
    let bus = MemoryBus::new();
    Pair::new(Arc::new(MemoryBackend::on_bus(&bus)), Arc::new(MemoryBackend::on_bus(&bus)))
}

#[tokio::test]
async fn memory_backend_passes_the_conformance_suite() {
    conformance::run_all(|| async { pair() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_passes_the_history_suite() {
    conformance::run_history(|| async { pair() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_passes_the_presence_suite() {
    conformance::run_presence(|| async { pair() }).await;
}
