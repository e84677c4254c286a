#!/usr/bin/env python3
"""Selects benchmark photos from extracted Debian packages and derives camera-like frames (see fetch_photos.sh)."""
import os
import shutil
import sys

from PIL import Image

SKIP = ("/html", "doxygen", "Visualization", "screenshot", "/.readme", "CategoryImages")


def main(src, out):
    photos = os.path.join(out, "photos")
    shutil.rmtree(photos, ignore_errors=True)
    os.makedirs(photos)
    chosen, big = [], []
    for root, _, files in sorted(os.walk(src)):
        if any(s in root for s in SKIP):
            continue
        for f in sorted(files):
            if not f.lower().endswith((".jpg", ".jpeg")):
                continue
            p = os.path.join(root, f)
            if "/wallpapers/" in p and f != "1920x1080.jpg":
                continue  # one size per wallpaper
            try:
                with Image.open(p) as im:
                    w, h = im.size
                    mode = im.mode
            except Exception:
                continue
            if mode not in ("RGB", "L") or not (150_000 <= w * h <= 12_000_000):
                continue
            chosen.append((p, w * h))
            if w >= 1920 and h >= 1080 and mode == "RGB":
                big.append(p)
    for i, (p, _) in enumerate(chosen):
        shutil.copy(p, os.path.join(photos, f"{i:03d}_{os.path.basename(p)}"))
    mp = sum(a for _, a in chosen) / len(chosen) / 1e6
    print(f"{len(chosen)} photos, mean {mp:.2f} MP -> {photos}")
    for name, size in [("1080p", (1920, 1080)), ("720p", (1280, 720))]:
        d = os.path.join(out, "camera", name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for i, p in enumerate(big[:24]):
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                ch = min(h, w * 9 // 16)
                cw = ch * 16 // 9
                box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
                im.crop(box).resize(size, Image.Resampling.LANCZOS).save(
                    os.path.join(d, f"cam_{i:02d}.jpg"), quality=85, subsampling="4:2:0", optimize=False,
                    progressive=False)
        print(f"{min(len(big), 24)} camera frames {name} -> {d}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
