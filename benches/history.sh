#!/usr/bin/env bash
# Publish throughput and broker CPU per delivery with history off and on, on the cluster path:
# two broker nodes on a local 3-master Redis Cluster, the fan-out scenario (1,000 subscribers
# split over the nodes, 1,000 publishes), three runs each; prints the medians.
#   benches/history.sh            (from the repository root; needs redis-server and redis-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

benches/redis-cluster.sh start 7101 >/dev/null
for mode in off on; do
    for n in a b; do
        port=$([ $n = a ] && echo 8081 || echo 8082)
        # The load generator's channel falls to the last (catch-all) route: give it history.
        extra=$([ $mode = on ] && echo 'history_size = 1000' || true)
        cluster_node_config "$n" "$port" "$extra" >"$out/node-$n-$mode.toml"
        serve "$out/node-$n-$mode.toml" "$port"
    done
    two=$(IFS=,; echo "${pids[*]}")
    for i in 1 2 3; do
        "$load" fanout --url ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws --subscribers 1000 \
            --messages 1000 --pid "$two" --json "$out/$mode-$i.json" >/dev/null
    done
    for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
    pids=()
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
for mode in ("off", "on"):
    runs = [json.load(open(f"{out}/{mode}-{i}.json")) for i in (1, 2, 3)]
    rate = statistics.median(r["deliveries_per_s"] for r in runs)
    pub = statistics.median(r["published"] / r["duration_s"] for r in runs)
    cpu = statistics.median(r["broker"]["cpu_s_per_million_deliveries"] for r in runs)
    lost = max(r["lost"] for r in runs)
    print(f"history {mode:<3}: deliveries/s {rate:>12.0f}  publishes/s {pub:>8.0f}  "
          f"broker CPU-s per million {cpu:.3f}  lost {lost}")
PY
