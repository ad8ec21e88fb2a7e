#!/usr/bin/env bash
# Starts (or stops) a throwaway 3-server NATS cluster on 127.0.0.1 (client ports FIRST_PORT..+2,
# routes on FIRST_PORT+100..+102) for benchmarks and manual tries:
#   ./benches/nats-cluster.sh start [FIRST_PORT]   ./benches/nats-cluster.sh stop [FIRST_PORT]
# Needs nats-server (NATS_SERVER, default: the one on PATH or /usr/sbin).
set -euo pipefail
action=${1:-start}
first=${2:-4301}
nats_server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
dir=${TMPDIR:-/tmp}/switchyard-bench-nats-$first
routes=$(for i in 0 1 2; do printf 'nats://127.0.0.1:%s,' $((first + 100 + i)); done)
case "$action" in
start)
    mkdir -p "$dir"
    for i in 0 1 2; do
        "$nats_server" -a 127.0.0.1 -p $((first + i)) --cluster "nats://127.0.0.1:$((first + 100 + i))" \
            --cluster_name switchyard-bench --routes "${routes%,}" -m $((first + 200 + i)) \
            -l "$dir/nats-$i.log" -P "$dir/nats-$i.pid" &
    done
    for i in 0 1 2; do
        until curl -sf "http://127.0.0.1:$((first + 200 + i))/routez" | grep -q '"num_routes": 2'; do
            sleep 0.1
        done
    done
    echo "nats cluster up: $first $((first + 1)) $((first + 2))"
    ;;
stop)
    for f in "$dir"/nats-*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop [FIRST_PORT]" >&2
    exit 2
    ;;
esac
