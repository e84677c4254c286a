#!/usr/bin/env bash
# Real street-camera footage for the fault matrix: OpenCV's vtest.avi (a fixed camera over a pedestrian street,
# 795 frames, 768x576, 10 fps), shipped by Debian's opencv-doc package, extracted as JPEG frames.
#
#   scripts/footage/vtest.sh [OUTDIR]     default OUTDIR: target/footage/vtest  (frame_00001.jpg ... frame_00795.jpg)
#
# Installs opencv-doc with apt when missing (sudo only when not root, as scripts/test does); the decoding is
# scripts/footage/extract.sh's (see there for the decoder choice). Idempotent; prints how many frames it wrote.
set -euo pipefail
cd "$(dirname "$0")/../.."
outdir=${1:-target/footage/vtest}

if ! dpkg -s opencv-doc >/dev/null 2>&1; then
  echo "== installing opencv-doc (apt)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends opencv-doc >&2
fi

# Debian ships it uncompressed today; accept a gzip-compressed copy too (dh_compress has done so for docs).
video=$(dpkg -L opencv-doc | grep -E '/vtest\.avi(\.gz)?$' | head -n1)
[ -n "$video" ] || { echo "opencv-doc has no vtest.avi" >&2; exit 1; }
if [[ $video == *.gz ]]; then
  mkdir -p target/footage
  gunzip -c "$video" > target/footage/vtest.avi
  touch -r "$video" target/footage/vtest.avi
  video=target/footage/vtest.avi
fi
exec scripts/footage/extract.sh "$video" "$outdir" 90
