"""Upper stages taught the lane camera, against the lane benchmark's views (issue 22, item 2).

Builds (or reuses) the tail cache (`retail_reid.models.lane_tail.build_tail_cache`), trains the
student with checkpoints after every epoch (a stopped run resumes), and prints Recall@1 of the val
photos' SKUs as `bench_lane_camera.py` does: the same seeded views (the photo as taken, 6 views per
lane level, single and pass-averaged), the train photos as taken as the gallery, SKUs by centroid.
Rows: the ImageNet-only backbone at the student's size (its pooled features, no training), the
teacher (optional: it embeds every val view, a few minutes), and the student.

    OMP_NUM_THREADS=2 python benchmarks/bench_lane_tail.py --root $GROCERY --cache runs/tail-cache \
        --run runs/lane-tail [--epochs 30] [--distill 3] [--teacher-row]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retail_reid.images import read_image
from retail_reid.models.backbone import create_backbone
from retail_reid.models.datasets import GroceryData
from retail_reid.models.lane_tail import (
    PER_PHOTO,
    TailCache,
    TailCacheSpec,
    TailRecipe,
    build_tail_cache,
    export_tail,
    tail_embeddings,
    train_tail,
)
from retail_reid.models.lane_training import RECALL_COLUMNS, lane_recall, val_views
from retail_reid.models.net import Tail
from retail_reid.models.runtime import OnnxEmbedder


@torch.no_grad()
def imagenet_rows(cache: TailCache) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet backbone's pooled features of the gallery photos and the val views, normalised."""
    net = create_backbone(cache.meta["backbone"])
    net.reset_classifier(0)
    tail = Tail(net, cache.meta["tail_stages"]).eval()

    def pooled(maps: np.ndarray) -> np.ndarray:
        out = [
            F.normalize(tail(torch.from_numpy(maps[i : i + 256]).float()).flatten(1), dim=1).numpy()
            for i in range(0, len(maps), 256)
        ]
        return np.concatenate(out)

    gallery = cache.maps("train")[np.arange(cache.meta["n_gallery"]) * PER_PHOTO]
    return pooled(gallery), pooled(cache.maps("val"))


def teacher_val(cache: TailCache, root: str) -> np.ndarray:
    """The teacher's embeddings of the very same val views (rendered again from the same seeds)."""
    embedder = OnnxEmbedder(cache.meta["teacher"]["path"])
    data = GroceryData.load(root)
    views = (v for i, p in enumerate(data.val.paths) for v in val_views(read_image(p), i, cache.meta["seed"]))
    return embedder.embed(views)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="the grocery data (train.txt, val.txt, classes.csv)")
    ap.add_argument("--cache", required=True, help="tail cache folder (built if missing)")
    ap.add_argument("--run", required=True, help="folder for the checkpoint and the figures")
    ap.add_argument("--teacher", help="teacher ONNX model (default: the shipped one)")
    ap.add_argument("--teacher-row", action="store_true", help="also score the teacher on the same views")
    ap.add_argument("--tail-stages", type=int, default=TailCacheSpec.tail_stages, help="stages trained (cache)")
    ap.add_argument("--size", type=int, default=TailCacheSpec.size, help="input size in pixels (cache)")
    ap.add_argument("--export", help="write the student here as a calibrated ONNX embedder")
    for f in fields(TailRecipe):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = TailCacheSpec(tail_stages=args.tail_stages, size=args.size)
    cache = build_tail_cache(args.root, args.cache, args.teacher, spec)
    if (cache.meta["tail_stages"], cache.meta["size"]) != (spec.tail_stages, spec.size):
        ap.error(f"{args.cache} holds the maps for {cache.meta['tail_stages']} stages at {cache.meta['size']} px")
    recipe = TailRecipe(**{f.name: getattr(args, f.name) for f in fields(TailRecipe)})
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    net, summary = train_tail(cache, recipe, checkpoint=run / "checkpoint.pt", log=True)
    gallery_labels = cache.train_labels[: cache.meta["n_gallery"]]
    val_labels = np.asarray(cache.meta["val_labels"])
    rows: dict[str, dict[str, float]] = {}
    g, v = imagenet_rows(cache)
    rows["ImageNet-only (pooled, no flip)"] = lane_recall(g, gallery_labels, v, val_labels)
    if args.teacher_row:
        rows["teacher (shipped)"] = lane_recall(
            cache.teacher[: cache.meta["n_gallery"]], gallery_labels, teacher_val(cache, args.root), val_labels
        )
    gallery = tail_embeddings(cache, net, "train", np.arange(cache.meta["n_gallery"]) * PER_PHOTO)
    rows["lane tail (student)"] = lane_recall(gallery, gallery_labels, tail_embeddings(cache, net, "val"), val_labels)
    print("| row | " + " | ".join(RECALL_COLUMNS) + " |")
    print("|---|" + "---|" * len(RECALL_COLUMNS))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in RECALL_COLUMNS) + " |")
    result = {"recipe": asdict(recipe), "training": summary, "cache": cache.meta | {"train_labels": None}, "rows": rows}
    (run / "figures.json").write_text(json.dumps(result, indent=1))
    torch.save(net.state_dict(), run / "student.pt")
    if args.export:
        print(f"{export_tail(cache, net, args.export, recipe)}: the student, calibrated on the cached val views")


if __name__ == "__main__":
    main()
