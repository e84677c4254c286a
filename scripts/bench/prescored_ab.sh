#!/usr/bin/env bash
# Pre-scored events over gRPC, two framewatch binaries side by side: for each of ROUNDS rounds, each binary is
# started afresh (release build; baseline b360.json, defaults), offered the map form and then the packed form for
# 15 s each by the load tester, and stopped. Prints accepted events/s and framewatch's CPU per event (utime + stime
# from /proc over events accepted), then the medians. Before: build the other commit in a worktree and copy its
# target/release/framewatch aside.
# Usage: scripts/bench/prescored_ab.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]   (results: BENCHMARKS.md)
set -euo pipefail
before=$(realpath "$1"); after=$(realpath "$2"); rounds=${3:-3}
cd "$(dirname "$0")/../.."
cargo build --release --locked -q -p framewatch-loadtest
LOADTEST=$PWD/target/release/framewatch-loadtest
. scripts/bench/prescored_setup.sh
for round in $(seq 1 "$rounds"); do
  for which in before after; do
    bin=$before; [ "$which" = after ] && bin=$after
    "$bin" serve --config fw.toml > fw.log 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19464/readyz >/dev/null && break; sleep 0.2; done
    for form in named packed; do
      extra=""; [ "$form" = packed ] && extra="--packed"
      c0=$(cpu $pid)
      "$LOADTEST" grpc --cameras 8 --fps 0 --duration 15 --prescored $extra --width 640 --height 360 --pool 16 \
        --target http://127.0.0.1:50951 --json > run.json 2>/dev/null
      c1=$(cpu $pid)
      python3 - "$which" "$form" "$c0" "$c1" "$tck" run.json >> results.txt <<'PY'
import json, sys
which, form, c0, c1, tck, path = sys.argv[1:]
r = json.load(open(path))
acc = r["frames_accepted"]
print(which, form, round(r["accepted_per_s"]), round((float(c1) - float(c0)) / float(tck) * 1e6 / max(acc, 1), 2))
PY
      tail -1 results.txt
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - results.txt <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for which in ("before", "after"):
    for form in ("named", "packed"):
        r = [(int(a), float(c)) for w, f, a, c in rows if (w, f) == (which, form)]
        print(f"{which:6} {form:6}: events/s {[a for a, _ in r]} median {statistics.median(a for a, _ in r):.0f}; "
              f"CPU us/event median {statistics.median(c for _, c in r):.2f}")
PY
