"""Class-disjoint evaluation (issue 11): how an embedder places products it never trained on.

The 81 SKUs of the grocery data are split into folds (models/research/folds.json, whole coarse kinds per
fold; retail_reid.models.research.folds). For each fold, its held-out SKUs alone: their train photos as the
gallery and their val photos as queries, as photographed, as a lane camera sees them, and with a
hand over part of the item then the lane camera (seeded: the same views for every model); and the
catalog photo (iconic) as the gallery. SKUs are scored by centroid. Folds are pooled.

    REID_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_class_disjoint.py \\
        --data $GROCERY --model runs/disjoint/imagenet-lite0-224.onnx --model models/default/embedder.onnx

--model M: one ONNX model on every fold (an ImageNet-only backbone, or a model trained on all 81,
           which is then not class-disjoint); also reports all 81 SKUs at once (val against train).
--fold-run DIR: a recipe trained per fold (`reid train --fold K --out DIR/foldK`, which writes
           DIR/foldK/embedder.onnx; or any model exported there, e.g. an interpolated one): each
           fold's model judged on that fold's held-out SKUs, the folds pooled.
--only-fold K: judge and pool only fold K (repeat), every row alike: a recipe trained on some folds so far.
--speed: also the embedding speed per crop of each --model on the ONNX runtime (bench_embedder's
           256 crops, batch 32, threads from $REID_THREADS), the models timed in turn;
           --speed-only: that alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench_embedder import real_crops, timed

from retail_reid.models.datasets import GroceryData
from retail_reid.models.research.disjoint import Query, embed_data, fold_report, pool
from retail_reid.models.research.folds import FOLDS_FILE, read_folds
from retail_reid.models.runtime import OnnxEmbedder

COLUMNS = [(str(q), m) for q in Query for m in ("recall_at_1", "map_at_r", "tar_at_far_0.01")]


def chosen_folds(folds_file: str, only: list[int]) -> list[int]:
    """The folds judged: all of them, or `only` (a recipe trained on some folds so far)."""
    n = len(read_folds(folds_file).folds)
    bad = [k for k in only if not 0 <= k < n]
    if bad:
        raise SystemExit(f"{folds_file}: no fold {bad[0]} (folds 0-{n - 1})")
    return sorted(set(only)) if only else list(range(n))


def model_rows(model: str, data: GroceryData, folds_file: str, seed: int, judged: list[int]) -> dict:
    """One model on the judged folds (embedded once), those folds pooled, and all SKUs together."""
    folds = read_folds(folds_file)
    e = embed_data(OnnxEmbedder(model), data, seed=seed, progress=True)
    per_fold = [fold_report(e, folds.held_out(k)) for k in judged]
    return {"folds": per_fold, "pooled": pool(per_fold), "all_skus": fold_report(e, set(data.train.labels))}


def speeds(models: list[str], repeats: int = 3) -> dict[str, dict[str, float]]:
    """Crops per second of each model on bench_embedder's 256 real crops, batch 32, the best of
    `repeats` rounds, the models timed in turn so a change in the machine's load falls on all alike."""
    crops = real_crops(256)
    embedders = {m: OnnxEmbedder(m, batch_size=32) for m in models}
    best = dict.fromkeys(models, 0.0)
    for _ in range(repeats):
        for m, emb in embedders.items():
            best[m] = max(best[m], timed(emb.embed, crops, 1))
    return {m: {"crops_per_second": r, "input_px": embedders[m].preprocess.size} for m, r in best.items()}


def run_rows(run: Path, data: GroceryData, folds_file: str, seed: int, judged: list[int]) -> dict:
    """A recipe trained per fold: RUN/foldK/embedder.onnx judged on fold K's SKUs, the folds pooled."""
    folds = read_folds(folds_file)
    models = {k: run / f"fold{k}" / "embedder.onnx" for k in judged}
    missing = [str(m) for m in models.values() if not m.is_file()]
    if missing:
        raise SystemExit(f"{run}: no {', '.join(missing)} (reid train --fold K --out {run}/foldK makes them)")
    per_fold = []
    for k, model in models.items():
        held_out = folds.held_out(k)
        per_fold.append(fold_report(embed_data(OnnxEmbedder(model), data, held_out, seed, progress=True), held_out))
    return {"folds": per_fold, "pooled": pool(per_fold)}


def fmt(row: dict[str, dict[str, float]]) -> str:
    return "".join(f"{row[q][m]:7.3f}" if q in row else "      -" for q, m in COLUMNS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("GROCERY"), help="the grocery data (default: $GROCERY)")
    ap.add_argument("--folds", default=str(FOLDS_FILE), help="folds file (default: models/research/folds.json)")
    ap.add_argument("--model", action="append", default=[], help="ONNX model evaluated on every fold; repeat")
    ap.add_argument("--fold-run", action="append", default=[], help="run folder with fold*/class_disjoint.json")
    ap.add_argument(
        "--only-fold",
        type=int,
        action="append",
        default=[],
        metavar="K",
        help="judge and pool only fold K (repeat; default: every fold): a recipe trained on some folds so far",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the lane-camera and hand views")
    ap.add_argument("--speed", action="store_true", help="also time each --model on 256 crops, in turn")
    ap.add_argument("--speed-only", action="store_true", help="only time the --models (no dataset needed)")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()
    if not a.model and not a.fold_run:
        ap.error("give --model and/or --fold-run")
    if not a.data and not a.speed_only:
        ap.error("give --data or set $GROCERY")
    if a.speed_only:
        for m, r in speeds(a.model).items():
            print(f"{m}: {r['crops_per_second']:.1f} crops/s at {r['input_px']} px")
        return 0
    data = GroceryData.load(a.data)
    judged = chosen_folds(a.folds, a.only_fold)
    results = {m: model_rows(m, data, a.folds, a.seed, judged) for m in a.model}
    results |= {r: run_rows(Path(r), data, a.folds, a.seed, judged) for r in a.fold_run}
    if a.speed:
        for m, r in speeds(a.model).items():
            results[m] |= r
    kinds = "".join(f"{q:>21s}" for q in Query)
    pooled = "folds pooled" if len(judged) == len(read_folds(a.folds).folds) else f"folds {judged} only"
    print(f"\nheld-out SKUs, {pooled}, centroid scoring\n{'':44s}{kinds}")
    print(f"{'':44s}{'   R@1  MAP@R TAR@1%' * len(Query)}")
    for name, r in results.items():
        print(f"{name[-44:]:44s}{fmt(r['pooled'])}")
        folds_r1 = ", ".join(f"{f[str(Query.PHOTO)]['recall_at_1']:.3f}" for f in r["folds"])
        print(f"{'':44s} photo Recall@1 per fold: {folds_r1}")
        if "all_skus" in r:
            print(f"{'  all SKUs at once (not class-disjoint)':44s}{fmt(r['all_skus'])}")
        if "crops_per_second" in r:
            print(f"{'':44s} {r['crops_per_second']:.1f} crops/s at {r['input_px']} px")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
