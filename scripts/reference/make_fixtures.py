#!/usr/bin/env python3
"""Writes the reference fixtures that framewatch's Rust tests compare against.

Independent implementations, with numpy, scipy and OpenCV, of the definitions in metrics/METRICS.md:
  fixtures/reference/metrics.json   metric values of every image in fixtures/images (+ lossless copies it makes)
  fixtures/reference/drift.json     raw samples + PSI/JS (numpy: the reference's deciles with open-ended ends,
                                    empty bins at 1e-4), out-of-range share, exact KS (scipy), Wasserstein
  fixtures/reference/ks_pvalues.json  scipy's asymptotic two-sample KS p-values: kstwo.sf(D, round(n*m/(n+m)))
  fixtures/reference/chi2.json      scipy.stats.chi2_contingency(correction=False)

Run:  python3 -m pip install -r scripts/reference/requirements.txt && python3 scripts/reference/make_fixtures.py
      (or name some fixtures to write only those: ... make_fixtures.py drift.json)
The fixtures are committed; tests only read them, so CI needs no Python packages.
"""
import json
import math
import os
import sys

import cv2
import numpy as np
import scipy
from scipy import stats

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
IMAGES = os.path.join(ROOT, "fixtures", "images")
OUT = os.path.join(ROOT, "fixtures", "reference")

MAX_SIDE = 1280
DARK, BRIGHT = 10, 245
LOW_CONF = (0.5, 0.8)
FINE_BINS = 100
PSI_EPS = 1e-4


# ---------------------------------------------------------------- images

def analysis_image(rgb):
    h, w = rgb.shape[:2]
    side = max(w, h)
    k = 1 if side <= MAX_SIDE else -(-side // MAX_SIDE)
    if k == 1:
        return rgb, 1
    H, W = h // k, w // k
    acc = rgb[: H * k, : W * k].astype(np.uint32).reshape(H, k, W, k, 3).sum(axis=(1, 3))
    return ((acc + (k * k) // 2) // (k * k)).astype(np.uint8), k


def data_metrics(rgb_src, encoded_len):
    h0, w0 = rgb_src.shape[:2]
    rgb, k = analysis_image(rgb_src)
    f = rgb.astype(np.float64)
    R, G, B = f[..., 0], f[..., 1], f[..., 2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F, ksize=1)[1:-1, 1:-1]
    sharp = min(math.sqrt(lap.var()) / (8 * 255), 1.0) if lap.size else 0.0
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    H, S, V = hsv[..., 0].astype(int), hsv[..., 1].astype(int), hsv[..., 2].astype(int)
    box = (S >= 50) & (V >= 40)
    rg = R - G
    yb = 0.5 * (R + G) - B
    colorfulness = math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / grey.size
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    resp = cv2.filter2D(grey.astype(np.float64), -1, kernel)[1:-1, 1:-1]
    noise = math.sqrt(math.pi / 2) * np.abs(resp).sum() / (6 * resp.size) / 255 if resp.size else 0.0
    total = R.sum() + G.sum() + B.sum()
    redness = np.maximum(0, rgb[..., 0].astype(int) - np.maximum(rgb[..., 1], rgb[..., 2]).astype(int))
    out = {
        "brightness": f.mean() / 255,
        "contrast": f.std() / 255,
        "sharpness": sharp,
        "blur": 1 - sharp,
        "saturation": S.mean() / 255,
        "colorfulness": colorfulness,
        "entropy": float(-(p * np.log2(p)).sum()),
        "red": float((box & ((H <= 10) | ((H >= 170) & (H <= 179)))).mean()),
        "green": float((box & (H >= 35) & (H <= 75)).mean()),
        "blue": float((box & (H >= 90) & (H <= 130)).mean()),
        "red_mean": R.sum() / total,
        "green_mean": G.sum() / total,
        "blue_mean": B.sum() / total,
        "dark_fraction": float((grey <= DARK).mean()),
        "bright_fraction": float((grey >= BRIGHT).mean()),
        "noise": noise,
        "width": w0,
        "height": h0,
        "area": w0 * h0,
        "aspect_ratio": w0 / h0,
        "bytes_per_pixel": encoded_len / (w0 * h0),
        "redness": redness.mean() / 255,
    }
    return {k2: float(v) for k2, v in out.items()}, k, rgb


def prediction_metrics(dets, size, rgb_analysis):
    w, h = size
    out = {"object_count": float(len(dets))}
    if not dets:
        return out
    conf = np.array([d["confidence"] for d in dets], dtype=np.float32).astype(np.float64)
    out["confidence_mean"] = conf.mean()
    out["confidence_min"] = conf.min()
    out["confidence_max"] = conf.max()
    lo, hi = LOW_CONF
    c32 = np.array([d["confidence"] for d in dets], dtype=np.float32)
    out["low_confidence_fraction"] = float(((c32 >= np.float32(lo)) & (c32 < np.float32(hi))).mean())
    f32 = lambda d, k: float(np.float32(d[k]))
    bw = np.array([np.float32(d["x_max"]) - np.float32(d["x_min"]) for d in dets], dtype=np.float64)
    bh = np.array([np.float32(d["y_max"]) - np.float32(d["y_min"]) for d in dets], dtype=np.float64)
    out["box_area_mean"] = (bw * bh).mean()
    ok = bh > 0
    if ok.any():
        out["box_aspect_ratio_mean"] = ((bw[ok] * w) / (bh[ok] * h)).mean()
    out["border_proximity_max"] = max(
        max(f32(d, "x_max"), f32(d, "y_max"), float(np.float32(1) - np.float32(d["x_min"])),
            float(np.float32(1) - np.float32(d["y_min"]))) for d in dets)

    def iou(a, b):
        ix = max(0.0, float(min(np.float32(a["x_max"]), np.float32(b["x_max"])) - max(np.float32(a["x_min"]), np.float32(b["x_min"]))))
        iy = max(0.0, float(min(np.float32(a["y_max"]), np.float32(b["y_max"])) - max(np.float32(a["y_min"]), np.float32(b["y_min"]))))
        area = lambda d: float(np.float32(d["x_max"]) - np.float32(d["x_min"])) * float(np.float32(d["y_max"]) - np.float32(d["y_min"]))
        inter = ix * iy
        union = area(a) + area(b) - inter
        return inter / union if union > 0 else 0.0

    dup = 0.0
    for i, a in enumerate(dets):
        for b in dets[i + 1:]:
            if a["class"] == b["class"]:
                dup = max(dup, iou(a, b))
    out["duplicate_iou_max"] = dup
    ents, margins = [], []
    for d in dets:
        p = np.array(d.get("class_probabilities", []), dtype=np.float32).astype(np.float64)
        if p.size and p.sum() > 0:
            q = p / p.sum()
            nz = q[q > 0]
            ents.append(float(-(nz * np.log2(nz)).sum()))
            s = np.sort(q)[::-1]
            margins.append(float(s[0] - (s[1] if s.size > 1 else 0.0)))
    if ents:
        out["class_entropy_mean"] = float(np.mean(ents))
        out["class_margin_mean"] = float(np.mean(margins))
    # object_redness_mean: redness inside each box at analysis resolution
    ah, aw = rgb_analysis.shape[:2]
    red = np.maximum(0, rgb_analysis[..., 0].astype(int) - np.maximum(rgb_analysis[..., 1], rgb_analysis[..., 2]).astype(int))
    vals = []
    for d in dets:
        px = lambda v, n: min(int(round(float(np.float32(v)) * n)), n)  # Rust rounds half away from zero
        x0, x1 = px(d["x_min"], aw), px(d["x_max"], aw)
        y0, y1 = px(d["y_min"], ah), px(d["y_max"], ah)
        if x1 > x0 and y1 > y0:
            vals.append(red[y0:y1, x0:x1].mean() / 255)
    if vals:
        out["object_redness_mean"] = float(np.mean(vals))
    return {k: float(v) for k, v in out.items()}


def make_images(rng):
    """Lossless PNG copies of two real photos plus synthetic edge cases; returns their names."""
    made = []
    for src in ["building.jpg", "baboon.jpg"]:
        bgr = cv2.imread(os.path.join(IMAGES, src), cv2.IMREAD_COLOR)
        name = "lossless_" + src.replace(".jpg", ".png")
        cv2.imwrite(os.path.join(IMAGES, name), bgr)
        made.append(name)
    # big frame: exercises the analysis downscale (1400 > 1280: k = 2)
    y, x = np.mgrid[0:900, 0:1400]
    big = np.stack([(x * 255 // 1399), (y * 255 // 899), ((x + y) % 256)], axis=-1).astype(np.uint8)
    big = cv2.GaussianBlur(big, (0, 0), 1.0)
    noise = rng.integers(-12, 13, size=big.shape) // 4
    big = np.clip(big.astype(int) + noise, 0, 255).astype(np.uint8)
    cv2.imwrite(os.path.join(IMAGES, "synthetic_1400x900.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    made.append("synthetic_1400x900.png")
    # tiny frames: 1x1 and 2x3 (no interior pixels for the Laplacian)
    cv2.imwrite(os.path.join(IMAGES, "tiny_1x1.png"), np.array([[[10, 200, 30]]], dtype=np.uint8))
    cv2.imwrite(os.path.join(IMAGES, "tiny_2x3.png"), rng.integers(0, 256, size=(3, 2, 3), dtype=np.uint8))
    made += ["tiny_1x1.png", "tiny_2x3.png"]
    # saturated colour blocks: red / green / blue boxes of Encord's metric
    blocks = np.zeros((60, 90, 3), dtype=np.uint8)
    blocks[:, :30] = (0, 0, 220)    # BGR red
    blocks[:, 30:60] = (0, 200, 0)  # green
    blocks[:, 60:] = (230, 40, 0)   # blue
    cv2.imwrite(os.path.join(IMAGES, "colour_blocks.png"), blocks)
    made.append("colour_blocks.png")
    return made


def metrics_fixture():
    rng = np.random.default_rng(20261126)
    make_images(rng)
    with open(os.path.join(ROOT, "fixtures", "predictions.jsonl")) as fh:
        preds = {json.loads(l)["path"]: json.loads(l)["detections"] for l in fh if l.strip()}
    entries = []
    for name in sorted(os.listdir(IMAGES)):
        if not name.lower().endswith((".jpg", ".png")):
            continue
        path = os.path.join(IMAGES, name)
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        values, k, rgb_an = data_metrics(rgb, os.path.getsize(path))
        dets = preds.get(name, [])
        values.update(prediction_metrics(dets, (rgb.shape[1], rgb.shape[0]), rgb_an))
        entries.append({
            "file": name,
            "lossless": name.endswith(".png"),
            "analysis_factor": k,
            "metrics": values,
        })
    # OpenCV's 8-bit RGB->HSV and RGB->GRAY on random colours, to pin the exact integer conversions.
    colours = rng.integers(0, 256, size=(1, 20000, 3), dtype=np.uint8)
    hsv = cv2.cvtColor(colours, cv2.COLOR_RGB2HSV)[0]
    grey = cv2.cvtColor(colours, cv2.COLOR_RGB2GRAY)[0]
    samples = [[int(c) for c in colours[0, i]] + [int(x) for x in hsv[i]] + [int(grey[i])] for i in range(colours.shape[1])]
    return {"decoder": f"OpenCV {cv2.__version__}", "max_side": MAX_SIDE, "images": entries,
            "colour_samples_rgb_hsv_grey": samples}


# ---------------------------------------------------------------- drift

def layout(ref):
    s = np.sort(ref)
    q = np.arange(FINE_BINS + 1) / FINE_BINS
    edges = np.unique(np.quantile(s, q))
    deciles = np.quantile(s, np.array([i * FINE_BINS // 10 for i in range(1, 10)]) / FINE_BINS)
    cuts = np.unique(deciles[deciles > edges[0]])
    return edges, cuts


def coarse_bins(values, cuts):
    """Counts per PSI bin, the standard way: bins between the reference's deciles, the first and last open-ended,
    so a value below the reference minimum counts in the first bin and one above its maximum in the last."""
    idx = np.digitize(values, cuts)  # i such that cuts[i-1] <= v < cuts[i]; 0 below cuts[0], len(cuts) from the last
    return np.bincount(idx, minlength=len(cuts) + 1).astype(np.float64)


def out_of_range(ref, cur):
    return float(((cur < ref.min()) | (cur > ref.max())).mean())


def psi(p, q):
    p = np.where(p > 0, p, PSI_EPS)
    q = np.where(q > 0, q, PSI_EPS)
    return float(max(((q - p) * np.log(q / p)).sum(), 0.0))


def js(p, q):
    return float(scipy.spatial.distance.jensenshannon(p, q, base=2))


def drift_case(name, ref, cur):
    edges, cuts = layout(ref)
    p = coarse_bins(ref, cuts)
    q = coarse_bins(cur, cuts)
    p, q = p / p.sum(), q / q.sum()
    ks = stats.ks_2samp(ref, cur)
    n, m = len(ref), len(cur)
    p_asymp = stats.ks_2samp(ref, cur, method="asymp").pvalue
    q1, q3 = np.quantile(ref, [0.25, 0.75])
    iqr = q3 - q1
    mod = ((cur < q1 - 1.5 * iqr) | (cur > q3 + 1.5 * iqr)).mean()
    sev = ((cur < q1 - 2.5 * iqr) | (cur > q3 + 2.5 * iqr)).mean()
    std = ref.std()
    return {
        "name": name,
        "reference": ref.tolist(),
        "current": cur.tolist(),
        "edges": edges.tolist(),
        "psi_cuts": cuts.tolist(),
        "psi": psi(p, q),
        "js_distance": js(p, q),
        "out_of_range": out_of_range(ref, cur),
        "ks_statistic": float(ks.statistic),
        "ks_p_value_asymp": float(p_asymp),
        "wasserstein_norm": float(stats.wasserstein_distance(ref, cur) / std) if std > 0 else None,
        "outliers_moderate": float(mod),
        "outliers_severe": float(sev),
        "baseline_mean": float(ref.mean()),
        "baseline_std": float(std),
        "current_mean": float(cur.mean()),
    }


def drift_fixture():
    rng = np.random.default_rng(7)
    N = rng.normal
    cases = [
        drift_case("same_normal", N(0, 1, 5000), N(0, 1, 1000)),
        drift_case("shift_0.3sd", N(0, 1, 5000), N(0.3, 1, 500)),
        drift_case("scale_1.5", N(0, 1, 4000), N(0, 1.5, 800)),
        drift_case("darken_brightness", rng.beta(5, 5, 3000) * 0.8 + 0.1, (rng.beta(5, 5, 600) * 0.8 + 0.1) * 0.5),
        drift_case("all_above_range", rng.uniform(0, 1, 2000), rng.uniform(1.5, 2.0, 300)),
        drift_case("poisson_counts", rng.poisson(3, 3000).astype(float), rng.poisson(3.6, 700).astype(float)),
        drift_case("rounded_ties", np.round(N(0.5, 0.1, 3000), 2), np.round(N(0.52, 0.1, 900), 2)),
        drift_case("small_samples", N(0, 1, 200), N(0.5, 1, 50)),
        drift_case("lognormal_tail", rng.lognormal(0, 0.5, 5000), rng.lognormal(0.1, 0.7, 2000)),
        drift_case("large_small_shift", N(0, 1, 20000), N(0.05, 1, 20000)),
    ]
    return {"fine_bins": FINE_BINS, "psi_epsilon": PSI_EPS, "js_base": 2, "cases": cases}


def ks_pvalue_fixture():
    rows = []
    for n, m in [(50, 50), (200, 50), (1000, 1000), (5000, 500), (100000, 100000), (1000000, 1000000), (40, 7000)]:
        en = n * m / (n + m)
        for d in [0.0, 1e-4, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0]:
            p = float(stats.kstwo.sf(d, np.round(en)))
            rows.append({"d": d, "n": n, "m": m, "p": min(max(p, 0.0), 1.0)})
    return {"scipy": scipy.__version__, "rows": rows}


def chi2_fixture():
    tables = [
        [[120, 30, 50], [118, 35, 47]],
        [[500, 100, 20, 5], [300, 200, 40, 1]],
        [[10, 0, 5], [3, 7, 9]],
        [[1000, 1000], [1000, 1000]],
    ]
    rows = []
    for t in tables:
        arr = np.array(t)
        keep = arr.sum(axis=0) > 0
        res = stats.chi2_contingency(arr[:, keep], correction=False)
        rows.append({"table": t, "statistic": float(res.statistic), "dof": int(res.dof), "p_value": float(res.pvalue),
                     "cramers_v": math.sqrt(res.statistic / arr.sum())})
    return {"rows": rows}


def main():
    os.makedirs(OUT, exist_ok=True)
    fixtures = [("metrics.json", metrics_fixture), ("drift.json", drift_fixture),
                ("ks_pvalues.json", ks_pvalue_fixture), ("chi2.json", chi2_fixture)]
    wanted = sys.argv[1:] or [name for name, _ in fixtures]
    unknown = set(wanted) - {name for name, _ in fixtures}
    if unknown:
        sys.exit(f"unknown fixture(s) {sorted(unknown)}; known: {[name for name, _ in fixtures]}")
    for name, fn in fixtures:
        if name not in wanted:
            continue
        with open(os.path.join(OUT, name), "w") as fh:
            json.dump(fn(), fh, indent=None if name == "drift.json" else 1)
            fh.write("\n")
        print("wrote", os.path.relpath(os.path.join(OUT, name), ROOT), file=sys.stderr)


if __name__ == "__main__":
    main()
