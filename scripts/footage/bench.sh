#!/usr/bin/env bash
# The fault matrix on real footage against a running framewatch: extracts vtest.avi if needed (vtest.sh), then runs
# `framewatch-loadtest bench` over the held-out frames 401-795 (one clean camera, one per fault kind) and prints the
# markdown confusion matrix; the JSON report goes to target/footage/vtest-bench.json.
#
#   scripts/footage/bench.sh [GRPC_ADDR] [extra bench flags...]     default GRPC_ADDR: 127.0.0.1:50051
#
# framewatch must be serving the clip's baseline (frames 1-400, cam-1 .. cam-9):
#   cargo run --release -p framewatch-loadtest -- baseline --clip target/footage/vtest --end-frame 400 \
#       --cameras 9 -o target/footage/vtest-baseline.json
#   cargo run --release -p framewatch -- serve --baseline target/footage/vtest-baseline.json
set -euo pipefail
cd "$(dirname "$0")/../.."
addr=${1:-127.0.0.1:50051}
shift || true

scripts/footage/vtest.sh target/footage/vtest >&2
cargo build --release --quiet -p framewatch-loadtest
bin="${CARGO_TARGET_DIR:-target}/release/framewatch-loadtest"
exec "$bin" bench --target "http://$addr" --clip target/footage/vtest --start-frame 401 --at 10 \
  -o target/footage/vtest-bench.json "$@"
