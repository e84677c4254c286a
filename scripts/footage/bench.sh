#!/usr/bin/env bash
# The fault matrix on real footage, end to end: extracts vtest.avi (vtest.sh), builds the baseline from frames
# 1-400 (cam-1 .. cam-9), starts framewatch with scripts/footage/framewatch-bench.toml (60 s windows in 30 s steps),
# streams the held-out frames 401-795 in a loop for 150 s with one clean camera and one camera per fault kind
# (faults from 20 s), prints the markdown confusion matrix and stops framewatch. JSON: target/footage/vtest-bench.json.
#
#   scripts/footage/bench.sh [extra bench flags...]        e.g. --fault blur=blur:2
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/footage
scripts/footage/vtest.sh "$out/vtest" >&2
cargo build --release --quiet -p framewatch -p framewatch-loadtest
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/framewatch-loadtest" baseline --clip "$out/vtest" --end-frame 400 --cameras 9 -o "$out/vtest-baseline.json" >&2
"$bin/framewatch" serve --config scripts/footage/framewatch-bench.toml --baseline "$out/vtest-baseline.json" \
  2>"$out/bench-framewatch.log" &
fw=$!
trap 'kill $fw 2>/dev/null; wait $fw 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:9464/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
"$bin/framewatch-loadtest" bench --target http://127.0.0.1:50051 --clip "$out/vtest" --start-frame 401 --loop \
  --at 20 --duration 150 -o "$out/vtest-bench.json" "$@"
