#!/usr/bin/env bash
# Builds the benchmark corpus in .cache/ from real photographs shipped in Debian packages (nothing is committed):
#   .cache/photos/        every JPEG photo 0.15-12 MP from the packages below (one size per wallpaper)
#   .cache/camera/1080p/  camera-like 1920x1080 baseline JPEGs (q85, 4:2:0) cropped from the larger photos
#   .cache/camera/720p/   the same at 1280x720
# Needs apt-get (download only, no install) and Python 3 with Pillow (pip install pillow).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=.cache/debs
mkdir -p "$work"
pkgs=(opencv-doc scratch mate-backgrounds kphotoalbum labelme-examples palapeli-data plasma-workspace-wallpapers)
( cd "$work"
  for p in "${pkgs[@]}"; do
    ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p"
  done
  for d in *.deb; do [ -d "x/.${d}" ] || { dpkg-deb -x "$d" x && mkdir -p "x/.${d}"; }; done )
python3 scripts/bench/build_corpus.py "$work/x" .cache
