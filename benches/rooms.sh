#!/usr/bin/env bash
# The chat-shaped table next to the peer: 500 rooms x 10 members = 5,000 connections, each user
# on `user.<i>` and `room.<i/10>` and publishing to its room (rooms only, no direct messages),
# at 5,000 and 20,000 msg/s for 10 s, three runs each, against
#   nats      nats-server with its websocket listener (the same generator, over nats+ws://)
#   memory    switchyard, memory backend, one node
#   redis x2  switchyard, two nodes on one standalone redis-server; connection i goes to node
#             i % 2 and rooms are consecutive users, so every room has members on both nodes
# and prints the medians of broker CPU-s per million deliveries, p99 and lost, with Redis's
# reads, writes and CPU per publish for the two-node run. Every server is started here on a
# free port and stopped on exit. Takes about five minutes.
#   benches/rooms.sh                                  (from the repository root)
#   DURATION=3 RUNS=1 RATES=5000 benches/rooms.sh     (a quick try)
#   SWITCHYARD_BIN=path/to/switchyard CARGO_BUILD_JOBS=1 benches/rooms.sh
#   TARGETS=redis BATCH_DELAY_MS=0 benches/rooms.sh   (only the two-node Redis rows, with the
#                                                      Redis backend's batch_delay_ms set)
# Needs nats-server (NATS_SERVER, default: the one on PATH or /usr/sbin) and redis-server.
# Per-connection limits: each user publishes rate/5,000 msg/s (4/s at 20,000) and subscribes to
# two channels, far inside switchyard's defaults (limits.publish_rate 1000/s, subscribe_burst
# 1000), so the configs below leave [limits] alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
# Only what this script started: lib.sh's cleanup would also stop a Redis Cluster on 7101.
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}

rates=${RATES:-"5000 20000"}
runs=${RUNS:-3}
duration=${DURATION:-10}
targets=${TARGETS:-"nats memory redis"}
wanted() { [[ " $targets " == *" $1 "* ]]; }
nats_server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port: until something accepts on 127.0.0.1:port (at most 10 s)
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on 127.0.0.1:$1" >&2
    return 1
}

routes='
[[routes]]
match = "user.{id}"
channel = "im:user:{id}"
subscribe = "anyone"
publish = "anyone"

[[routes]]
match = "room.{room}"
channel = "im:room:{room}"
subscribe = "anyone"
publish = "anyone"'

node_config() { # node-id port backend-lines > file
    printf '[node]\nid = "%s"\n\n[server]\nlisten = "127.0.0.1:%s"\n\n[backends.main]\n%s\n%s\n' \
        "$1" "$2" "$3" "$routes"
}

run_rooms() { # tag url pids [extra args...]: every rate, $runs times, into $out/tag-rate-i.json
    local tag=$1 url=$2 pid=$3
    shift 3
    for rate in $rates; do
        for i in $(seq "$runs"); do
            # Exit code 2 means something was lost; the medians report it.
            "$load" rooms --url "$url" --pid "$pid" "$@" --connections 5000 --room-size 10 \
                --dm-every 0 --rate "$rate" --duration "$duration" \
                --json "$out/$tag-$rate-$i.json" >"$out/$tag-$rate-$i.txt" 2>&1 || [ $? -eq 2 ]
        done
    done
}

# (a) nats-server, websocket listener only in use (its client port is free too, unused).
if wanted nats; then
nats_port=$(free_port)
nats_ws=$(free_port)
printf 'listen: "127.0.0.1:%s"\nwebsocket {\n  listen: "127.0.0.1:%s"\n  no_tls: true\n}\n' \
    "$nats_port" "$nats_ws" >"$out/nats.conf"
"$nats_server" -c "$out/nats.conf" >"$out/nats.log" 2>&1 &
pids+=($!)
nats_pid=$!
wait_port "$nats_ws"
run_rooms nats "nats+ws://127.0.0.1:$nats_ws" "$nats_pid"
kill "$nats_pid"
fi

# (b) switchyard, memory backend, one node.
if wanted memory; then
port=$(free_port)
node_config rooms-mem "$port" 'kind = "memory"' >"$out/memory.toml"
serve "$out/memory.toml" "$port"
mem_pid=${pids[-1]}
run_rooms memory "ws://127.0.0.1:$port/ws" "$mem_pid"
kill "$mem_pid"
fi

# (c) switchyard, two nodes on one standalone redis-server.
if wanted redis; then
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$out" >"$out/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
backend="kind = \"redis\"
url = \"redis://127.0.0.1:$redis_port\"${BATCH_DELAY_MS:+
batch_delay_ms = $BATCH_DELAY_MS}"
two=()
urls=()
for n in a b; do
    port=$(free_port)
    node_config "rooms-$n" "$port" "$backend" >"$out/node-$n.toml"
    serve "$out/node-$n.toml" "$port"
    two+=("${pids[-1]}")
    urls+=("ws://127.0.0.1:$port/ws")
done
run_rooms redis "$(IFS=,; echo "${urls[*]}")" "$(IFS=,; echo "${two[*]}")" \
    --redis "127.0.0.1:$redis_port" --backend-pid "$redis_pid"
fi

echo "rooms: 500 rooms x 10 members (5,000 connections), rooms only, ${duration} s per run;"
echo "medians of $runs runs (raw reports in $out)"
python3 - "$out" "$runs" "$targets" $rates <<'PY'
import json, statistics, sys
out, runs, wanted, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
targets = [("nats", "nats-server 2.9 websocket"), ("memory", "switchyard memory, 1 node"),
           ("redis", "switchyard 2 nodes, 1 redis")]
targets = [t for t in targets if t[0] in wanted]
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")
print(f"{'target':<28} {'msg/s':>6} {'deliv/s':>8} {'CPU-s/M':>8} {'p99 ms':>7} {'lost':>5}"
      f" | redis per publish: {'reads':>5} {'writes':>6} {'CPU-us':>6} | CPU-s/M incl. redis")
for tag, name in targets:
    for rate in rates:
        ds = [json.load(open(f"{out}/{tag}-{rate}-{i}.json")) for i in range(1, runs + 1)]
        cpu = [(d.get("broker") or {}).get("cpu_s_per_million_deliveries") for d in ds]
        row = (f"{name:<28} {rate:>6} {med([d['deliveries_per_s'] for d in ds]):>8.0f} "
               f"{med(cpu):>8.3f} {med([d['latency']['p99_us'] / 1000 for d in ds]):>7.2f} "
               f"{med([d['lost'] for d in ds]):>5.0f}")
        if all(d.get("redis") for d in ds):
            r = [d["redis"] for d in ds]
            both = [(d["broker"]["cpu_s"] + d["redis"]["cpu_s"]) / (d["delivered"] / 1e6)
                    for d in ds if d.get("broker") and d["delivered"]]
            row += (f" | {'':>18} {med([x['reads_per_publish'] for x in r]):>5.2f} "
                    f"{med([x['writes_per_publish'] for x in r]):>6.2f} "
                    f"{med([x['cpu_us_per_publish'] for x in r]):>6.1f} | {med(both):.3f}")
        print(row)
PY
