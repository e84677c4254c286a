#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders that take outside bytes (SECURITY.md, "Fuzzing"), with libFuzzer on the
# machine's stable Rust. Not run by scripts/test (minutes per target); the stable mutation suite
# service/tests/fuzz_inputs.rs is, and covers the same entry points for a fixed number of cases.
#
#   scripts/fuzz/run.sh                  every target, 180 s each
#   scripts/fuzz/run.sh all SECONDS      every target, SECONDS each
#   scripts/fuzz/run.sh TARGET [SECONDS] one target: grpc_frame kafka_message rfc3339 checkpoint image config
#
# How: the targets in fuzz/ (libfuzzer-sys, which builds libFuzzer from source with the C++ compiler) are built
# in release mode with the SanitizerCoverage flags that cargo-fuzz passes, which are all stable `-C` options, and
# `--cfg fuzzing`; `--target` keeps the flags off build scripts and proc macros. Debug assertions and overflow
# checks are on, so an overflow is a crash as in the tests. FUZZ_JOBS sets cargo's -j (default 1: 2 cores here).
#
# FUZZ_SANITIZER=address adds AddressSanitizer (for the unsafe code in dependencies, e.g. the image decoders):
# `-Zsanitizer=address` is a nightly flag, accepted by the stable compiler only with RUSTC_BOOTSTRAP=1, which
# this mode sets for its own build (into fuzz/target/asan); the default build needs no unstable flag.
#
# Each target starts from the seed corpus that `fuzz_inputs.rs`'s ignored test `writes_the_seed_corpora` writes
# from real inputs (fixtures/images, examples/, README's JSON form, checkpoints written by the code, the example
# config) into fuzz/corpus/TARGET, which the run then grows. A crash is saved under fuzz/artifacts/TARGET/ and
# ends the run with a non-zero status; replay it with `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE`
# (fuzz/target/asan/... for the ASan build).
# Output: fuzz/logs/{none,address}/TARGET.log (libFuzzer's own: executions, coverage `cov:`, features `ft:`, corpus size).
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGETS=(grpc_frame kafka_message rfc3339 checkpoint image config)
if [ -n "${1:-}" ] && [ "$1" != all ]; then TARGETS=("$1"); fi
SECONDS_EACH="${2:-180}"
TRIPLE=x86_64-unknown-linux-gnu

# The workspace's lock file pins the same versions of framewatch's dependencies as the tests use; cargo adds
# libfuzzer-sys to it.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

echo "== seed corpora (fuzz/corpus/*)"
cargo test -q -j "${FUZZ_JOBS:-1}" -p framewatch --test fuzz_inputs -- --ignored --exact writes_the_seed_corpora

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions -Coverflow-checks --cfg fuzzing"
TARGET_DIR=target
if [ "${FUZZ_SANITIZER:-none}" = address ]; then
  export RUSTC_BOOTSTRAP=1 RUSTFLAGS="$RUSTFLAGS -Zsanitizer=address"
  TARGET_DIR=target/asan
fi
echo "== building the fuzz targets (release, SanitizerCoverage, sanitizer: ${FUZZ_SANITIZER:-none})"
(cd fuzz && cargo build --release --target "$TRIPLE" --target-dir "$TARGET_DIR" -j "${FUZZ_JOBS:-1}" --bins)
BIN_DIR="fuzz/$TARGET_DIR/$TRIPLE/release"

LOGS="fuzz/logs/${FUZZ_SANITIZER:-none}"
mkdir -p "$LOGS"
status=0
for t in "${TARGETS[@]}"; do
  echo "== $t for ${SECONDS_EACH}s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  # -rss_limit_mb: the decoders' limits are what keep memory bounded; a run that needs more is a finding.
  if ! "$BIN_DIR/$t" "fuzz/corpus/$t" \
      -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"$LOGS/$t.log" 2>&1; then
    echo "   $t: FAILED (see $LOGS/$t.log, fuzz/artifacts/$t/)"
    status=1
  fi
  # the last status line: executions (#N), coverage (cov), features (ft), corpus (corp: files/size)
  grep -E '^#[0-9]+' "$LOGS/$t.log" | tail -1 || true
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$LOGS/$t.log" || true
done
exit $status
