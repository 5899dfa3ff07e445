"""How an embedder's recognition holds up when a product is seen the way a lane camera sees it:
grocery val photos, scored against centroids of the train photos (as galleries score SKUs),
first as photographed, then shrunk to a lane camera's size and degraded one way at a time, and
finally drawn by `reid simulate` (rounded, tilted, on the belt, held by a hand, smeared by motion).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_lane_views.py [--data DATASET]
        (DATASET: the Grocery Store Dataset, see README.md "Data"; default $GROCERY)
        [--model M ...] [--side 144]

Prints per model and view: Recall@1 of the SKU, and the median similarity of a photo to its own
SKU's centroid. Every degradation is seeded, so runs are comparable between models.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from retail_reid.images import read_image
from retail_reid.models.datasets import split_file_set
from retail_reid.models.metrics import sku_scores
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.pipeline.harness.bench_lanes import add_data_argument
from retail_reid.pipeline.harness.simulate import _Look  # the simulator's own drawing of an item

BELT_GREY = 60


def shrink(img: np.ndarray, side: int) -> np.ndarray:
    s = side / max(img.shape[:2])
    return cv2.resize(
        img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA
    )


def held(photo: Path, seed: int, side: int, blur_px: float) -> np.ndarray:
    """The item as the simulator draws it, held by a hand, on a plain belt."""
    still, smeared, _, _ = _Look(photo, seed, side, "behind", blur_px).sprites()
    sprite = smeared if blur_px else still
    return np.clip(BELT_GREY * (1 - sprite[..., 3:]) + sprite[..., :3], 0, 255).astype(np.uint8)


def views(side: int) -> dict[str, Callable[[np.ndarray, Path, int], np.ndarray]]:
    rng = np.random.default_rng(0)

    def noisy(img: np.ndarray) -> np.ndarray:
        return np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)

    def jpeg(img: np.ndarray) -> np.ndarray:
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)

    return {
        "photo as taken": lambda img, p, i: img,
        f"shrunk to {side} px": lambda img, p, i: shrink(img, side),
        "+ sensor noise (sd 3)": lambda img, p, i: noisy(shrink(img, side)),
        "+ motion blur (5 px)": lambda img, p, i: cv2.blur(shrink(img, side), (5, 1)),
        "+ JPEG quality 40": lambda img, p, i: jpeg(shrink(img, side)),
        "simulated item, hand": lambda img, p, i: held(p, i, side, 0.0),
        "simulated item, hand, blur 5": lambda img, p, i: held(p, i, side, 5.0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(ap)
    ap.add_argument("--model", action="append", help="ONNX embedder; repeat to compare (default: the shipped model)")
    ap.add_argument("--side", type=int, default=144, help="the item's longer side on a lane camera, pixels")
    a = ap.parse_args()
    data = Path(a.data)
    train, val = split_file_set(data / "train.txt", data), split_file_set(data / "val.txt", data)
    photos = [read_image(p) for p in val.paths]
    truth = np.array(val.labels)
    for model in a.model or [None]:
        emb = OnnxEmbedder(model)
        refs, good, _ = emb.embed_files(list(train.paths))
        labels = np.array([train.labels[i] for i in good])
        skus = np.unique(labels)
        own = np.searchsorted(skus, truth)
        print(f"\n{emb.path} ({emb.fingerprint[:12]}): {len(photos)} val photos, {len(skus)} SKUs")
        print(f"{'view':32s} Recall@1  own-SKU similarity (median)")
        for name, make in views(a.side).items():
            queries = emb.embed([make(img, p, i) for i, (img, p) in enumerate(zip(photos, val.paths, strict=True))])
            _, sims = sku_scores(refs, labels, queries, "centroid")
            top1 = float(np.mean(sims.argmax(1) == own))
            print(f"{name:32s} {top1:8.3f}  {np.median(sims[np.arange(len(own)), own]):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
