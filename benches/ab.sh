#!/usr/bin/env bash
# Interleaved A/B of two broker binaries: alternates them three times on the memory fan-out
# burst and the 50k deliveries/s latency scenario (same load generator), so that a noisy
# machine affects both alike; prints each run.
#   benches/ab.sh OLD_BINARY NEW_BINARY     (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
cargo build --release --bin switchyard-load >/dev/null
load=${CARGO_TARGET_DIR:-target}/release/switchyard-load
out=$(mktemp -d)
for round in 1 2 3; do
    for which in old new; do
        bin=$([ $which = old ] && echo "$old" || echo "$new")
        "$bin" serve >"$out/$which.log" 2>&1 &
        pid=$!
        until curl -sf http://127.0.0.1:8080/readyz >/dev/null; do sleep 0.1; done
        "$load" fanout --subscribers 1000 --messages 1000 --pid $pid --json "$out/f-$which-$round.json" >/dev/null
        "$load" latency --subscribers 1000 --deliveries-per-s 50000 --duration 10 --pid $pid \
            --json "$out/l-$which-$round.json" >/dev/null
        kill $pid
        wait $pid 2>/dev/null || true
    done
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for which in ("old", "new"):
    f = [json.load(open(f"{out}/f-{which}-{r}.json")) for r in (1, 2, 3)]
    l = [json.load(open(f"{out}/l-{which}-{r}.json")) for r in (1, 2, 3)]
    print(which, "fanout/s", [round(x["deliveries_per_s"]) for x in f],
          "CPU-s/M", [x["broker"]["cpu_s_per_million_deliveries"] for x in f],
          "| p99 ms", [round(x["latency"]["p99_us"] / 1000, 2) for x in l],
          "p99.9 ms", [round(x["latency"]["p999_us"] / 1000, 2) for x in l],
          "CPU-s/M", [x["broker"]["cpu_s_per_million_deliveries"] for x in l])
PY
