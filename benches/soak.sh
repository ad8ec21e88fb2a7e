#!/usr/bin/env bash
# Soak: a release broker (memory backend, built-in default config) under steady publish load
# with nobody scraping /metrics, its RSS sampled every 10 s. Memory must stay flat: nothing the
# broker keeps may grow with the number of messages it has carried.
#   benches/soak.sh [SECONDS] [DELIVERIES_PER_S] [SUBSCRIBERS]     (default 600 20000 10)
# Prints one line per sample and a summary: RSS at the end of the first minute, at the end, and
# the largest, in MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
rate=${2:-20000}
subs=${3:-10}
port=18090
cargo build --release --bin switchyard --bin switchyard-load >/dev/null
cfg=$(mktemp)
sed "s/127.0.0.1:8080/127.0.0.1:$port/" config/default.toml >"$cfg"
target/release/switchyard serve --config "$cfg" >/tmp/soak-broker.log 2>&1 &
broker=$!
load=""
trap 'kill $broker $load 2>/dev/null || true; rm -f "$cfg"' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
target/release/switchyard-load --url "ws://127.0.0.1:$port/ws" --max-time $((secs + 120)) \
    latency --subscribers "$subs" --deliveries-per-s "$rate" --duration "$secs" \
    >/tmp/soak-load.log 2>&1 &
load=$!
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$broker/status"; }
samples=()
start=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
    sleep 10
    kill -0 "$load" 2>/dev/null || break
    now=$(rss)
    samples+=("$now")
    echo "t=$(($(date +%s) - start))s rss=${now}MiB"
done
wait "$load" || { echo "load generator failed:"; tail -20 /tmp/soak-load.log; exit 1; }
grep -E "delivered|lost" /tmp/soak-load.log | head -5 || true
python3 - "${samples[@]}" <<'PY'
import sys
s = [float(x) for x in sys.argv[1:]]
if len(s) < 7:
    sys.exit("too few samples")
print(f"rss after 1 min {s[5]:.1f} MiB, at the end {s[-1]:.1f} MiB, largest {max(s):.1f} MiB, "
      f"growth after the first minute {s[-1] - s[5]:+.1f} MiB")
PY
