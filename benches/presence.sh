#!/usr/bin/env bash
# Presence figures: two broker nodes on a local 3-master Redis Cluster with three routes ahead
# of the catch-all (`pres.**` with presence, `presjl.**` with presence and join_leave,
# `plain.**` without; presence_ttl_s at its default), the `presence` scenario of
# switchyard-load, three runs of each; prints the medians.
#   (a) counts: 10,000 members on one channel (5,000 per node), then from a reader on node a
#       10,000 pings (the baseline) and 10,000 counts queries one after another, and 200 member
#       pages of 100 and of 1,000;
#   (b) subscribe: 100 connections × 1,000 channels of their own, all in flight, on `plain.*` and
#       on `pres.*` (runs alternate), with the Redis servers' CPU and their EVALSHA times; the
#       same on one memory broker;
#   (c) join storm: 10 watchers on a join_leave channel while 5,000 connections join it.
# Presence queries cost subscribe tokens, so the limits are raised far past what is asked.
# Each run uses channels of its own, and waits until the brokers have written the last one's
# leaves.
#   benches/presence.sh            (from the repository root; needs redis-server and redis-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

routes='[[routes]]
match = "pres.**"
subscribe = "anyone"
publish = "anyone"
presence = true

[[routes]]
match = "presjl.**"
subscribe = "anyone"
publish = "anyone"
presence = true
join_leave = true

[[routes]]
match = "plain.**"
subscribe = "anyone"
publish = "anyone"
'
limits='[limits]
subscribe_rate = 1000000.0
subscribe_burst = 1000000.0
max_subscriptions = 10000'

with_routes() { # < config > config: the presence routes ahead of the first route, then limits
    ROUTES="$routes" awk '/^\[\[routes\]\]/ && !done { print ENVIRON["ROUTES"]; done = 1 } { print }'
    printf '\n%s\n' "$limits"
}

benches/redis-cluster.sh start 7101 >/dev/null
for n in a b; do
    port=$([ $n = a ] && echo 8081 || echo 8082)
    cluster_node_config "$n" "$port" | with_routes >"$out/node-$n.toml"
    serve "$out/node-$n.toml" "$port"
done
two=$(IFS=,; echo "${pids[*]}")
urls=ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws
masters=(7101 7102 7103)
# The Redis servers' CPU is reported apart from the brokers' (--backend-pid).
redis=$(for p in "${masters[@]}"; do
    redis-cli -p "$p" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'
done | paste -sd,)
# The members of a run leave when it ends, and writing 100,000 leaves takes the brokers
# seconds: wait until no presence write happened for a second before the next run.
presence_writes() { # ports... : switchyard_presence_writes_total summed over the brokers
    for port in "$@"; do curl -sf "http://127.0.0.1:$port/metrics"; done |
        awk '/^switchyard_presence_writes_total/ { s += $NF } END { print s + 0 }'
}
settle() { # ports... ; prints how long the writes went on (to the second)
    local last=-1 now start=$SECONDS
    while now=$(presence_writes "$@") && [ "$now" != "$last" ]; do
        last=$now
        sleep 1
    done
    echo $((SECONDS - start - 1))
}

for i in 1 2 3; do
    "$load" presence counts --url "$urls" --members 10000 --queries 10000 \
        --channel "pres.counts.$i" --pid "$two" --backend-pid "$redis" \
        --json "$out/counts-$i.json" >/dev/null
    settle 8081 8082 >/dev/null
done
# Redis's own account of the presence scripts over the subscribe runs (joins, and the leaves
# when each run's connections close).
for p in "${masters[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done
for i in 1 2 3; do
    for kind in plain pres; do
        "$load" presence subscribe --url "$urls" --connections 100 --channels 1000 \
            --prefix "$kind.r$i" --pid "$two" --backend-pid "$redis" \
            --json "$out/sub-cluster-$kind-$i.json" >/dev/null
        settle 8081 8082 >>"$out/drain-cluster-$kind.txt"
    done
done
for p in "${masters[@]}"; do
    redis-cli -p "$p" info commandstats | grep '^cmdstat_evalsha:' || true
done >"$out/evalsha.txt"
for i in 1 2 3; do
    "$load" presence join-storm --url "$urls" --watchers 10 --joins 5000 \
        --channel "presjl.storm.$i" --pid "$two" --backend-pid "$redis" --drain-timeout 10 \
        --json "$out/storm-$i.json" >/dev/null
    settle 8081 8082 >/dev/null
done

# The memory backend: one node, the same routes.
printf '[node]\nid = "mem"\n\n[server]\nlisten = "127.0.0.1:8083"\n\n[backends.local]\nkind = "memory"\n\n[[routes]]\nmatch = "**"\nsubscribe = "anyone"\npublish = "anyone"\n' |
    with_routes >"$out/memory.toml"
serve "$out/memory.toml" 8083
for i in 1 2 3; do
    for kind in plain pres; do
        "$load" presence subscribe --url ws://127.0.0.1:8083/ws --connections 100 --channels 1000 \
            --prefix "$kind.m$i" --pid "${pids[-1]}" --json "$out/sub-memory-$kind-$i.json" \
            >/dev/null
        settle 8083 >>"$out/drain-memory-$kind.txt"
    done
done

python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def load(name):
    return [json.load(open(f"{out}/{name}-{i}.json")) for i in (1, 2, 3)]
def med(xs):
    return statistics.median(xs)
def runs(xs, fmt):
    return "[" + ", ".join(fmt.format(x) for x in xs) + "]"

counts = [r["presence"] for r in load("counts")]
p = lambda k: [c["latency"][k] / 1000 for c in counts]
print(f"counts, 10000 members, 2 nodes: p50 {med(p('p50_us')):.3f} ms  "
      f"p99 {med(p('p99_us')):.3f} ms {runs(p('p99_us'), '{:.3f}')}  "
      f"max {med(p('max_us')):.3f} ms  {med([c['queries_per_s'] for c in counts]):.0f} queries/s  "
      f"broker {med([c['broker_cpu_us_per_query'] for c in counts]):.1f} + Redis "
      f"{med([c['backend_cpu_us_per_query'] for c in counts]):.1f} CPU-µs/query  "
      f"wrong {max(c['wrong_counts'] for c in counts)}")
pg = lambda k: [c["ping_latency"][k] / 1000 for c in counts]
print(f"  baseline pings: p50 {med(pg('p50_us')):.3f} ms  p99 {med(pg('p99_us')):.3f} ms "
      f"{runs(pg('p99_us'), '{:.3f}')}  max {med(pg('max_us')):.3f} ms")
for k, limit in enumerate(counts[0]["pages"]):
    pg = [c["pages"][k] for c in counts]
    q = lambda key: [x["latency"][key] / 1000 for x in pg]
    print(f"  page of {limit['limit']:>4}: p50 {med(q('p50_us')):.3f} ms  "
          f"p99 {med(q('p99_us')):.3f} ms {runs(q('p99_us'), '{:.3f}')}  "
          f"max {med(q('max_us')):.3f} ms  wrong walks {max(x['wrong_walks'] for x in pg)}")

for backend in ("cluster", "memory"):
    rate, total = {}, {}
    for kind in ("plain", "pres"):
        rs = [r["presence"] for r in load(f"sub-{backend}-{kind}")]
        assert all(r["presence_on"] == (kind == "pres") for r in rs), f"{kind}: presence_on wrong"
        rate[kind] = [r["subscribes_per_s"] for r in rs]
        cpu = [r["broker_cpu_us_per_subscribe"] for r in rs]
        red = [r["backend_cpu_us_per_subscribe"] or 0 for r in rs]
        total[kind] = med([a + b for a, b in zip(cpu, red)])
        p99 = [r["latency"]["p99_us"] / 1000 for r in rs]
        print(f"subscribe {backend:<7} presence {'on ' if kind == 'pres' else 'off'}: "
              f"{med(rate[kind]):8.0f}/s {runs(rate[kind], '{:.0f}')}  "
              f"p99 {med(p99):.1f} ms  broker {med(cpu):.1f} + Redis {med(red):.1f} "
              f"CPU-µs/subscribe  refused {max(r['refused'] for r in rs)}")
    drain = [int(x) for x in open(f"{out}/drain-{backend}-pres.txt").read().split()]
    print(f"  after each presence run, its 100000 leaves were written within {runs(drain, '{} s')}")
    ratios = [on / off for on, off in zip(rate["pres"], rate["plain"])]
    print(f"  on/off {backend}: {med(rate['pres']) / med(rate['plain']):.0%} of medians "
          f"(per run {runs(ratios, '{:.0%}')}); CPU per subscribe "
          f"{total['pres'] / total['plain']:.2f}×")

st = [r["presence"] for r in load("storm")]
f = lambda k: [s[k] for s in st]
print(f"join storm, 5000 joins, 10 watchers, 2 nodes: joined {min(f('joined'))} (min) in "
      f"{med(f('joining_s')):.2f} s; per watcher {med(f('diffs_median')):.0f} diffs "
      f"{runs(f('diffs_median'), '{:.0f}')}, {med(f('bytes_median')) / 1024:.0f} KiB, last join "
      f"heard {med(f('last_join_s_median')):.2f} s after the start, "
      f"{med(f('diffs_per_s_median')):.1f} diffs/s {runs(f('diffs_per_s_median'), '{:.1f}')}, "
      f"{med(f('members_per_diff_median')):.0f} members/diff; broker CPU "
      f"{med(f('broker_cpu_s')):.2f} s {runs(f('broker_cpu_s'), '{:.2f}')} + Redis "
      f"{med(f('backend_cpu_s')):.2f} s; complete "
      f"{min(f('complete'))}/10 (min); per joiner {med(f('joiner_diffs_mean')):.1f} diffs")
ev = [l.split(":", 1)[1] for l in open(f"{out}/evalsha.txt") if l.startswith("cmdstat_evalsha:")]
ev = [dict(kv.split("=") for kv in l.strip().split(",")) for l in ev]
calls = sum(int(e["calls"]) for e in ev)
usec = sum(int(e["usec"]) for e in ev)
print(f"Redis EVALSHA over the cluster subscribe runs (presence joins and leaves): {calls} calls, "
      f"{usec / max(calls, 1):.1f} µs per call")
PY
echo "reports: $out"
