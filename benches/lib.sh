# Shared by the benchmark scripts (sourced from the repository root): release build, a scratch
# directory, brokers started in the background and stopped on exit, with the local Redis
# Cluster of benches/redis-cluster.sh. With SWITCHYARD_BIN set, that broker binary is used and
# only the load generator is built (CARGO_BUILD_JOBS limits the build's parallelism).
if [ -n "${SWITCHYARD_BIN:-}" ]; then
    cargo build --release -p switchyard-load >/dev/null
else
    cargo build --release --bin switchyard --bin switchyard-load >/dev/null
fi
out=$(mktemp -d)
bin=${CARGO_TARGET_DIR:-target}/release
load=$bin/switchyard-load
switchyard=${SWITCHYARD_BIN:-$bin/switchyard}
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    benches/redis-cluster.sh stop 7101 >/dev/null 2>&1 || true
    benches/nats-cluster.sh stop 4301 >/dev/null 2>&1 || true
}
trap cleanup EXIT

serve() { # config-file (empty: the built-in default) port
    "$switchyard" serve ${1:+--config "$1"} >"$out/broker-$2.log" 2>&1 &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$2/readyz" >/dev/null; do
        if ! kill -0 "${pids[-1]}" 2>/dev/null; then
            echo "the broker on port $2 exited:" >&2
            cat "$out/broker-$2.log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

cluster_node_config() { # node-letter port [extra-line] > file: config/redis-cluster.toml for this node
    sed "s/node-a/node-$1/; s/127.0.0.1:8080/127.0.0.1:$2/; s/7001/7101/; s/7002/7102/; s/7003/7103/" \
        config/redis-cluster.toml
    if [ -n "${3:-}" ]; then printf '%s\n' "$3"; fi
}

nats_node_config() { # node-letter port > file: config/nats.toml for this node, on benches/nats-cluster.sh
    sed "s/node-a/node-$1/; s/127.0.0.1:8080/127.0.0.1:$2/" config/nats.toml |
        sed 's|^servers = .*|servers = ["nats://127.0.0.1:4301", "nats://127.0.0.1:4302", "nats://127.0.0.1:4303"]|'
}
