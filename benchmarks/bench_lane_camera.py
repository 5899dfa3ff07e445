"""Recognition through the lane camera (issue 22): val photos rendered by the declared lane cameras
(`retail_reid.models.views.LANE_LEVELS`: mild, middle, hard; seeded), scored from a lane cache
(`retail_reid.models.lane_training`), so every row is measured on the very same views.

    python benchmarks/bench_lane_camera.py --cache runs/lane-cache [--data $GROCERY] \
        [--recipe default] [--recipe "wide:hidden=1024"] [--json runs/lane-bench.json]

Rows: the ImageNet-only backbone inside the teacher (lite0's pooled features at the teacher's size
and flip: the baseline), the teacher (the shipped model), and a lane head trained on the cache per
recipe (`reid train-lane-head` trains the same head from the same cache and seed: its ONNX file
gives these figures to within float rounding). Columns: Recall@1 of the SKU for the photo as taken,
then per level a single crop and a pass (the level's 6 views of one item averaged). Galleries:
- clean: the train photos as taken, SKUs by centroid;
- pooled: the train photos plus, per photo, one middle-level and one hard-level rendering (the
  cache's training views: a gallery that also holds lane-camera renderings of its photos), each SKU
  one centroid of them all;
- apart: the same references, each SKU scored by the better of its photos' centroid and its
  renderings' centroid (how the product's gallery scores a SKU, gallery/matching.py).
`--onnx MODEL` (repeatable) embeds the same seeded views with an ONNX file instead of reading the
cache (the 81 only, clean gallery): an exported head or its int8 file checked end to end.
Class-disjoint (Musgrave's reality check): per fold of models/research/folds.json, the head is trained
on the other folds' SKUs only and judged on the fold's SKUs (their train photos as the gallery,
their val photos as queries), folds pooled. The teacher itself was fine-tuned on all 81 products,
so only the ImageNet row is class-disjoint end to end; the head rows are class-disjoint in what the
head learned.

The choice rule, fixed before any run: the recipe with the highest class-disjoint middle-level
Recall@1 (single crop and pass averaged, rendered gallery pooled) whose clean val Recall@1 is not below the
teacher's by more than 0.005.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from retail_reid.images import read_image
from retail_reid.models.datasets import GroceryData
from retail_reid.models.lane_training import (
    RECALL_COLUMNS,
    TRAIN_LEVELS,
    HeadRecipe,
    LaneCache,
    build_lane_cache,
    head_embeddings,
    imagenet_embeddings,
    lane_recall,
    train_head,
    val_views,
)
from retail_reid.models.research.folds import FOLDS_FILE, read_folds
from retail_reid.models.runtime import OnnxEmbedder


def parse_recipe(text: str) -> tuple[str, HeadRecipe]:
    """ "name:field=value,field=value" (or "default")."""
    name, _, body = text.partition(":")
    kinds = {f.name: f.type for f in fields(HeadRecipe)}
    changes: dict[str, float | int | str] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"--recipe {text!r}: unknown field {key!r} (fields: {', '.join(kinds)})")
        changes[key] = int(value) if kinds[key] == "int" else float(value) if kinds[key] == "float" else value
    return name, replace(HeadRecipe(), **changes)  # type: ignore[arg-type]


Gallery = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # vectors, labels, which rows are renderings


def galleries(cache: LaneCache, emb: np.ndarray, skus: set[str]) -> dict[str, Gallery]:
    """The clean and rendered galleries of `skus` from a train part's embeddings: the rendered one
    scored by one centroid per SKU (pooled) and by the better of two (apart, as the product does)."""
    per = 1 + len(TRAIN_LEVELS)
    labels = cache.gallery_labels
    keep = np.flatnonzero(np.isin(labels, sorted(skus)))
    rows = (keep[:, None] * per + np.arange(per)).ravel()
    kinds = np.tile(np.arange(per) > 0, len(keep))
    return {
        "clean": (emb[keep * per], labels[keep], None),
        "pooled": (emb[rows], np.repeat(labels[keep], per), None),
        "apart": (emb[rows], np.repeat(labels[keep], per), kinds),
    }


def scores(
    cache: LaneCache, train: np.ndarray, val: np.ndarray, skus: set[str], rendered: bool = True
) -> dict[str, dict[str, float]]:
    labels = np.asarray(cache.meta["val_labels"])
    q = np.flatnonzero(np.isin(labels, sorted(skus)))
    rows = val.reshape(len(labels), -1, val.shape[1])[q].reshape(-1, val.shape[1])
    kept = galleries(cache, train, skus) if rendered else {"clean": galleries(cache, train, skus)["clean"]}
    return {name: lane_recall(g, gl, rows, labels[q], kinds) for name, (g, gl, kinds) in kept.items()}


def embed_views(cache: LaneCache, embedder: OnnxEmbedder, data_root: str) -> tuple[np.ndarray, np.ndarray]:
    """The cache's train photos (as taken, in the train part's rows; renderings left out: zero rows) and
    val views, rendered again from the same seed and embedded by `embedder`."""
    per = 1 + len(TRAIN_LEVELS)
    gallery = embedder.embed(read_image(p) for p in cache.meta["train_paths"][: cache.meta["n_gallery"]])
    train = np.zeros((len(cache.train_labels) * per, gallery.shape[1]), np.float32)
    train[: len(gallery) * per : per] = gallery
    val_paths = GroceryData.load(data_root).val.paths
    val = embedder.embed(v for i, p in enumerate(val_paths) for v in val_views(read_image(p), i, cache.meta["seed"]))
    return train, val


def pooled(per_fold: list[tuple[int, dict[str, dict[str, float]]]]) -> dict[str, dict[str, float]]:
    """Fold figures weighted by their query counts."""
    total = sum(n for n, _ in per_fold)
    return {
        g: {k: round(sum(n * f[g][k] for n, f in per_fold) / total, 3) for k in per_fold[0][1][g]}
        for g in per_fold[0][1]
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True, help="lane cache folder")
    ap.add_argument("--data", help="grocery dataset root: build the cache first if it is missing")
    ap.add_argument("--teacher", help="ONNX teacher for a cache built here (default: the shipped model)")
    ap.add_argument("--recipe", action="append", help='"name:field=value,..." (default: the default recipe)')
    ap.add_argument(
        "--onnx", action="append", help="also score this ONNX model on the same views (the 81, clean gallery)"
    )
    ap.add_argument("--folds", default=str(FOLDS_FILE))
    ap.add_argument("--json", help="also write every figure here")
    a = ap.parse_args()
    cache = build_lane_cache(a.data, a.cache, a.teacher) if a.data else LaneCache.open(a.cache)
    if a.onnx and a.data is None and "data_root" not in cache.meta:
        raise SystemExit("--onnx needs --data (the dataset the cache was built from)")
    folds = read_folds(a.folds)
    labels = np.asarray(cache.meta["val_labels"])
    every = set(cache.train_labels)
    results: dict[str, dict] = {}

    def report(name: str, val81: dict, disjoint: dict) -> None:
        results[name] = {"val": val81, "class_disjoint": disjoint}
        for where, figures in (("the 81 (val)", val81), ("class-disjoint", disjoint)):
            for g, f in figures.items():
                cells = " ".join(f"{v:6.3f}" for v in f.values())
                print(f"{name:24s} {where:15s} {g:9s} {cells}", flush=True)

    header = " ".join(f"{k:>6s}" for k in RECALL_COLUMNS)
    print(f"{'row':24s} {'products':15s} {'gallery':9s} {header}")
    fixed = {
        "ImageNet-only (baseline)": (imagenet_embeddings(cache, "train"), imagenet_embeddings(cache, "val")),
        "teacher (shipped)": (head_embeddings(cache, None, "train"), head_embeddings(cache, None, "val")),
    }
    for name, (train, val) in fixed.items():
        disjoint = pooled([(int(np.isin(labels, f).sum()), scores(cache, train, val, set(f))) for f in folds.folds])
        report(name, scores(cache, train, val, every), disjoint)
    for text in a.recipe or ["default"]:
        name, recipe = parse_recipe(text)
        head, _ = train_head(cache, recipe)
        val81 = scores(cache, head_embeddings(cache, head, "train"), head_embeddings(cache, head, "val"), every)
        per_fold = []
        for k, f in enumerate(folds.folds):
            h, _ = train_head(cache, recipe, sorted(folds.trained(k)))
            per_fold.append(
                (
                    int(np.isin(labels, f).sum()),
                    scores(cache, head_embeddings(cache, h, "train"), head_embeddings(cache, h, "val"), set(f)),
                )
            )
        report(f"head {name}", val81, pooled(per_fold))
    for path in a.onnx or []:
        train, val = embed_views(cache, OnnxEmbedder(path), a.data or cache.meta["data_root"])
        report(f"onnx {Path(path).name}", scores(cache, train, val, every, rendered=False), {})
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"cache": str(cache.folder), "teacher": cache.meta["teacher"], "rows": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
