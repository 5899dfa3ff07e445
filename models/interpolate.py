"""Weight-space interpolation between a trained embedder and its fine-tuned descendant (WiSE-FT,
Wortsman et al. 2022). Fine-tuning on lane-camera-like views makes the network robust to blur,
noise and low resolution but costs accuracy on clean photos; a point on the straight line between
the two weight sets keeps most of both, at no cost at run time."""

from __future__ import annotations

from pathlib import Path

import torch

from retail_reid.models.backbone import create_backbone
from retail_reid.models.net import KEEP_IMAGENET, EmbeddingNet
from retail_reid.models.train import read_checkpoint

IMAGENET = "imagenet"  # as START: the tuned run's own backbone with its ImageNet weights


def imagenet_start(tuned: dict) -> dict:
    """The tuned checkpoint with its backbone put back to the ImageNet weights (its head kept): the
    start to interpolate towards, so the mix keeps the pooled ImageNet features in view for
    products the fine-tuning never saw (issue 11)."""
    cfg = tuned["config"]
    net = EmbeddingNet(create_backbone(cfg["backbone"], pretrained=True, weights=cfg.get("weights")), cfg["dim"])
    heads = {k: v for k, v in tuned["model"].items() if not k.startswith("backbone.")}
    return {**tuned, "model": {**net.state_dict(), **heads}}


def interpolate(start: str | Path, tuned: str | Path, weight: float, out: str | Path) -> Path:
    """Write `out` with weights (1 - weight) * start + weight * tuned; everything else (config,
    SKUs, preprocessing) is the tuned checkpoint's. Both must be the same network; `start` may be
    "imagenet" (`IMAGENET`): the tuned run's backbone at its ImageNet weights (WiSE-FT proper)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be between 0 (the start) and 1 (the fine-tuned model), got {weight}")
    b = read_checkpoint(tuned)
    if b.get("arch") == KEEP_IMAGENET:
        raise ValueError(
            f"{tuned}: a reid train-tail network already keeps the ImageNet features beside the trained ones "
            "(its --imagenet-weight); interpolate runs of reid train"
        )
    a = imagenet_start(b) if str(start) == IMAGENET else read_checkpoint(start)
    for key in ("backbone", "dim"):
        if a["config"].get(key) != b["config"].get(key):
            raise ValueError(
                f"{start} and {tuned} are different networks: {key} {a['config'].get(key)} against "
                f"{b['config'].get(key)}"
            )
    if a["model"].keys() != b["model"].keys():
        raise ValueError(f"{start} and {tuned} hold different layers; interpolate a model with its own fine-tuned run")
    mixed = {}
    for name, tb in b["model"].items():
        ta = a["model"][name]
        if ta.shape != tb.shape:
            raise ValueError(
                f"{start} and {tuned} differ in the shape of {name}: {tuple(ta.shape)} against {tuple(tb.shape)}"
            )
        mixed[name] = torch.lerp(ta, tb, weight) if tb.is_floating_point() else tb  # counters come from the tuned run
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**b, "model": mixed, "interpolated": {"start": str(start), "tuned": str(tuned), "weight": weight}}, out)
    return out
