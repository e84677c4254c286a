#!/usr/bin/env python3
"""Per-frame scoring speed, framewatch vs the Python peers, on the same photos, one core, in one run.

    scripts/bench/fetch_photos.sh                       # once: builds .cache/photos from Debian packages
    cargo build --release -p framewatch
    python3 -m pip install numpy opencv-python-headless pillow   # + cleanvision whylogs[image] (optional)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 scripts/bench/peers.py [--repeat 3] [--json out.json]

Every contender reads the files itself (decode included) and is timed over the whole corpus; the median of
--repeat runs is reported. Single core: framewatch --threads 1, OpenCV setNumThreads(1), BLAS/OMP threads 1.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

cv2.setNumThreads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
import make_fixtures  # noqa: E402  (the lean numpy/OpenCV implementation of framewatch's definitions)


def pillow_decode(paths):
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB").load()


def pillow_draft_decode(paths, max_side):
    """Pillow's own DCT-domain scaling: Image.draft() makes libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale, the
    largest reduction that still leaves at least framewatch's analysis resolution (the longer side divided by the
    integer factor ceil(side / max_side), as AnalysisSettings::factor does). Photos within max_side decode in full.
    A fairer peer for a scorer that analyses at a reduced resolution than a full decode is."""
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
            k = -(-max(w, h) // max_side) if max_side > 0 else 1
            if k > 1:
                im.draft("RGB", (w // k, h // k))
            im.convert("RGB").load()


# Encord Active's image heuristics as its code runs them (encord-active lib/metrics/heuristic/img_features.py, the
# version REFERENCE.md section 1 describes): the simple metrics share one cv2.imread per image, each then converts
# BGR->RGB itself; sharpness and blur take the Laplacian of the 3-channel image; the colour metrics threshold with
# cv2.inRange. Area and aspect ratio read the image size.
def _rgb(img):
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encord_brightness(img):
    return _rgb(img).mean() / 255


def encord_contrast(img):
    return _rgb(img).std() / 255


def encord_sharpness(img):
    return cv2.Laplacian(_rgb(img), cv2.CV_64F).var()


def encord_blur(img):
    return 1 - cv2.Laplacian(_rgb(img), cv2.CV_64F).var()


def encord_colour(img, ranges):
    image = _rgb(img)
    mask = None
    for lo, hi in ranges:
        m = cv2.inRange(image, np.array([lo, 50, 20]), np.array([hi, 255, 255]))
        mask = m if mask is None else mask + m
    return np.sum(mask > 0) / (image.shape[0] * image.shape[1])


def encord_faithful(paths):
    for p in paths:
        img = cv2.imread(p)
        (encord_brightness(img), encord_contrast(img), encord_sharpness(img), encord_blur(img),
         encord_colour(img, [(0, 10), (170, 179)]), encord_colour(img, [(35, 75)]), encord_colour(img, [(90, 130)]))
        with Image.open(p) as im:
            w, h = im.size
        (w * h, w / h)


def lean_numpy_opencv(paths):
    for p in paths:
        bgr = cv2.imread(p, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        make_fixtures.data_metrics(rgb, os.path.getsize(p))


def framewatch(paths, exe, max_side, downscale):
    with tempfile.TemporaryDirectory() as d:
        for i, p in enumerate(paths):
            os.symlink(os.path.abspath(p), os.path.join(d, f"{i:04d}.jpg"))
        subprocess.run([exe, "score", d, "--threads", "1", "--format", "jsonl", "--max-side", str(max_side),
                        "--downscale", downscale], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cleanvision(paths):
    from cleanvision import Imagelab
    with tempfile.TemporaryDirectory() as d:
        for i, p in enumerate(paths):
            os.symlink(os.path.abspath(p), os.path.join(d, f"{i:04d}.jpg"))
        lab = Imagelab(data_path=d)
        lab.find_issues(n_jobs=1, verbose=False)


def whylogs_images(paths):
    import whylogs as why
    from whylogs.extras.image_metric import log_image
    for p in paths:
        with Image.open(p) as im:
            log_image(im.convert("RGB"))
    return why


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=os.path.join(ROOT, ".cache", "photos"))
    ap.add_argument("--exe", default=os.path.join(ROOT, "target", "release", "framewatch"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--max-side", type=int, default=1280,
                    help="framewatch's analysis max_side, also for the Image.draft() contender (default 1280)")
    ap.add_argument("--skip", default="", help="comma-separated contenders to skip")
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.photos, "*.jp*g")))
    if not paths:
        sys.exit(f"no photos in {args.photos}: run scripts/bench/fetch_photos.sh")
    mp = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / len(paths) / 1e6
    contenders = [
        ("framewatch score (Rust, full catalog, 1 thread)", lambda: framewatch(paths, args.exe, args.max_side, "dct")),
        ("framewatch score --downscale box", lambda: framewatch(paths, args.exe, args.max_side, "box")),
        ("Pillow bare decode: Image.open().convert('RGB')", lambda: pillow_decode(paths)),
        ("Pillow draft decode: Image.draft() DCT scaling", lambda: pillow_draft_decode(paths, args.max_side)),
        ("lean numpy/OpenCV, framewatch's data metrics", lambda: lean_numpy_opencv(paths)),
        ("Encord-faithful numpy/OpenCV heuristics", lambda: encord_faithful(paths)),
        ("CleanVision Imagelab.find_issues (n_jobs=1)", lambda: cleanvision(paths)),
        ("whylogs log_image", lambda: whylogs_images(paths)),
    ]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results = []
    for name, fn in contenders:
        if any(s in name for s in skip):
            continue
        times = []
        try:
            fn()  # warm-up (imports, caches)
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        except Exception as e:  # a missing optional peer is reported, not fatal
            print(f"{name}: unavailable ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        med = statistics.median(times)
        results.append({"name": name, "seconds": times, "median_s": med, "images_per_s": len(paths) / med})
    base = results[0]["images_per_s"] if results and results[0]["name"].startswith("framewatch") else None
    print(f"{len(paths)} photos, mean {mp:.2f} MP, median of {args.repeat} runs, one core")
    print(f"{'contender':52} {'img/s':>8} {'framewatch is':>14}")
    for r in results:
        ratio = f"{base / r['images_per_s']:.1f}x" if base else "-"
        print(f"{r['name']:52} {r['images_per_s']:8.1f} {ratio:>14}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"photos": len(paths), "mean_mp": mp, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
