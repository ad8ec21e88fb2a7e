#!/usr/bin/env bash
# Reproduces the end-to-end figures in benches/README.md: each scenario three times against a
# fresh release broker (memory backend), and the fan-out across two broker nodes on a local
# 3-master Redis Cluster and on a local 3-server NATS cluster; prints the median of each figure.
# Takes about four minutes.
#   benches/figures.sh            (from the repository root; needs redis-server, redis-cli and
#                                  nats-server)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

median() { # name file-glob python-expression-over-report-d
    python3 - "$1" "$3" $2 <<'PY'
import json, statistics, sys
name, expr, files = sys.argv[1], sys.argv[2], sys.argv[3:]
vals = []
for f in files:
    d = json.load(open(f))
    vals.append(eval(expr, {}, {"d": d}))
print(f"{name:<44} median {statistics.median(vals):>12.3f}   runs {', '.join(f'{v:.3f}' for v in vals)}")
PY
}

run3() { # tag args...
    local tag=$1
    shift
    for i in 1 2 3; do "$load" "$@" --json "$out/$tag-$i.json" >/dev/null; done
}

serve "" 8080
pid=${pids[0]}
run3 fanout fanout --subscribers 1000 --messages 1000 --pid "$pid"
run3 batch fanout --subscribers 1000 --messages 1000 --batch --pid "$pid"
run3 latency latency --subscribers 1000 --deliveries-per-s 50000 --duration 10 --pid "$pid"
run3 latency100 latency --subscribers 100 --deliveries-per-s 50000 --duration 5 --pid "$pid"
run3 rooms rooms --connections 2000 --rate 20000 --duration 5 --pid "$pid"
kill "$pid"
pids=()
# RSS does not shrink when connections close, so every run gets a fresh broker.
for i in 1 2 3; do
    serve "" 8080
    "$load" connections --connections 19000 --source-addrs 2 --hold 3 --pid "${pids[0]}" \
        --json "$out/conns-$i.json" >/dev/null
    kill "${pids[0]}"
    wait "${pids[0]}" 2>/dev/null || true
    pids=()
done

benches/redis-cluster.sh start 7101 >/dev/null
for n in a b; do
    port=$([ $n = a ] && echo 8081 || echo 8082)
    cluster_node_config "$n" "$port" >"$out/node-$n.toml"
    serve "$out/node-$n.toml" "$port"
done
two=$(IFS=,; echo "${pids[*]:1}")
urls=ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws
run3 cluster fanout --url "$urls" --subscribers 1000 --messages 1000 --pid "$two"
run3 clusterbatch fanout --url "$urls" --subscribers 1000 --messages 1000 --batch --pid "$two"

# NATS=0 leaves out the NATS fan-out (for a broker built without it, e.g. an older one).
if [ "${NATS:-1}" != 0 ]; then
benches/nats-cluster.sh start 4301 >/dev/null
natspids=()
for n in c d; do
    port=$([ $n = c ] && echo 8083 || echo 8084)
    nats_node_config "$n" "$port" >"$out/node-$n.toml"
    serve "$out/node-$n.toml" "$port"
    natspids+=("${pids[-1]}")
done
natsurls=ws://127.0.0.1:8083/ws,ws://127.0.0.1:8084/ws
run3 nats fanout --url "$natsurls" --subscribers 1000 --messages 1000 --pid "$(IFS=,; echo "${natspids[*]}")"
fi

echo "figures (medians of 3 runs; raw reports in $out)"
median "fanout burst: deliveries/s" "$out/fanout-*.json" "d['deliveries_per_s']"
median "fanout burst: broker CPU-s per million" "$out/fanout-*.json" "d['broker']['cpu_s_per_million_deliveries']"
median "fanout burst: lost" "$out/fanout-*.json" "d['lost']"
median "fanout burst batch=1: deliveries/s" "$out/batch-*.json" "d['deliveries_per_s']"
median "fanout burst batch=1: broker CPU-s per million" "$out/batch-*.json" "d['broker']['cpu_s_per_million_deliveries']"
median "latency 50k/s: p50 ms" "$out/latency-*.json" "d['latency']['p50_us']/1000"
median "latency 50k/s: p99 ms" "$out/latency-*.json" "d['latency']['p99_us']/1000"
median "latency 50k/s: p99.9 ms" "$out/latency-*.json" "d['latency']['p999_us']/1000"
median "latency 50k/s: broker CPU-s per million" "$out/latency-*.json" "d['broker']['cpu_s_per_million_deliveries']"
median "latency 50k/s, 100 subscribers: p99 ms" "$out/latency100-*.json" "d['latency']['p99_us']/1000"
median "rooms: deliveries/s" "$out/rooms-*.json" "d['deliveries_per_s']"
median "rooms: p99 ms" "$out/rooms-*.json" "d['latency']['p99_us']/1000"
median "rooms: lost" "$out/rooms-*.json" "d['lost']"
median "19k idle connections: KiB RSS per connection" "$out/conns-*.json" "d['broker']['rss_per_connection_bytes']/1024"
median "redis-cluster, 2 nodes: deliveries/s" "$out/cluster-*.json" "d['deliveries_per_s']"
median "redis-cluster, 2 nodes: broker CPU-s per million" "$out/cluster-*.json" "d['broker']['cpu_s_per_million_deliveries']"
median "redis-cluster, 2 nodes: lost" "$out/cluster-*.json" "d['lost']"
median "redis-cluster, 2 nodes, batch=1: deliveries/s" "$out/clusterbatch-*.json" "d['deliveries_per_s']"
[ "${NATS:-1}" = 0 ] && exit 0
median "nats cluster, 2 nodes: deliveries/s" "$out/nats-*.json" "d['deliveries_per_s']"
median "nats cluster, 2 nodes: broker CPU-s per million" "$out/nats-*.json" "d['broker']['cpu_s_per_million_deliveries']"
median "nats cluster, 2 nodes: lost" "$out/nats-*.json" "d['lost']"
