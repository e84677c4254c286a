#!/usr/bin/env bash
# gRPC ingest of 1080p JPEGs with each downscale path, the same release framewatch, alternating runs
# (BENCHMARKS.md, "DCT-domain scaling"). Two baselines of the same synthetic fleet that differ only in
# settings.analysis.downscale: dct (as written by today's build) and box (the field removed, as an old baseline).
#   cargo build --release -p framewatch -p framewatch-loadtest && scripts/bench/downscale_ab.sh [ROUNDS]
# Needs ports 50051 and 9464 free. Prints accepted frames/s and framewatch's CPU seconds per run.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/release/framewatch-loadtest baseline --cameras 8 --frames 60 --width 1920 --height 1080 -o "$dir/dct.json" >/dev/null
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
b = json.load(open(f"{d}/dct.json"))
def strip(o):
    if isinstance(o, dict):
        if o.get("downscale") == "dct":
            del o["downscale"]
        for v in o.values():
            strip(v)
    elif isinstance(o, list):
        for v in o:
            strip(v)
strip(b)
json.dump(b, open(f"{d}/box.json", "w"))
PY
for round in $(seq "$rounds"); do
  for mode in dct box; do
    FRAMEWATCH_BASELINE="$dir/$mode.json" target/release/framewatch serve >"$dir/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 150); do curl -sf localhost:9464/readyz >/dev/null && break; sleep 0.2; done
    out=$(target/release/framewatch-loadtest grpc --cameras 8 --fps 0 --duration 20 --width 1920 --height 1080 \
      --pool 16 2>&1 | grep -E "throughput" | sed 's/;.*//')
    cpu=$(ps -o times= -p "$pid" | tr -d ' ')
    kill -INT "$pid"
    wait "$pid" || true
    echo "round $round $mode: $out; framewatch CPU ${cpu} s"
  done
done
