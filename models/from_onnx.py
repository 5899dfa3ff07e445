"""A trainable checkpoint rebuilt from an exported embedder, for fine-tuning a model whose training
run is not at hand (a store keeps only the ONNX file; `reid train --init` wants a best.pt).

The export folds each batch norm into the convolution before it, so the ONNX file holds, per
convolution, its folded weight and a bias (`<conv>.weight_bias`). Loaded into a fresh network
with every batch norm an identity, the network computes exactly what the file does; but training
normalises each batch by its own statistics, which an identity's do not describe. So each batch
norm is recalibrated on real photos: its running mean and variance become those of its input
there, and its scale and shift are set so that evaluation still computes exactly the folded
function while a training batch like those photos is normalised much as the original network's was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from retail_reid.images import read_image
from retail_reid.models.backbone import create_backbone
from retail_reid.models.export import check_parity
from retail_reid.models.net import EmbeddingNet
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.models.train import TrainConfig

PREFIX = "net."  # the export's wrapper (FlipAverage) names the network's weights net.<name>


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The file's initialisers by name, the wrapper's prefix dropped."""
    out = {}
    for init in onnx.load(str(path)).graph.initializer:
        name = init.name[len(PREFIX) :] if init.name.startswith(PREFIX) else init.name
        out[name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    return out


def _conv_norm_pairs(net: torch.nn.Module) -> list[tuple[str, torch.nn.Conv2d, torch.nn.BatchNorm2d]]:
    """Each convolution with the batch norm that follows it (in module order, as timm's
    EfficientNets build them: conv_stem/bn1, conv_dw/bn1, conv_pw/bn2, ..., conv_head/bn2)."""
    mods = list(net.named_modules())
    pairs = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, torch.nn.Conv2d):
            norm = next((n for _, n in mods[i + 1 :] if isinstance(n, torch.nn.BatchNorm2d)), None)
            if norm is None:
                raise ValueError(f"{name}: no batch norm follows this convolution")
            pairs.append((name, m, norm))
    return pairs


def checkpoint_from_onnx(model: str | Path, out: str | Path, photos: Sequence[Path], batch: int = 32) -> Path:
    """Write `out`, a best.pt of `reid train` that `reid train --init` fine-tunes, from the exported
    `model` (a `reid export` of a reid train run); its batch norms recalibrated on `photos`. The
    rebuilt network is checked against the file on some of the photos (the export's parity bound)."""
    model, out = Path(model), Path(out)
    emb = OnnxEmbedder(model)
    extra = emb.info.extra
    if "composed" in extra or "imagenet_weight" in extra:
        raise ValueError(f"{model}: a composed or train-tail model; only a reid train export can be rebuilt")
    if not photos:
        raise ValueError("give photos to recalibrate the batch norms on")
    backbone = extra.get("backbone")
    if not backbone:
        raise ValueError(f"{model}: its metadata names no backbone (not an export of reid train)")
    weights = _weights(model)
    net = EmbeddingNet(create_backbone(backbone, pretrained=False), emb.dim).eval()
    pairs = _conv_norm_pairs(net)
    for name, conv, norm in pairs:
        for key in (f"{name}.weight", f"{name}.weight_bias"):
            if key not in weights:
                raise ValueError(f"{model}: no tensor {PREFIX}{key} (not a reid export of a {backbone})")
        conv.weight.data.copy_(weights[f"{name}.weight"])
        norm.weight.data.fill_(1.0)
        norm.bias.data.copy_(weights[f"{name}.weight_bias"])
        assert norm.running_mean is not None and norm.running_var is not None  # timm's batch norms track them
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)  # (x - 0) / sqrt(var + eps) = x: an identity
    for key in ("head.weight", "head.bias"):
        if key not in weights:
            raise ValueError(f"{model}: no tensor {PREFIX}{key}")
    net.head.weight.data.copy_(weights["head.weight"])
    net.head.bias.data.copy_(weights["head.bias"])

    # Recalibrate: the statistics of each batch norm's input (the convolution's output, its bias
    # not yet added) over the photos; with mean m and deviation s the batch norm computes
    # (x - m) / s * s + (bias + m) = x + bias in evaluation, as the file does.
    stats: dict[int, torch.Tensor] = {}  # per batch norm: sum, sum of squares, count, per channel

    def record(norm: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        x = inputs[0].double()
        n = torch.full((x.shape[1],), float(x.shape[0] * x.shape[2] * x.shape[3]), dtype=torch.float64)
        seen = torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), n])
        stats[id(norm)] = stats[id(norm)] + seen if id(norm) in stats else seen

    hooks = [norm.register_forward_hook(record) for _, _, norm in pairs]
    try:
        with torch.no_grad():
            for i in range(0, len(photos), batch):
                net(torch.from_numpy(np.stack([emb.preprocess(read_image(p)) for p in photos[i : i + batch]])))
    finally:
        for h in hooks:
            h.remove()
    for _, _, norm in pairs:
        total, squares, n = stats[id(norm)]
        mean = total / n
        std = (squares / n - mean * mean).clamp_min(0).add(norm.eps).sqrt()
        assert norm.running_mean is not None and norm.running_var is not None  # as above
        norm.running_mean.copy_(mean.float())
        norm.running_var.copy_((std * std - norm.eps).float())
        norm.weight.data.copy_(std.float())
        norm.bias.data.add_(mean.float())
    check_parity(net, model, list(photos[:: max(1, len(photos) // 16)])[:16])

    size = int(extra.get("train_size") or emb.preprocess.size)
    cfg = TrainConfig(out=str(out.parent), backbone=backbone, pretrained=False, dim=emb.dim, size=size)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": net.state_dict(),
        "config": asdict(cfg),
        "skus": [],
        "preprocess": emb.preprocess.to_dict(),
        "epoch": 0,
        "val": {},
        "from_onnx": str(model),
    }
    torch.save(state, out)
    return out
