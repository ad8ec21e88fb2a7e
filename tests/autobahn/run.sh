#!/usr/bin/env bash
# Runs Autobahn|Testsuite (fuzzingclient) against examples/autobahn_echo.rs, which is built on
# the broker's own frame reader and writers, and prints the verdicts by case group.
#
#   tests/autobahn/run.sh                 cases 1.*-7.* and 9.*-10.*, compared with expected.txt
#   tests/autobahn/run.sh '6.*' '9.1.*'   just those cases (no comparison)
#
# Exits 1 when a case FAILED, 2 when a full run's summary differs from expected.txt.
# Autobahn 0.8.2 needs Python 2.7: it is installed with pyenv's 2.7.18 (override with
# AUTOBAHN_PYTHON) into $AUTOBAHN_DIR (default target/autobahn) when missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
dir="${AUTOBAHN_DIR:-$target/autobahn}"
python="${AUTOBAHN_PYTHON:-$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python}"
site="$dir/lib/python2.7/site-packages"

if [ ! -x "$python" ]; then
    echo "no Python 2.7 at $python (pyenv install 2.7.18, or set AUTOBAHN_PYTHON)" >&2
    exit 3
fi
if [ ! -d "$site/autobahntestsuite" ]; then
    echo "installing autobahntestsuite 0.8.2 into $dir" >&2
    "$python" -m pip install --quiet --disable-pip-version-check --prefix "$dir" \
        autobahntestsuite==0.8.2 >&2
fi

cases=("$@")
full=0
if [ ${#cases[@]} -eq 0 ]; then
    cases=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*')
    full=1
fi

cargo build --release --example autobahn_echo --manifest-path "$root/Cargo.toml" >&2
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the server prints the port it got.
"$target/release/examples/autobahn_echo" 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
    grep -q '^listening on ' "$work/server.out" && break
    sleep 0.1
done
addr="$(sed -n 's/^listening on //p' "$work/server.out")"
if [ -z "$addr" ]; then
    echo "echo server did not start:" >&2
    cat "$work/server.err" >&2
    exit 3
fi

case_list="$(printf '"%s",' "${cases[@]}")"
cat >"$work/spec.json" <<JSON
{
  "outdir": "$work/reports",
  "servers": [{"agent": "switchyard", "url": "ws://$addr"}],
  "cases": [${case_list%,}],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON

# A --prefix install needs its .pth files read (zope is a namespace package).
(cd "$work" && "$python" -c "
import site, sys
site.addsitedir('$site')
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', 'spec.json']
from autobahntestsuite.wstest import run
sys.exit(run())
") >"$work/wstest.log" 2>&1 || {
    echo "wstest failed:" >&2
    tail -20 "$work/wstest.log" >&2
    exit 3
}

# One line per case group: each verdict (behavior, then close behavior when they differ) and
# how many cases got it; then every case that was not OK.
"$python" - "$work/reports/index.json" >"$work/summary.txt" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["switchyard"]
def key(case):
    return [int(p) for p in case.split(".")]
groups = {}
odd = []
for case in sorted(results, key=key):
    r = results[case]
    verdict = r["behavior"]
    if r["behaviorClose"] != "OK" and r["behaviorClose"] != verdict:
        verdict += "/close " + r["behaviorClose"]
    g = groups.setdefault(case.split(".")[0], {})
    g[verdict] = g.get(verdict, 0) + 1
    if verdict != "OK":
        odd.append("  %s %s" % (case, verdict))
for g in sorted(groups, key=int):
    print("%-3s %s" % (g + ":", ", ".join("%s %d" % (v, n) for v, n in sorted(groups[g].items()))))
if odd:
    print("not OK:")
    print("\n".join(odd))
PY
cat "$work/summary.txt"

status=0
if grep -q FAILED "$work/summary.txt"; then
    echo "some cases FAILED (report: keep it with AUTOBAHN_KEEP=dir)" >&2
    status=1
elif [ $full -eq 1 ] && ! diff -u "$here/expected.txt" "$work/summary.txt" >&2; then
    echo "the summary differs from tests/autobahn/expected.txt" >&2
    status=2
fi
if [ -n "${AUTOBAHN_KEEP:-}" ]; then
    mkdir -p "$AUTOBAHN_KEEP" && cp -r "$work/reports" "$AUTOBAHN_KEEP/"
fi
exit $status
