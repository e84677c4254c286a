#!/usr/bin/env python3
"""Accuracy vs speed of `framewatch score`'s analysis resolution (--max-side, and --downscale box|dct).

For each (mode, max_side) configuration this measures, on a corpus of real photos, one core:
  * speed: wall-clock time of a whole `framewatch score --format jsonl --threads 1 --max-side M` run
    (process start + decode + scoring); --repeat runs interleaved round-robin across all configurations
    (and the full-resolution reference, --max-side 0), median images/s reported, and its ratio to the
    reference's;
  * accuracy: per data metric that varies across the photos at full resolution (metrics that are constant
    or absent, e.g. prediction metrics without predictions, are skipped), the Spearman rank correlation
    (average ranks for ties) between the configuration's values and the full-resolution values, matched by
    file; the minimum over metrics and the metrics below 0.95;
  * blur check: each photo and a copy blurred with Pillow ImageFilter.GaussianBlur(2) (sigma 2 px at source
    resolution, saved as JPEG quality 95, same size, cached in <cache>/blurred/) are scored with the same
    configuration; reported: the fraction of photos whose `sharpness` fell >= 3x, the median and the minimum
    fall (the Rust test metrics/tests/sharpness_blur.rs asks >= 3x on 90 % of photos, every photo > 1.5x).
Mode `legacy` passes no --downscale flag (binaries without it); any other mode m passes `--downscale m`.

    scripts/bench/fetch_photos.sh                   # once: builds .cache/photos (224 JPEG photos)
    cargo build --release -p framewatch
    python3 scripts/bench/analysis_resolution.py [--bin target/release/framewatch] [--photos .cache/photos]
        [--cache .cache] [--max-sides 320,640,960,1280] [--modes box,dct | legacy] [--repeat 3] [--json out.json]

Dependencies: Python 3, numpy, Pillow. Output: two Markdown tables on stdout (progress on stderr).
Timings on a shared machine are noisy: read the medians and ratios, not the absolute numbers.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageFilter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXTS = (".jpg", ".jpeg", ".png")  # what `framewatch score` walks in a directory
BLUR_FACTOR = 3.0
SPEARMAN_BAR = 0.95


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def corpus(root):
    """Relative paths of the images under root, as framewatch walks them."""
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in files if f.lower().endswith(EXTS)]
    return sorted(out)


def key(rel):
    """Match a frame across corpora: relative path without extension (blurred copies are always .jpg)."""
    return os.path.splitext(rel)[0]


def blurred_corpus(photos, cache):
    """A GaussianBlur(2) copy of every photo, JPEG quality 95, same size; built once, reused."""
    out_root = os.path.join(cache, "blurred")
    made = 0
    for rel in corpus(photos):
        src, dst = os.path.join(photos, rel), os.path.join(out_root, key(rel) + ".jpg")
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with Image.open(src) as im:
            extra = {k: im.info[k] for k in ("exif", "icc_profile") if im.info.get(k)}
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            im.filter(ImageFilter.GaussianBlur(2)).save(dst + ".tmp", "JPEG", quality=95, **extra)
        os.replace(dst + ".tmp", dst)
        made += 1
    log(f"blurred corpus: {out_root} ({made} new copies)")
    return out_root


def score(binary, directory, max_side, mode):
    """One timed `score` run: (seconds, {key: {metric: value or None}})."""
    cmd = [binary, "score", "--format", "jsonl", "--threads", "1", "--max-side", str(max_side)]
    if mode not in (None, "legacy"):
        cmd += ["--downscale", mode]
    t0 = time.perf_counter()
    p = subprocess.run(cmd + [directory], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} {directory} failed ({p.returncode}):\n{p.stderr}")
    frames = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            frames[key(os.path.relpath(obj["path"], directory))] = obj["metrics"]
    return secs, frames


def rankdata(a):
    """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata's default)."""
    order = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), dtype=np.intp)
    inv[order] = np.arange(len(a))
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = np.cumsum(first)[inv]
    bounds = np.r_[np.nonzero(first)[0], len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(x, y):
    rx, ry = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")  # a configuration that makes a varying metric constant: no correlation
    return float(np.corrcoef(rx, ry)[0, 1])


def varying_metrics(ref):
    """Metrics with a numeric value on >= 3 frames at full resolution, not all equal."""
    names = sorted({m for f in ref.values() for m in f})
    keep = []
    for m in names:
        vals = {f[m] for f in ref.values() if isinstance(f.get(m), (int, float))}
        if len(vals) > 1 and sum(isinstance(f.get(m), (int, float)) for f in ref.values()) >= 3:
            keep.append(m)
    return keep


def accuracy(ref, frames, metrics):
    out = {}
    for m in metrics:
        pairs = [(ref[k][m], frames[k][m]) for k in ref
                 if k in frames and ref[k].get(m) is not None and frames[k].get(m) is not None]
        out[m] = spearman(*zip(*pairs)) if len(pairs) >= 3 else float("nan")
    return out


def blur_check(sharp, blurred):
    ratios = []
    for k, f in sharp.items():
        a, b = f.get("sharpness"), blurred.get(k, {}).get("sharpness")
        if a is not None and b is not None:
            ratios.append(a / b if b > 0 else float("inf"))
    r = np.array(ratios)
    return {"n": len(r), "fraction_ge_3x": float(np.mean(r >= BLUR_FACTOR)),
            "median_ratio": float(np.median(r)), "min_ratio": float(np.min(r))}


def fmt(x, nd=3):
    return "nan" if x != x else f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/framewatch"))
    ap.add_argument("--photos", default=os.path.join(ROOT, ".cache/photos"))
    ap.add_argument("--cache", default=os.path.join(ROOT, ".cache"), help="blurred copies go in <cache>/blurred")
    ap.add_argument("--max-sides", default="320,640,960,1280")
    ap.add_argument("--modes", default="box", help="comma-separated --downscale values; 'legacy' = no flag")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()

    photos = os.path.abspath(args.photos)
    blurred_dir = blurred_corpus(photos, os.path.abspath(args.cache))
    ref_cfg = ("full", 0, None)
    configs = [ref_cfg] + [(f"{m} {s}", int(s), m) for m in args.modes.split(",")
                           for s in args.max_sides.split(",")]
    times = {c[0]: [] for c in configs}
    frames = {}
    for r in range(args.repeat):  # round-robin: every configuration once per round
        for name, side, mode in configs:
            secs, f = score(args.bin, photos, side, mode)
            times[name].append((secs, len(f)))
            frames.setdefault(name, f)  # scores are deterministic; keep the first run's
            log(f"round {r + 1}/{args.repeat} {name}: {len(f)} frames in {secs:.2f} s")
    blur = {}
    for name, side, mode in configs:
        _, bf = score(args.bin, blurred_dir, side, mode)
        blur[name] = blur_check(frames[name], bf)

    ref = frames["full"]
    metrics = varying_metrics(ref)
    results = {}
    for name, side, mode in configs:
        ips = statistics.median(n / s for s, n in times[name])
        acc = accuracy(ref, frames[name], metrics) if name != "full" else {}
        results[name] = {"mode": mode, "max_side": side, "frames": len(frames[name]),
                         "seconds": [s for s, _ in times[name]], "images_per_s": ips,
                         "spearman": acc, "blur": blur[name]}
    ref_ips = results["full"]["images_per_s"]

    print(f"`{args.bin} score --threads 1`, {len(ref)} photos in {photos}, median of {args.repeat} "
          f"interleaved runs; Spearman vs --max-side 0 over {len(metrics)} varying metrics; blur: "
          f"GaussianBlur(2) copies, sharpness fall >= {BLUR_FACTOR:g}x\n")
    print("| configuration | images/s (median) | speed vs full | min Spearman (metric) | metrics < 0.95 "
          "| blur >= 3x | blur median fall | blur min fall |")
    print("|---|---:|---:|---|---|---:|---:|---:|")
    for name, _, _ in configs:
        r = results[name]
        if r["spearman"]:
            worst = min(r["spearman"], key=lambda m: (r["spearman"][m] == r["spearman"][m], r["spearman"][m]))
            low = [m for m, v in r["spearman"].items() if not v >= SPEARMAN_BAR]
            acc_cols = f"{fmt(r['spearman'][worst])} ({worst}) | {', '.join(low) or 'none'}"
        else:
            acc_cols = "reference | —"
        b = r["blur"]
        label = "full (max-side 0)" if name == "full" else name
        print(f"| {label} | {r['images_per_s']:.1f} | {r['images_per_s'] / ref_ips:.2f}x | {acc_cols} "
              f"| {b['fraction_ge_3x']:.1%} | {b['median_ratio']:.2f}x | {b['min_ratio']:.2f}x |")

    cols = [c[0] for c in configs[1:]]
    print("\nSpearman rank correlation with full resolution, per metric:\n")
    print("| metric | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for m in metrics:
        print(f"| {m} | " + " | ".join(fmt(results[c]["spearman"][m]) for c in cols) + " |")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"bin": args.bin, "photos": photos, "repeat": args.repeat, "metrics": metrics,
                       "configurations": results}, fh, indent=1)


if __name__ == "__main__":
    main()
