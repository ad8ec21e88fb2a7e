#!/usr/bin/env bash
# Publish throughput and broker CPU per delivery with history off and on, on the cluster path:
# two broker nodes on a local 3-master Redis Cluster, the fan-out scenario (1,000 subscribers
# split over the nodes, 1,000 publishes), three runs each; prints the medians.
#   benches/history.sh            (from the repository root; needs redis-server and redis-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin switchyard --bin switchyard-load >/dev/null
out=$(mktemp -d)
load=target/release/switchyard-load
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    benches/redis-cluster.sh stop 7101 >/dev/null 2>&1 || true
}
trap cleanup EXIT

serve() { # config-file port
    target/release/switchyard serve --config "$1" >"$out/broker-$2.log" 2>&1 &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$2/readyz" >/dev/null; do sleep 0.1; done
}

benches/redis-cluster.sh start 7101 >/dev/null
for mode in off on; do
    for n in a b; do
        port=$([ $n = a ] && echo 8081 || echo 8082)
        sed "s/node-a/node-$n/; s/127.0.0.1:8080/127.0.0.1:$port/; s/7001/7101/; s/7002/7102/; s/7003/7103/" \
            config/redis-cluster.toml >"$out/node-$n-$mode.toml"
        if [ $mode = on ]; then
            # The load generator's channel falls to the catch-all route: give it history.
            printf 'history_size = 1000\n' >>"$out/node-$n-$mode.toml"
        fi
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
