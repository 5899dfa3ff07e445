"""Embedder recipes compared on products never trained on (issue 11, part 2), from a feature cache.

Every recipe keeps the trunk of an ImageNet backbone frozen (`KeepImageNetNet`) and trains what
follows it from cached views (`retail_reid.models.research.feature_cache`), so a recipe's four class-disjoint
folds and its all-81 run take minutes on two CPU cores. Per recipe:
- class-disjoint: for each fold of models/research/folds.json, trained on the other folds' SKUs, judged on
  the fold's held-out SKUs (their train photos as the gallery, their val photos as queries: as
  photographed, as a lane camera sees them, with a hand; and the catalog-photo gallery), SKUs by
  centroid, folds pooled by queries: the protocol of bench_class_disjoint.py, the same seeded views;
- the 81: trained on every SKU, val photos against train centroids (the model card's val protocol).
The ImageNet-only backbone (pooled features, no training) is always the first two rows: without
flip averaging (as bench_class_disjoint.py's rows) and with it (as every recipe here is judged).

    python benchmarks/bench_recipes.py --build --data $GROCERY --backbone tf_efficientnet_lite0 \
        --cache runs/cache/lite0-224
    python benchmarks/bench_recipes.py --cache runs/cache/lite0-224 --json runs/recipes-lite0.json [--recipe base ...]

Recipes differ from `base` in one thing each (RECIPES below; `--recipe` runs some, then others
combine the best settings); the choice rule is fixed in advance:
the highest class-disjoint Recall@1 averaged over the three query views (photos, lane camera,
lane camera + hand), as long as the 81's val Recall@1 is not lower than the base recipe's by more
than 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from retail_reid.models.research.disjoint import Query, fold_report, pool
from retail_reid.models.research.feature_cache import FeatureCache, build_cache
from retail_reid.models.research.folds import FOLDS_FILE, read_folds
from retail_reid.models.research.tail_train import Recipe, embed_eval, train_on_cache

BASE = Recipe()
RECIPES: dict[str, Recipe] = {
    "base": BASE,  # a linear projection of the frozen pooled features, ImageNet share 0.5, multi-similarity, 128-d
    "imagenet-0": replace(BASE, imagenet_weight=0.0),  # the trained projection alone
    "imagenet-0.3": replace(BASE, imagenet_weight=0.3),
    "imagenet-0.7": replace(BASE, imagenet_weight=0.7),
    "mlp-1024": replace(BASE, head_hidden=1024),  # one hidden layer in the projection
    "dim-256": replace(BASE, dim=256),
    "dim-512": replace(BASE, dim=512),
    "epochs-10": replace(BASE, epochs=10),
    "epochs-40": replace(BASE, epochs=40),
    "lr-head-5e-4": replace(BASE, lr_head=5e-4),
    "lr-head-1e-2": replace(BASE, lr_head=1e-2),
    "triplet-semihard": replace(BASE, loss="triplet", miner="semihard"),
    "triplet-hard": replace(BASE, loss="triplet", miner="hard"),
    "triplet-all": replace(BASE, loss="triplet", miner="all"),
    "arcface": replace(BASE, loss="arcface"),
    "tail-1": replace(BASE, tail_stages=1),  # the last stage trained too (about 15x the training time)
}
VIEWS = (Query.PHOTO, Query.LANE, Query.HAND)


def recipe_rows(cache: FeatureCache, recipe: Recipe | None, folds_file: str, log: bool, flip: bool = True) -> dict:
    """One recipe (None: the ImageNet-only features) over every fold, pooled, and on the 81; the
    views flip-averaged unless `flip` is False."""
    folds = read_folds(folds_file)
    per_fold, seconds = [], 0.0
    for k in range(len(folds.folds)):
        if recipe is None:
            emb = embed_eval(cache, None, flip=flip)
        else:
            net, summary = train_on_cache(cache, recipe, folds.trained(k), log)
            emb, seconds = embed_eval(cache, net), seconds + summary["seconds"]
        per_fold.append(fold_report(emb, folds.held_out(k)))
    skus = set(cache.train_labels)
    if recipe is None:
        emb = embed_eval(cache, None, flip=flip)
    else:
        net, summary = train_on_cache(cache, recipe, skus, log)
        emb, seconds = embed_eval(cache, net), seconds + summary["seconds"]
    return {
        "recipe": recipe.to_dict() if recipe else None,
        "folds": per_fold,
        "pooled": pool(per_fold),
        "all_81": fold_report(emb, skus),
        "train_seconds": round(seconds, 1),
    }


def custom_recipe(spec: str) -> Recipe:
    """NAME:FIELD=VALUE,...: the base recipe with those fields changed (values of the fields' types)."""
    _, _, changes = spec.partition(":")
    fields = BASE.to_dict()
    out = {}
    for change in filter(None, changes.split(",")):
        key, _, value = change.partition("=")
        if key not in fields:
            raise ValueError(f"no recipe field {key!r} (fields: {', '.join(fields)})")
        out[key] = type(fields[key])(value)
    return replace(BASE, **out)


def disjoint_score(row: dict) -> float:
    """The choice rule's figure: class-disjoint Recall@1 averaged over the three query views."""
    return float(np.mean([row["pooled"][str(v)]["recall_at_1"] for v in VIEWS]))


def line(name: str, row: dict) -> str:
    p, v = row["pooled"], row["all_81"]
    cells = [p[str(Query.PHOTO)][m] for m in ("recall_at_1", "map_at_r", "tar_at_far_0.01")]
    cells += [p[str(q)]["recall_at_1"] for q in (Query.LANE, Query.HAND, Query.ICONIC) if str(q) in p]
    cells += [disjoint_score(row), v[str(Query.PHOTO)]["recall_at_1"], v[str(Query.PHOTO)]["tar_at_far_0.01"]]
    return f"{name:18s}" + "".join(f"{c:7.3f}" for c in cells) + f"{row['train_seconds']:8.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True, help="feature cache folder (made with --build)")
    ap.add_argument("--build", action="store_true", help="compute the cache first (needs --data)")
    ap.add_argument("--data", default=os.environ.get("GROCERY"), help="the grocery data (default: $GROCERY)")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0", help="with --build: the timm backbone")
    ap.add_argument("--size", type=int, default=224, help="with --build: input size in pixels")
    ap.add_argument("--views", type=int, default=8, help="with --build: augmented views per training photo")
    ap.add_argument("--folds", default=str(FOLDS_FILE), help="folds file (default: models/research/folds.json)")
    ap.add_argument("--recipe", action="append", choices=sorted(RECIPES), help="recipes to run (default: all)")
    ap.add_argument(
        "--custom",
        action="append",
        default=[],
        metavar="NAME:FIELD=VALUE,...",
        help="a recipe of its own: base with these fields changed, e.g. best:head_hidden=1024,imagenet_weight=0.3",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", help="write every figure here (rows already there are kept)")
    ap.add_argument("--log", action="store_true", help="print each epoch's loss")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.build:
        if not a.data:
            ap.error("--build needs --data or $GROCERY")
        build_cache(a.data, a.cache, a.backbone, a.size, a.views, threads=a.threads)
    cache = FeatureCache.open(a.cache)
    results = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    print(f"{cache.meta['backbone']} at {cache.meta['size']} px; class-disjoint (folds pooled) | the 81 (val)")
    print(
        f"{'recipe':18s}{'R@1':>7s}{'MAP@R':>7s}{'TAR1%':>7s}{'lane':>7s}{'hand':>7s}{'iconic':>7s}{'mean3':>7s}"
        f"{'R@1':>7s}{'TAR1%':>7s}{'train s':>8s}"
    )
    recipes: dict[str, Recipe | None] = {"imagenet-only": None, "imagenet-only-flip": None}
    recipes |= {name: RECIPES[name] for name in a.recipe or ([] if a.custom else RECIPES)}
    for spec in a.custom:
        try:
            recipes[spec.split(":", 1)[0]] = custom_recipe(spec)
        except ValueError as e:
            ap.error(f"--custom {spec}: {e}")
    for name, recipe in recipes.items():
        row = recipe_rows(cache, recipe, a.folds, a.log, flip=name != "imagenet-only")
        results[name] = row
        print(line(name, row), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
