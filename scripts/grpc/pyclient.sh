#!/usr/bin/env bash
# A Python gRPC client environment as an ML engineer would have it: grpcio, grpcio-reflection and grpcio-tools (the
# stub generator examples/python/ uses) from PyPI (pinned below) in a venv under target/tools/. The tests use it to
# talk to framewatch's gRPC server the way Python does.
#
#   scripts/grpc/pyclient.sh install     create the venv if missing, print its python's path
set -euo pipefail
cd "$(dirname "$0")/../.."

GRPCIO=1.76.0
PROTOBUF=6.33.1
VENV="target/tools/grpc-venv-$GRPCIO"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import grpc, grpc_reflection, grpc_tools' 2>/dev/null; then
  echo "== installing grpcio==$GRPCIO grpcio-reflection==$GRPCIO grpcio-tools==$GRPCIO protobuf==$PROTOBUF into $VENV (PyPI)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "grpcio==$GRPCIO" "grpcio-reflection==$GRPCIO" "grpcio-tools==$GRPCIO" "protobuf==$PROTOBUF" >&2
fi
echo "$PWD/$VENV/bin/python"
