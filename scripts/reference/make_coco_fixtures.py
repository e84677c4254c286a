#!/usr/bin/env python3
"""Writes the fixtures metrics/tests/reference_performance.rs compares framewatch's model evaluation against:
  fixtures/reference/coco.json        detection performance computed by pycocotools (to 1e-6);
  fixtures/reference/importance.json  Spearman's rho (scipy.stats.spearmanr) and mutual information
                                      (sklearn.metrics.mutual_info_score on rank-quantile bins) of paired samples.

Each case is a list of frames (normalised boxes, a class, a confidence for detections), evaluated by
pycocotools' COCOeval (bbox, area "all", maxDets 100, no crowd boxes) for:
  map50, map50_95 and per-class ap50 / ap50_95   from COCOeval.accumulate()'s precision array;
  true/false positives and false negatives        from COCOeval.evaluateImg()'s matches at IoU 0.5, counting the
                                                  detections with confidence >= score_threshold.
Coordinates are multiples of 1/256 and confidences multiples of 1/64, so f32 holds them exactly and both sides
compute the same overlaps. The cases cover crowded frames, empty frames, classes found only in the detections or
only in the labels, ties in confidence, overlaps exactly at a threshold, and more than 100 detections of a class.

Run:  python3 -m pip install -r scripts/reference/requirements.txt && python3 scripts/reference/make_coco_fixtures.py
"""
import contextlib
import io
import json
import os
import random

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "fixtures", "reference", "coco.json")
GRID = 256


def q(v):
    return round(min(max(v, 0.0), 1.0) * GRID) / GRID


def box(rng, min_side=4, max_side=80):
    w = rng.randint(min_side, max_side)
    h = rng.randint(min_side, max_side)
    x = rng.randint(0, GRID - w)
    y = rng.randint(0, GRID - h)
    return [x / GRID, y / GRID, (x + w) / GRID, (y + h) / GRID]


def jitter(rng, b, amount):
    out = [q(v + rng.randint(-amount, amount) / GRID) for v in b]
    if out[2] < out[0]:
        out[0], out[2] = out[2], out[0]
    if out[3] < out[1]:
        out[1], out[3] = out[3], out[1]
    return out


def conf(rng, levels=64):
    return rng.randint(1, levels) / levels


def scene(rng, frames, classes, max_objects, miss=0.2, stray=0.3, confusion=0.05, empty=0.1, conf_levels=64,
          det_only=None):
    """A model's view of labelled frames: jittered hits, misses, stray boxes, wrong classes, empty frames."""
    out = []
    for _ in range(frames):
        truth, dets = [], []
        if rng.random() >= empty:
            for _ in range(rng.randint(0, max_objects)):
                c = rng.choice(classes)
                b = box(rng)
                truth.append({"box": b, "class": c})
                if rng.random() < miss:
                    continue
                dc = rng.choice(classes) if rng.random() < confusion else c
                dets.append({"box": jitter(rng, b, rng.choice([0, 1, 3, 8, 20])), "class": dc,
                             "confidence": conf(rng, conf_levels)})
        for _ in range(rng.randint(0, 3)):
            if rng.random() < stray:
                dets.append({"box": box(rng), "class": det_only if det_only and rng.random() < 0.5
                             else rng.choice(classes), "confidence": conf(rng, conf_levels)})
        rng.shuffle(dets)
        out.append({"truth": truth, "detections": dets})
    return out


def cases():
    rng = random.Random(20261202)
    yield "crowded_scenes", 0.5, scene(rng, 40, ["car", "person", "bike"], 30)
    yield "sparse_with_empty_frames", 0.25, scene(rng, 60, ["car", "person"], 3, empty=0.4)
    yield "class_only_in_detections_or_labels", 0.5, scene(rng, 30, ["car", "truck"], 6, det_only="dog") + [
        {"truth": [{"box": [0.5, 0.5, 0.75, 0.75], "class": "never_detected"}], "detections": []}]
    yield "ties_in_confidence", 0.5, scene(rng, 50, ["car", "person"], 8, conf_levels=3)
    half = [0.0, 0.0, 0.5, 0.5]
    yield "overlap_exactly_at_thresholds", 0.5, [
        # IoU exactly 0.5, 0.75 and 0.9375 (dyadic), and a tie of two labelled boxes equally overlapped.
        {"truth": [{"box": half, "class": "car"}],
         "detections": [{"box": [0.0, 0.0, 0.5, 0.25], "class": "car", "confidence": 0.75}]},
        {"truth": [{"box": half, "class": "car"}],
         "detections": [{"box": [0.0, 0.0, 0.5, 0.375], "class": "car", "confidence": 0.75}]},
        {"truth": [{"box": [0.0, 0.0, 1.0, 1.0], "class": "car"}],
         "detections": [{"box": [0.0, 0.0, 1.0, 0.9375], "class": "car", "confidence": 0.5}]},
        {"truth": [{"box": [0.0, 0.0, 0.5, 1.0], "class": "car"}, {"box": [0.5, 0.0, 1.0, 1.0], "class": "car"}],
         "detections": [{"box": [0.25, 0.0, 0.75, 1.0], "class": "car", "confidence": 0.5},
                        {"box": [0.25, 0.0, 0.75, 1.0], "class": "car", "confidence": 0.5}]},
        {"truth": [], "detections": [{"box": half, "class": "car", "confidence": 0.875}]},
        {"truth": [{"box": half, "class": "car"}], "detections": []},
    ]
    many = []
    for _ in range(3):
        truth = [{"box": box(rng, 2, 20), "class": "bird"} for _ in range(120)]
        dets = [{"box": jitter(rng, t["box"], 1), "class": "bird", "confidence": conf(rng)} for t in truth]
        dets += [{"box": box(rng, 2, 20), "class": "bird", "confidence": conf(rng)} for _ in range(30)]
        rng.shuffle(dets)
        many.append({"truth": truth, "detections": dets})
    yield "more_than_100_detections_per_class", 0.5, many


def xywh(b):
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def evaluate(frames, score_threshold):
    classes = sorted({o["class"] for f in frames for o in f["truth"] + f["detections"]})
    cat = {c: i + 1 for i, c in enumerate(classes)}
    gt = {"images": [{"id": i + 1, "width": 1, "height": 1} for i in range(len(frames))],
          "categories": [{"id": cat[c], "name": c} for c in classes], "annotations": []}
    dts = []
    for i, f in enumerate(frames):
        for t in f["truth"]:
            b = xywh(t["box"])
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": cat[t["class"]],
                                      "bbox": b, "area": b[2] * b[3], "iscrowd": 0})
        for d in f["detections"]:
            dts.append({"image_id": i + 1, "category_id": cat[d["class"]], "bbox": xywh(d["box"]),
                        "score": d["confidence"]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 2]  # T x R x K, area "all", maxDets 100
    s = prec[prec > -1]
    out = {"map50": float(np.mean(prec[0][prec[0] > -1])) if (prec[0] > -1).any() else None,
           "map50_95": float(np.mean(s)) if s.size else None, "classes": {}}
    counts = {c: [0, 0, 0] for c in classes}
    n_img = len(frames)
    for k, c in enumerate(classes):
        for e in ev.evalImgs[k * 4 * n_img: k * 4 * n_img + n_img]:  # area "all" comes first per category
            if e is None:
                continue
            assert e["aRng"] == ev.params.areaRng[0]
            m = e["dtMatches"][0] > 0
            sc = np.array(e["dtScores"]) >= score_threshold
            tp = int(np.count_nonzero(m & sc)) if len(e["dtScores"]) else 0
            fp = int(np.count_nonzero(~m & sc)) if len(e["dtScores"]) else 0
            counts[c][0] += tp
            counts[c][1] += fp
            counts[c][2] += len(e["gtIds"]) - tp
        pk = prec[:, :, k]
        has = bool((pk > -1).all())
        out["classes"][c] = {"truths": sum(len([t for t in f["truth"] if t["class"] == c]) for f in frames),
                             "true_positives": counts[c][0], "false_positives": counts[c][1],
                             "false_negatives": counts[c][2],
                             "ap50": float(np.mean(pk[0])) if has else None,
                             "ap50_95": float(np.mean(pk)) if has else None}
    for i, key in enumerate(["true_positives", "false_positives", "false_negatives"]):
        out[key] = sum(v[i] for v in counts.values())
    return out


def rank_bins(values, k):
    from scipy.stats import rankdata
    r = rankdata(values, method="average")
    return np.minimum(((r - 1.0) * k / len(values)).astype(int), k - 1)


def importance():
    from scipy.stats import spearmanr
    from sklearn.metrics import mutual_info_score
    rng = np.random.default_rng(20261202)
    cases = []
    for name, n, make in [
        ("monotone_noisy", 200, lambda x: x ** 2 + rng.normal(0, 0.1, x.size)),
        ("ties_on_both_sides", 150, lambda x: np.round(x * 4) / 4 + np.round(rng.normal(0, 0.5, x.size))),
        ("independent", 300, lambda x: rng.uniform(0, 1, x.size)),
        ("f1_like_discrete", 120, lambda x: np.where(x < 0.3, 0.0, np.where(x < 0.6, 0.5, 1.0))),
    ]:
        x = np.round(rng.uniform(0, 1, n) * 64) / 64
        y = make(x)
        bins = 5
        rho = spearmanr(x, y).statistic
        cases.append({"name": name, "x": x.tolist(), "y": y.tolist(), "bins": bins, "spearman": float(rho),
                      "mutual_information": float(mutual_info_score(rank_bins(x, bins), rank_bins(y, bins)))})
    return cases


def main():
    import pycocotools
    import scipy
    import sklearn
    with open(os.path.join(ROOT, "fixtures", "reference", "importance.json"), "w") as f:
        json.dump({"generator": f"scipy {scipy.__version__} spearmanr, scikit-learn {sklearn.__version__} "
                                f"mutual_info_score", "cases": importance()}, f, separators=(",", ":"))
        f.write("\n")
    out = {"generator": f"pycocotools {getattr(pycocotools, '__version__', '2.0.11')} COCOeval bbox, numpy {np.__version__}",
           "cases": []}
    for name, thr, frames in cases():
        out["cases"].append({"name": name, "score_threshold": thr, "frames": frames,
                             "expected": evaluate(frames, thr)})
    with open(OUT, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    for c in out["cases"]:
        e = c["expected"]
        print(f"{c['name']}: frames {len(c['frames'])} map50 {e['map50']} map50_95 {e['map50_95']} "
              f"tp/fp/fn {e['true_positives']}/{e['false_positives']}/{e['false_negatives']}")


if __name__ == "__main__":
    main()
