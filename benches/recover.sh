#!/usr/bin/env bash
# Recovery on the cluster path: two broker nodes on a local 3-master Redis Cluster with history
# on the catch-all route (history_size = 2000, recovery_max = 2000), the `recover` scenario,
# three runs each; prints the medians.
#   (a) 1,000 missed messages recovered by 1 client, then by 100 clients at once (clients spread
#       over both nodes; the publisher is on one of them);
#   (b) a storm: 10,000 clients recovering one channel (100 missed) on ONE node.
# Recovery time runs from sending the `subscribe` with `since` to the last missed message.
#   benches/recover.sh            (from the repository root; needs redis-server and redis-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

benches/redis-cluster.sh start 7101 >/dev/null
history=$'history_size = 2000\nrecovery_max = 2000'
for n in a b; do
    port=$([ $n = a ] && echo 8081 || echo 8082)
    cluster_node_config "$n" "$port" "$history" >"$out/node-$n.toml"
    serve "$out/node-$n.toml" "$port"
done
two=$(IFS=,; echo "${pids[*]}")
urls=ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws
for clients in 1 100; do
    for i in 1 2 3; do
        "$load" recover --url "$urls" --clients "$clients" --missed 1000 --pid "$two" \
            --json "$out/a-$clients-$i.json" >/dev/null
    done
done
for i in 1 2 3; do
    "$load" recover --url ws://127.0.0.1:8081/ws --clients 10000 --missed 100 \
        --channel bench.recover.storm --pid "${pids[0]}" --drain-timeout 30 \
        --json "$out/storm-$i.json" >/dev/null
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def med(runs, f):
    return statistics.median(f(r) for r in runs)
def line(label, runs):
    rc = [r["recover"] for r in runs]
    p50 = med(rc, lambda r: r["recovery"]["p50_us"]) / 1000
    p99 = med(rc, lambda r: r["recovery"]["p99_us"]) / 1000
    mx = med(rc, lambda r: r["recovery"]["max_us"]) / 1000
    allr = med(rc, lambda r: r["all_recovered_s"]) * 1000
    reads = med(rc, lambda r: r["backend_reads_after"] - r["backend_reads_before"])
    cpu = med(runs, lambda r: r["broker"]["cpu_s"])
    ok = min(r["recovered"] for r in rc)
    bad = max(r["not_recovered"] + r["wrong"] for r in rc)
    print(f"{label:<36} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  max {mx:8.1f} ms  "
          f"all {allr:8.1f} ms  backend reads {reads:5.0f}  broker CPU {cpu:5.2f} s  "
          f"recovered {ok} (min), not recovered/wrong {bad} (max)")
for clients in (1, 100):
    runs = [json.load(open(f"{out}/a-{clients}-{i}.json")) for i in (1, 2, 3)]
    line(f"{clients} client(s), 1000 missed, 2 nodes", runs)
runs = [json.load(open(f"{out}/storm-{i}.json")) for i in (1, 2, 3)]
line("10000 clients, 100 missed, 1 node", runs)
PY
