"""Loss comparison under one fixed budget, as "A Metric Learning Reality Check" asks: the same
backbone, resolution, epochs, batches, augmentation and seed for every loss; only the loss changes.
Reports val MAP@R (within val) and the gallery(train)->query(val) Recall@1 and TAR@FAR=1%.

    python benchmarks/compare_losses.py --root $GROCERY --out runs/losses
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from retail_reid.models.data import LabelledImages
from retail_reid.models.datasets import split_file_set
from retail_reid.models.metrics import gallery_query, reality_check, verification, verification_scores
from retail_reid.models.train import TrainConfig, embed_dataset, load_checkpoint, train

LOSSES = (("triplet", "semihard"), ("contrastive", None), ("multi-similarity", None), ("arcface", None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="grocery dataset root (train.txt, val.txt)")
    ap.add_argument("--out", default="runs/losses")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--freeze-blocks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--losses", nargs="*", default=[name for name, _ in LOSSES])
    a = ap.parse_args()

    root = Path(a.root)
    train_set, val_set = split_file_set(root / "train.txt", root), split_file_set(root / "val.txt", root)
    results = {}
    for name, miner in LOSSES:
        if name not in a.losses:
            continue
        cfg = TrainConfig(
            out=str(Path(a.out) / name),
            size=a.size,
            epochs=a.epochs,
            loss=name,
            miner=miner or "semihard",
            freeze_blocks=a.freeze_blocks,
            threads=a.threads,
            seed=0,
        )
        best = train(cfg, train_set, val_set, progress=False)
        net, pre, state = load_checkpoint(best)
        index = {s: i for i, s in enumerate(state["skus"])}
        g = LabelledImages(train_set, index, pre, train=False, progress=False)
        q = LabelledImages(val_set, index, pre, train=False, progress=False)
        ge, qe = embed_dataset(net, g, torch.device("cpu")), embed_dataset(net, q, torch.device("cpu"))
        v = verification(*verification_scores(ge, g.labels, qe, q.labels), fars=(1e-2,))
        results[name] = {
            "val_map_at_r": reality_check(qe, q.labels)["map_at_r"],
            "recall_at_1": gallery_query(ge, g.labels, qe, q.labels)["recall_at_1"],
            "tar_at_far_0.01": v["tar_at_far_0.01"],
            "best_epoch": state["epoch"],
        }
        print(name, json.dumps(results[name]), flush=True)
    print(f"\nbudget: {a.epochs} epochs, {a.size}px, first {a.freeze_blocks} blocks frozen, P16 x K4, seed 0")
    print(f"{'loss':<18}{'val MAP@R':>10}{'R@1':>8}{'TAR@1%':>8}")
    for name, r in results.items():
        print(f"{name:<18}{r['val_map_at_r']:>10.3f}{r['recall_at_1']:>8.3f}{r['tar_at_far_0.01']:>8.3f}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
