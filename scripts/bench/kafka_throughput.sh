#!/usr/bin/env bash
# Service throughput through Kafka, on this machine: a Tansu broker, framewatch (release) consuming one topic of 4
# partitions, and framewatch-loadtest producing to it, all on loopback. Prints the load tester's report and
# framewatch's CPU time and peak RSS (GNU time).
#
#   scripts/bench/kafka_throughput.sh BASELINE WIDTH HEIGHT FPS_PER_CAMERA SECONDS [extra load-tester args]
#   e.g. scripts/bench/kafka_throughput.sh /tmp/b720.json 1280 720 40 20
#        scripts/bench/kafka_throughput.sh /tmp/b360.json 640 360 20000 10 --prescored
# BASELINE: framewatch-loadtest baseline --cameras 8 --frames 60 --width W --height H -o BASELINE
# KAFKA_PROPERTIES: extra lines for framewatch's [kafka.properties], e.g. '"max.partition.fetch.bytes" = 8388608'.
set -euo pipefail
cd "$(dirname "$0")/../.."
baseline=$1 width=$2 height=$3 fps=$4 secs=$5; shift 5
cargo build --release --quiet -p framewatch -p framewatch-loadtest
tansu=$(scripts/kafka/tansu.sh install)
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; kill $fw 2>/dev/null || true; rm -rf "$work"' EXIT
until "$tansu" topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.2; done
"$tansu" topic create frames --partitions 4 --broker "tcp://127.0.0.1:$port" >/dev/null
cat >"$work/fw.toml" <<TOML
baseline = "$baseline"
[server]
grpc_addr = "127.0.0.1:$((port + 1))"
http_addr = "127.0.0.1:$((port + 2))"
[kafka]
brokers = "127.0.0.1:$port"
topics = ["frames"]
group_id = "bench"
[kafka.properties]
"session.timeout.ms" = 6000
${KAFKA_PROPERTIES:-}
TOML
/usr/bin/time -v target/release/framewatch serve --config "$work/fw.toml" 2>"$work/fw.log" &
fw=$!
until curl -sf "http://127.0.0.1:$((port + 2))/readyz" >/dev/null 2>&1; do sleep 0.2; done
target/release/framewatch-loadtest kafka --brokers "127.0.0.1:$port" --topic frames \
  --metrics-url "http://127.0.0.1:$((port + 2))/metrics" --target "http://127.0.0.1:$((port + 1))" \
  --cameras 8 --width "$width" --height "$height" --fps "$fps" --duration "$secs" --pool 16 "$@"
kill -TERM "$(pgrep -P $fw framewatch || echo $fw)" 2>/dev/null || true
wait $fw || true
grep -E "User time|System time|Elapsed|Maximum resident" "$work/fw.log"
