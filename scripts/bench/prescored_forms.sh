#!/usr/bin/env bash
# Pre-scored events over gRPC, the two edge forms side by side: by name (`MetricValues.values`) and packed in
# catalog order (`MetricValues.packed`), alternating ROUNDS times against one framewatch process (release build),
# 15 s each. Prints accepted events/s and framewatch's CPU per event (utime + stime from /proc over events accepted).
# Usage: scripts/bench/prescored_forms.sh [ROUNDS]   (results: BENCHMARKS.md, "The packed edge form")
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
cargo build --release --locked -q -p framewatch -p framewatch-loadtest
R=$PWD/target/release
LOADTEST=$R/framewatch-loadtest
. scripts/bench/prescored_setup.sh
$R/framewatch serve --config fw.toml > fw.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19464/readyz >/dev/null && break; sleep 0.2; done
for round in $(seq 1 "$rounds"); do
  for form in named packed; do
    extra=""; [ "$form" = packed ] && extra="--packed"
    c0=$(cpu $pid)
    $R/framewatch-loadtest grpc --cameras 8 --fps 0 --duration 15 --prescored $extra --width 640 --height 360 \
      --pool 16 --target http://127.0.0.1:50951 --json > "run.json" 2>/dev/null
    c1=$(cpu $pid)
    python3 - "$form" "$round" "$c0" "$c1" "$tck" run.json <<'PY'
import json, sys
form, rnd, c0, c1, tck, path = sys.argv[1:]
r = json.load(open(path))
acc = r["frames_accepted"]
cpu = (float(c1) - float(c0)) / float(tck)
print(f"{form:6} round {rnd}: {r['accepted_per_s']:9.0f} events/s accepted ({acc} of {r['frames_sent']}), "
      f"framewatch CPU {cpu * 1e6 / max(acc, 1):5.2f} us/event")
PY
  done
done
