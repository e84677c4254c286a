#!/usr/bin/env bash
# Extracts every frame of a video as JPEG (quality 90 unless QUALITY is given) into OUTDIR/frame_00001.jpg ... in
# time order, for the load tester's real-footage mode (`framewatch-loadtest grpc --frames OUTDIR`).
#
#   scripts/footage/extract.sh VIDEO OUTDIR [QUALITY]
#
# Decoder: OpenCV's Python wheel (opencv-python-headless, pinned below) in a venv under target/tools/. Why this one:
# OpenCV's sample clips are not MJPEG (vtest.avi is DivX 3 / MS-MPEG4v3, tree.avi Cinepak, Megamind.avi Xvid), so
# a tiny AVI chunk parser cannot get JPEGs out of them and a real decoder is needed; the wheel bundles FFmpeg's
# decoders in one download (plus numpy), is already what the repo's reference scripts use
# (scripts/reference/requirements.txt), and needs no root, whereas `apt install ffmpeg` pulls ~94 Debian packages.
#
# Idempotent: a finished OUTDIR carries a .source stamp (video path, size, mtime, quality); a second run with the
# same video and quality only prints the count. Output: "<frames> frames (<w>x<h>, <fps> fps) in OUTDIR".
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '2,6p' "$0" >&2
  exit 2
fi
video=$1
outdir=$2
quality=${3:-90}
[ -f "$video" ] || { echo "no such video: $video" >&2; exit 1; }

OPENCV=4.12.0.88
NUMPY=2.2.6
VENV="target/tools/footage-venv-opencv-$OPENCV"

stamp="$(readlink -f "$video") $(stat -c '%s %Y' "$video") q$quality"
if [ -f "$outdir/.source" ] && [ "$(head -n1 "$outdir/.source")" = "$stamp" ]; then
  echo "$(sed -n 2p "$outdir/.source") in $outdir (already extracted)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import cv2' 2>/dev/null; then
  echo "== installing opencv-python-headless==$OPENCV into $VENV (PyPI)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "opencv-python-headless==$OPENCV" "numpy==$NUMPY" >&2
fi

mkdir -p "$(dirname "$outdir")"
start=$(date +%s.%N)
read -r n size fps < <("$VENV/bin/python" scripts/footage/extract_frames.py "$video" "$outdir" "$quality")
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
summary="$n frames (${size}, ${fps} fps)"
printf '%s\n%s\n' "$stamp" "$summary" > "$outdir/.source"
echo "$summary in $outdir (decoded in ${secs} s)"
