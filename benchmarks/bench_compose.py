"""The ImageNet share of a composed embedder (`reid compose`), swept on the grocery data's val photos.

Each model is embedded once (the views of bench_class_disjoint.py: val photos as photographed, as a
lane camera sees them, with a hand; train photos and catalog photos as galleries); the composition
[sqrt(1 - w) x trained, sqrt(w) x centred ImageNet] is then formed for each w in numpy, which is
what `reid compose`'s graph computes (tests/test_compose.py holds the graph to it).

    python benchmarks/bench_compose.py --data $GROCERY --trained fine-tuned.onnx \\
        --imagenet runs/compose/imagenet-lite0-288.onnx --weights 0 0.2 0.3 0.4 0.5 1 [--pca 0 128 256]

Prints per ImageNet dimensions kept (--pca) and w, all 81 SKUs at once (val against train centroids,
the model card's val protocol): Recall@1 and TAR at FAR 1 % on the photos, Recall@1 on the
lane-camera views, with the hand, and against the catalog photos; and Recall@1 on the photos per
class-disjoint fold (pooled), which is NOT class-disjoint when the trained model saw every SKU: it
says how much a fold's look-alikes confuse the model, not how it places unseen products.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

from retail_reid.models.compose import principal_basis
from retail_reid.models.datasets import GroceryData
from retail_reid.models.evaluate import Embedded
from retail_reid.models.research.disjoint import Embeddings, Query, embed_data, fold_report, pool
from retail_reid.models.research.folds import FOLDS_FILE, read_folds
from retail_reid.models.runtime import OnnxEmbedder


def composed(trained: Embedded, imagenet: Embedded, mean: np.ndarray, basis: np.ndarray | None, w: float) -> Embedded:
    general = imagenet.emb - mean
    if basis is not None:
        general = general @ basis
    general /= np.linalg.norm(general, axis=1, keepdims=True)
    return Embedded(np.concatenate([np.sqrt(1 - w) * trained.emb, np.sqrt(w) * general], 1), trained.labels, [])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("GROCERY"), help="the grocery data (default: $GROCERY)")
    ap.add_argument("--trained", required=True, help="fine-tuned ONNX embedder")
    ap.add_argument("--imagenet", required=True, help="ImageNet-only ONNX (reid export --imagenet-only)")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5, 1.0])
    ap.add_argument(
        "--pca",
        type=int,
        nargs="+",
        default=[0],
        metavar="K",
        help="ImageNet dimensions kept: the K leading principal directions over the train photos (0: all)",
    )
    ap.add_argument("--folds", default=str(FOLDS_FILE))
    a = ap.parse_args()
    if not a.data:
        ap.error("give --data or set $GROCERY")
    data = GroceryData.load(a.data)
    t = embed_data(OnnxEmbedder(a.trained), data, progress=True)
    i = embed_data(OnnxEmbedder(a.imagenet), data, progress=True)
    folds = read_folds(a.folds)
    skus = set(data.train.labels)
    print(f"{'pca':>5s}{'w':>5s}{'R@1':>7s}{'TAR1%':>7s}{'lane':>7s}{'hand':>7s}{'iconic':>7s}{'folds':>7s}")
    for k, w in itertools.product(a.pca, a.weights):
        # centred (and projected) as `reid compose --gallery train [--pca K]` does
        mean, basis = principal_basis(i.gallery.emb, k) if k else (i.gallery.emb.mean(0), None)
        e = Embeddings(
            gallery=composed(t.gallery, i.gallery, mean, basis, w),
            iconic=composed(t.iconic, i.iconic, mean, basis, w) if t.iconic and i.iconic else None,
            queries={q: composed(t.queries[q], i.queries[q], mean, basis, w) for q in t.queries},
        )
        r = fold_report(e, skus)
        per_fold = pool([fold_report(e, folds.held_out(k)) for k in range(len(folds.folds))])
        cells = [r[str(Query.PHOTO)]["recall_at_1"], r[str(Query.PHOTO)]["tar_at_far_0.01"]]
        cells += [
            r[str(q)]["recall_at_1"] if str(q) in r else float("nan") for q in (Query.LANE, Query.HAND, Query.ICONIC)
        ]
        cells.append(per_fold[str(Query.PHOTO)]["recall_at_1"])
        print(f"{k or i.gallery.emb.shape[1]:5d}{w:5.2f}" + "".join(f"{c:7.3f}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
