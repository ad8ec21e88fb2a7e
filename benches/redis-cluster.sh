#!/usr/bin/env bash
# Starts (or stops) a throwaway 3-master Redis Cluster on 127.0.0.1 for benchmarks and manual
# tries: ./benches/redis-cluster.sh start [FIRST_PORT]   ./benches/redis-cluster.sh stop [FIRST_PORT]
# Data lives in a temp dir and nothing is persisted.
set -euo pipefail
action=${1:-start}
first=${2:-7101}
ports=("$first" "$((first + 1))" "$((first + 2))")
dir=${TMPDIR:-/tmp}/switchyard-bench-cluster-$first
case "$action" in
start)
    for p in "${ports[@]}"; do
        mkdir -p "$dir/$p"
        redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --dir "$dir/$p" \
            --cluster-config-file nodes.conf --save "" --appendonly no --daemonize yes \
            --logfile "$dir/$p/redis.log"
    done
    for p in "${ports[@]}"; do
        until redis-cli -p "$p" ping >/dev/null 2>&1; do sleep 0.1; done
    done
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
    until redis-cli -p "$first" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
    echo "cluster up: ${ports[*]}"
    ;;
stop)
    for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop [FIRST_PORT]" >&2
    exit 2
    ;;
esac
