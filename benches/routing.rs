//! Rule resolution with 10, 1,000 and 10,000 rules: the cost of `resolve` for a channel that
//! matches the last literal rule (worst case for a linear scan), a wildcard rule, and nothing.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::channel::ChannelName;
use switchyard::config::Config;

fn config(rules: usize) -> Config {
    let mut toml = String::from("[backends.local]\nkind = \"memory\"\n");
    // Realistic shapes: per-tenant literal prefixes with captures, then a few wildcards.
    for i in 0..rules.saturating_sub(2) {
        toml.push_str(&format!(
            "[[routes]]\nmatch = \"tenant{i}.room.{{room}}\"\nchannel = \"t{i}:room:{{room}}\"\nsubscribe = \"anyone\"\n"
        ));
    }
    toml.push_str("[[routes]]\nmatch = \"user.{id}\"\nsubscribe = \"user == {id}\"\n");
    toml.push_str("[[routes]]\nmatch = \"public.**\"\nsubscribe = \"anyone\"\n");
    Config::parse("bench.toml", &toml).expect("bench config")
}

fn resolve(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    group.throughput(Throughput::Elements(1));
    for rules in [10usize, 1_000, 10_000] {
        let cfg = config(rules);
        let last_literal =
            ChannelName::parse(&format!("tenant{}.room.42", rules - 3)).expect("channel");
        let wildcard = ChannelName::parse("public.news.sports.today").expect("channel");
        let miss = ChannelName::parse("nothing.matches.this").expect("channel");
        for (name, channel) in
            [("last_literal", &last_literal), ("wildcard", &wildcard), ("no_match", &miss)]
        {
            group.bench_with_input(BenchmarkId::new(name, rules), channel, |b, ch| {
                b.iter(|| {
                    let r = cfg.rules.resolve(black_box(ch));
                    black_box(r.map(|r| r.backend_channel(ch)))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);
