#!/usr/bin/env python3
"""Writes the example data behind the README's quick start (committed; rerun only to change it).

examples/train/  144 frames (256x192 JPEG crops of the sample photos in fixtures/images) + train.jsonl predictions
examples/night/  120 frames of the same scenes after "nightfall": darker (x0.45), softer (Gaussian sigma 1.5 px)
                 and noisier, with the model less sure of itself and seeing fewer cars + night.jsonl
The baseline examples/baseline.json is then built by framewatch itself (see README).
"""
import json
import os

import cv2
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PHOTOS = sorted(f for f in os.listdir(os.path.join(ROOT, "fixtures", "images")) if f.endswith(".jpg"))
CLASSES = ["car", "person", "bicycle"]


def crops(rng, count):
    out = []
    for i in range(count):
        name = PHOTOS[i % len(PHOTOS)]
        img = cv2.imread(os.path.join(ROOT, "fixtures", "images", name), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        s = rng.uniform(0.55, 1.0)
        cw, ch = int(min(w, h * 4 / 3) * s), int(min(w, h * 4 / 3) * s * 3 / 4)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        out.append(cv2.resize(img[y:y + ch, x:x + cw], (256, 192), interpolation=cv2.INTER_AREA))
    return out


def detections(rng, night):
    dets = []
    for _ in range(rng.integers(0, 5)):
        x0, y0 = rng.uniform(0, 0.8, 2)
        bw, bh = rng.uniform(0.05, 0.2, 2)
        p = rng.dirichlet([1.0, 1.0, 1.0] if not night else [0.4, 2.0, 1.0])
        cls = int(rng.choice(3, p=[0.6, 0.3, 0.1] if not night else [0.3, 0.5, 0.2]))
        conf = float(rng.beta(9, 2) if not night else rng.beta(4, 3))
        probs = np.full(3, (1 - conf) / 2)
        probs[cls] = conf
        dets.append({"x_min": round(float(x0), 4), "y_min": round(float(y0), 4),
                     "x_max": round(float(min(x0 + bw, 1.0)), 4), "y_max": round(float(min(y0 + bh, 1.0)), 4),
                     "class": CLASSES[cls], "confidence": round(conf, 4),
                     "class_probabilities": [round(float(v), 4) for v in probs]})
    return dets


def write(folder, frames, rng, night):
    d = os.path.join(ROOT, "examples", folder)
    os.makedirs(d, exist_ok=True)
    lines = []
    for i, img in enumerate(frames):
        if night:
            img = cv2.GaussianBlur(img, (0, 0), 1.5)
            img = np.clip(img.astype(np.float64) * 0.45 + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        name = f"frame_{i:03d}.jpg"
        cv2.imwrite(os.path.join(d, name), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        lines.append(json.dumps({"path": name, "detections": detections(rng, night)}))
    with open(os.path.join(ROOT, "examples", f"{folder}.jsonl"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main():
    rng = np.random.default_rng(42)
    write("train", crops(rng, 144), rng, night=False)
    write("night", crops(rng, 120), rng, night=True)


if __name__ == "__main__":
    main()
