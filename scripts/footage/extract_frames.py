#!/usr/bin/env python3
"""Writes every frame of a video as a JPEG (frame_00001.jpg, ... in time order) and prints the count.

Usage: extract_frames.py VIDEO OUTDIR [QUALITY]   (run by extract.sh inside its venv; needs opencv-python-headless)

Frames are written to OUTDIR.partial and renamed to OUTDIR only when every frame is out, so an interrupted run
never leaves a half clip that a later run would mistake for a whole one.
"""
import os
import shutil
import sys

import cv2


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    video, outdir = sys.argv[1], sys.argv[2]
    quality = int(sys.argv[3]) if len(sys.argv) == 4 else 90
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        print(f"cannot open {video}", file=sys.stderr)
        return 1
    fps = cap.get(cv2.CAP_PROP_FPS)
    partial = outdir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    n, size = 0, (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        size = (frame.shape[1], frame.shape[0])
        path = os.path.join(partial, f"frame_{n:05d}.jpg")
        if not cv2.imwrite(path, frame, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            print(f"cannot write {path}", file=sys.stderr)
            return 1
    if n == 0:
        print(f"{video}: no frame decoded", file=sys.stderr)
        return 1
    shutil.rmtree(outdir, ignore_errors=True)
    os.rename(partial, outdir)
    print(f"{n} {size[0]}x{size[1]} {fps:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
