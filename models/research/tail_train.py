"""Training what follows a frozen ImageNet trunk (`KeepImageNetNet`) from a feature cache, and
judging it on the class-disjoint protocol (issue 11) with the same views an ONNX model is shown.

Each epoch draws one cached augmented view of every training photo, in batches of P SKUs x K
photos, under a pytorch-metric-learning objective; AdamW with warm-up and cosine decay; a fixed
number of epochs (no keep-best on val: recipes are chosen on the class-disjoint folds)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.samplers import MPerClassSampler

from retail_reid.models.backbone import create_backbone
from retail_reid.models.evaluate import Embedded
from retail_reid.models.losses import build_objective
from retail_reid.models.net import KEEP_IMAGENET, KeepImageNetNet
from retail_reid.models.research.disjoint import Embeddings, Query
from retail_reid.models.research.feature_cache import FeatureCache
from retail_reid.models.train import lr_lambda, seed_everything


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What a KeepImageNetNet is trained with; every field has the base recipe's value by default."""

    dim: int = 128
    tail_stages: int = 0  # stages after the frozen trunk that are trained (0: the projection only)
    imagenet_weight: float = 0.5  # share of the ImageNet cosine in the embedding's cosine
    head_hidden: int = 0  # units of the projection's hidden layer (0: a linear projection)
    loss: str = "multi-similarity"
    miner: str = "semihard"  # triplet only
    margin: float = 0.2  # triplet only
    epochs: int = 20
    lr_tail: float = 5e-4
    lr_head: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    skus_per_batch: int = 16
    per_sku: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def new_net(cache: FeatureCache, recipe: Recipe) -> KeepImageNetNet:
    return KeepImageNetNet(
        create_backbone(cache.meta["backbone"]),
        recipe.dim,
        recipe.tail_stages,
        recipe.imagenet_weight,
        recipe.head_hidden,
    )


def _rows(
    cache: FeatureCache, part: str, rows: np.ndarray, tail_stages: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The cached trunk outputs (None for a projection-only net) and pooled features of `rows`."""
    pooled = torch.from_numpy(np.asarray(cache.array(part, "pooled")[rows]))
    if not tail_stages:
        return None, pooled
    return torch.from_numpy(cache.array(part, f"tap{tail_stages}")[rows].astype(np.float32)), pooled


def train_on_cache(
    cache: FeatureCache, recipe: Recipe, skus: Iterable[str], log: bool = False
) -> tuple[KeepImageNetNet, dict]:
    """Train on the cached views of the photos of `skus`; returns the network and a summary."""
    seed_everything(recipe.seed)
    keep = sorted(set(skus))
    if len(keep) < recipe.skus_per_batch:
        raise ValueError(
            f"{len(keep)} SKUs to train on, fewer than the {recipe.skus_per_batch} SKUs a batch holds: "
            "lower --skus-per-batch"
        )
    labels = cache.train_labels
    photos = np.flatnonzero(np.isin(labels, keep))
    y = np.searchsorted(keep, labels[photos])
    views = cache.meta["views"]
    net = new_net(cache, recipe)
    pooled = cache.array("train", "pooled")[(photos[:, None] * views + np.arange(views)).ravel()]
    net.feature_mean.copy_(torch.from_numpy(pooled.mean(0)))
    objective = build_objective(recipe.loss, net.out_dim, len(keep), recipe.miner, recipe.margin)
    batch = recipe.skus_per_batch * recipe.per_sku
    steps = max(1, len(photos) // batch)
    tail_params = list(net.tail.parameters()) if net.tail is not None else []
    opt = torch.optim.AdamW(
        [
            {"params": tail_params, "lr": recipe.lr_tail},
            {"params": list(net.head.parameters()) + list(objective.loss.parameters()), "lr": recipe.lr_head},
        ],
        weight_decay=recipe.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(round(recipe.warmup_epochs * steps), recipe.epochs * steps)
    )
    sampler = MPerClassSampler(y, m=recipe.per_sku, batch_size=batch, length_before_new_iter=steps * batch)
    rng = np.random.RandomState(recipe.seed)
    t0 = time.time()
    for epoch in range(recipe.epochs):
        net.train()
        order = np.fromiter(iter(sampler), np.int64)
        total = 0.0
        for s in range(steps):
            b = order[s * batch : (s + 1) * batch]
            z, pooled = _rows(cache, "train", photos[b] * views + rng.randint(views, size=len(b)), recipe.tail_stages)
            loss = objective(net.from_trunk(z, pooled), torch.from_numpy(y[b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if log:
            print(
                f"  epoch {epoch + 1}/{recipe.epochs} loss {total / steps:.4f} ({time.time() - t0:.0f} s)", flush=True
            )
    return net.eval(), {"seconds": round(time.time() - t0, 1), "skus": len(keep), "photos": len(photos)}


@torch.no_grad()
def embed_eval(cache: FeatureCache, net: KeepImageNetNet | None, batch: int = 256, flip: bool = True) -> Embeddings:
    """The evaluation views embedded by `net` (None: the ImageNet-only features, L2-normalised), with
    flip averaging unless `flip` is False."""
    tail = net.tail_stages if net is not None else 0
    out: dict[str, Embedded] = {}
    for name in cache.meta["eval"]:
        first, labels = cache.eval_rows(name)
        embs = []
        for i in range(0, len(first), batch):
            rows = first[i : i + batch]
            both = np.concatenate([rows, rows + 1]) if flip else rows
            z, pooled = _rows(cache, "eval", both, tail)
            e = F.normalize(pooled, dim=1) if net is None else net.from_trunk(z, pooled)
            embs.append(F.normalize(e[: len(rows)] + e[len(rows) :], dim=1) if flip else e)
        out[name] = Embedded(torch.cat(embs).numpy(), labels, [])
    return Embeddings(
        gallery=out["gallery"],
        iconic=out.get("iconic"),
        queries={q: out[str(q)] for q in (Query.PHOTO, Query.LANE, Query.HAND)},
    )


def save_checkpoint(net: KeepImageNetNet, recipe: Recipe, cache: FeatureCache, skus: Iterable[str], out: Path) -> Path:
    """OUT/best.pt in the layout `reid export` reads (`retail_reid.models.train.load_checkpoint`)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "arch": KEEP_IMAGENET,
        "model": net.state_dict(),
        "config": {"backbone": cache.meta["backbone"], "loss": recipe.loss, "dim": recipe.dim},
        "recipe": recipe.to_dict(),
        "skus": sorted(set(skus)),
        "preprocess": cache.meta["preprocess"],
        "val": {},
        "cache": {k: cache.meta[k] for k in ("backbone", "size", "views", "seed", "view_seed")},
    }
    torch.save(state, out / "best.pt")
    return out / "best.pt"
