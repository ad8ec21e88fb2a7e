#!/usr/bin/env bash
# Memory per idle connection and memory coming back, on a release broker (memory backend):
#  1. RSS when idle after start (the baseline);
#  2. N connections held while the broker pings them (ping_interval 2 s, held 9 s: at least
#     three ping rounds), RSS per connection at the end of the hold;
#  3. the connections close; RSS 30 s later, against the baseline.
#   benches/memory.sh [CONNECTIONS]        (default 19000; the fd limit here is 20,000)
# SWITCHYARD_BIN=path measures another build of the broker (e.g. one kept from before a change).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-19000}
port=18091
[ -n "${SWITCHYARD_BIN:-}" ] || cargo build --release --bin switchyard --bin switchyard-load >/dev/null
bin=${SWITCHYARD_BIN:-target/release/switchyard}
cfg=$(mktemp)
sed -e "s/127.0.0.1:8080/127.0.0.1:$port/" -e "s/^ping_interval_ms = .*/ping_interval_ms = 2000/" \
    config/default.toml >"$cfg"
"$bin" serve --config "$cfg" >/tmp/memory-broker.log 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -f "$cfg"' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$broker/status"; }
# RSS split into heap and other private memory (anon) and mapped code (file): code pages first
# touched by the burst stay resident without being memory the broker holds on to.
parts() { awk '/RssAnon|RssFile/ {printf "%s %.1f MiB  ", $1, $2 / 1024}' "/proc/$broker/status"; }
sleep 2
cold=$(rss)
echo "idle, cold: $(parts)"
# A few connections first, so the baseline includes what any broker that has served traffic
# holds (allocator caches and arenas of every worker thread, code paths paged in).
target/release/switchyard-load --url "ws://127.0.0.1:$port/ws" connections --connections 200 \
    --hold 3 >/dev/null
sleep 3
base=$(rss)
echo "idle, warm: $(parts)"
report=$(mktemp)
target/release/switchyard-load --url "ws://127.0.0.1:$port/ws" --source-addrs 2 \
    connections --connections "$n" --hold 9 --pid "$broker" --json "$report" >/dev/null
python3 - "$report" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
b = d.get("broker") or {}
print(f"held {d.get('held')} connections; broker RSS per connection "
      f"{(b.get('rss_per_connection_bytes') or float('nan')) / 1024:.2f} KiB after the ping rounds")
PY
peak=$(rss)
for t in 5 10 15 20 25 30; do
    sleep 5
    echo "t=${t}s after close: rss=$(rss) MiB"
done
after=$(rss)
echo "30 s after close: $(parts)"
python3 - "$cold" "$base" "$peak" "$after" <<'PY'
import sys
cold, base, peak, after = map(float, sys.argv[1:])
print(f"idle baseline {cold:.1f} MiB cold, {base:.1f} MiB warm; just after close {peak:.1f} MiB; "
      f"30 s later {after:.1f} MiB ({100 * (after - base) / base:+.0f}% of the warm baseline, "
      f"{100 * (after - cold) / cold:+.0f}% of the cold one)")
PY
