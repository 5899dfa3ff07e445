"""Weight-space interpolation between a trained embedder and its fine-tuned descendant (WiSE-FT,
Wortsman et al. 2022). Fine-tuning on lane-camera-like views makes the network robust to blur,
noise and low resolution but costs accuracy on clean photos; a point on the straight line between
the two weight sets keeps most of both, at no cost at run time."""

from __future__ import annotations

from pathlib import Path

import torch

from retail_reid.models.train import read_checkpoint


def interpolate(start: str | Path, tuned: str | Path, weight: float, out: str | Path) -> Path:
    """Write `out` with weights (1 - weight) * start + weight * tuned; everything else (config,
    SKUs, preprocessing) is the tuned checkpoint's. Both must be the same network."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be between 0 (the start) and 1 (the fine-tuned model), got {weight}")
    a, b = read_checkpoint(start), read_checkpoint(tuned)
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
