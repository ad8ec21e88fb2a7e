//! Wire-frame costs per payload size (32, 1024, 8192 bytes): decoding a client publish frame
//! (WebSocket unmasking + JSON), encoding the `message` frame subscribers get, and framing it.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::protocol::wire::{self, FrameReader};
use switchyard::protocol::{decode, encode, ClientOp};

const SIZES: [usize; 3] = [32, 1024, 8192];

fn data(size: usize) -> String {
    // A JSON string value of `size` bytes including its quotes.
    format!("\"{}\"", "x".repeat(size.saturating_sub(2)))
}

fn publish_frame(size: usize) -> String {
    format!(r#"{{"op":"publish","channel":"room.42","data":{},"id":17}}"#, data(size))
}

/// A masked client frame carrying `payload`, as a browser sends it.
fn masked(payload: &[u8]) -> Vec<u8> {
    wire::encode_frame(true, wire::OP_TEXT, payload, Some([1, 2, 3, 4]))
}

fn decode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    for size in SIZES {
        let frame = publish_frame(size);
        let wire = masked(frame.as_bytes());
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            let mut reader = FrameReader::new(1 << 20);
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let Ok(Some(wire::Received::Text(text))) = reader.next(&mut buf) else {
                    panic!("frame")
                };
                let text = std::str::from_utf8(&text).expect("utf8");
                match decode(text).expect("decode").op {
                    ClientOp::Publish { channel, data } => {
                        black_box((channel.len(), data.get().len()))
                    }
                    _ => panic!("publish"),
                };
            })
        });
    }
    group.finish();
}

fn encode_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_message");
    for size in SIZES {
        let d = data(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &d, |b, d| {
            b.iter(|| {
                let json = encode::message(black_box("room.42"), black_box(d), Some("alice"));
                black_box(wire::text_frame(&json))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_publish, encode_message);
criterion_main!(benches);
