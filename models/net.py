"""The embedding network: a timm backbone's pooled features, projected and L2-normalised."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from retail_reid.models.backbone import TimmBackbone


class EmbeddingNet(nn.Module):
    def __init__(self, backbone: TimmBackbone, dim: int = 128):
        super().__init__()
        backbone.reset_classifier(0)  # keep pooled features, drop ImageNet logits
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def freeze_stages(self, n_blocks: int) -> None:
        """Freeze the stem and the first n blocks (weights and batch-norm statistics): at CPU
        budgets the early, high-resolution layers cost most to train and change least."""
        b = self.backbone
        frozen = [m for m in (getattr(b, "conv_stem", None), getattr(b, "bn1", None)) if m is not None]
        frozen += list(getattr(b, "blocks", [])[:n_blocks])
        if n_blocks and not hasattr(b, "blocks"):
            raise ValueError(f"{type(b).__name__} has no 'blocks' to freeze; use --freeze-blocks 0")
        self._frozen = tuple(frozen)  # a tuple, so the modules are not registered (and saved) twice
        for m in self._frozen:
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        for m in getattr(self, "_frozen", ()):
            m.eval()
        return self


class FlipAverage(nn.Module):
    """Test-time flip: the mean of the embeddings of an image and its mirror, re-normalised.
    Baked into the exported graph so the runtime needs no knowledge of it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one pass over the images and their mirrors together: the exported graph then holds each
        # weight once, so int8 quantisation stores each weight once too
        both = self.net(torch.cat([x, torch.flip(x, dims=[3])]))
        n = x.shape[0]
        return F.normalize(both[:n] + both[n:], dim=1)


class ImageNetFeatures(nn.Module):
    """The ImageNet-only baseline: the backbone's pooled features, L2-normalised, no training."""

    def __init__(self, backbone: TimmBackbone):
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=1)


def _stages(backbone: TimmBackbone) -> nn.Sequential:
    blocks = getattr(backbone, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(backbone).__name__} has no 'blocks' (stages) to split into a trunk and a tail")
    return blocks


class Trunk(nn.Module):
    """The front of a backbone, kept at its ImageNet weights: the stem and every stage but the last
    `tail_stages`. Its output is what `retail_reid.models.research.feature_cache` stores per view, so recipes
    that train only the tail run from cached tensors instead of the whole network."""

    def __init__(self, backbone: TimmBackbone, tail_stages: int):
        super().__init__()
        stages = _stages(backbone)
        if not 0 <= tail_stages <= len(stages):
            raise ValueError(f"tail_stages must be in [0, {len(stages)}], got {tail_stages}")
        self.conv_stem, self.bn1 = backbone.conv_stem, backbone.bn1
        self.blocks = nn.Sequential(*list(stages)[: len(stages) - tail_stages])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))


class Tail(nn.Module):
    """The last `tail_stages` stages, the 1x1 head convolution and the average pooling: pooled features."""

    def __init__(self, backbone: TimmBackbone, tail_stages: int):
        super().__init__()
        stages = _stages(backbone)
        self.blocks = nn.Sequential(*list(stages)[len(stages) - tail_stages :])
        self.conv_head, self.bn2, self.pool = backbone.conv_head, backbone.bn2, backbone.global_pool

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn2(self.conv_head(self.blocks(z))))


KEEP_IMAGENET = "keep-imagenet"  # the `arch` of a KeepImageNetNet checkpoint


class KeepImageNetNet(nn.Module):
    """An embedder that keeps the ImageNet features in view (issue 11).

    The trunk stays at its ImageNet weights; a copy of the last `tail_stages` stages (none: the
    pooled ImageNet features themselves) and a linear projection are trained. The embedding joins
    two unit vectors, the centred ImageNet features scaled by sqrt(w) and the trained projection by
    sqrt(1 - w), so the cosine of two embeddings is w x the ImageNet cosine + (1 - w) x the trained
    one: products never trained on keep the general features' placement, trained ones gain the
    fine-tuned distinctions. w = 0 is the trained projection alone.
    """

    feature_mean: torch.Tensor  # a buffer (register_buffer below)

    def __init__(
        self,
        backbone: TimmBackbone,
        dim: int = 128,
        tail_stages: int = 0,
        imagenet_weight: float = 0.5,
        head_hidden: int = 0,
    ):
        super().__init__()
        if not 0.0 <= imagenet_weight < 1.0:
            raise ValueError(f"imagenet_weight must be in [0, 1), got {imagenet_weight}")
        backbone.reset_classifier(0)
        self.trunk = Trunk(backbone, tail_stages)
        self.imagenet_tail = Tail(backbone, tail_stages)
        self.tail = copy.deepcopy(self.imagenet_tail) if tail_stages else None
        features = backbone.num_features
        self.head = (  # a linear projection, or one hidden layer of `head_hidden` units
            nn.Sequential(
                nn.Linear(features, head_hidden), nn.BatchNorm1d(head_hidden), nn.ReLU(), nn.Linear(head_hidden, dim)
            )
            if head_hidden
            else nn.Linear(features, dim)
        )
        self.register_buffer("feature_mean", torch.zeros(backbone.num_features))
        self.dim, self.tail_stages, self.imagenet_weight = dim, tail_stages, imagenet_weight
        for m in (self.trunk, self.imagenet_tail):
            m.requires_grad_(False)

    @property
    def out_dim(self) -> int:
        return self.dim + (self.feature_mean.numel() if self.imagenet_weight else 0)

    def from_trunk(self, z: torch.Tensor | None, imagenet: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding of trunk outputs `z`; `imagenet`: their pooled ImageNet features when known
        (then `z` may be None for a net without a trained tail, which never reads it)."""
        if imagenet is None and (self.tail is None or self.imagenet_weight):  # only where it is used
            imagenet = self.imagenet_tail(z)
        trained = F.normalize(self.head(self.tail(z) if self.tail is not None else imagenet), dim=1)
        if not self.imagenet_weight:
            return trained
        assert imagenet is not None
        general = F.normalize(imagenet - self.feature_mean, dim=1)
        w = self.imagenet_weight
        return torch.cat([general * w**0.5, trained * (1 - w) ** 0.5], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_trunk(self.trunk(x))

    def train(self, mode: bool = True) -> KeepImageNetNet:
        super().train(mode)
        self.trunk.eval()  # the ImageNet parts keep their batch-norm statistics
        self.imagenet_tail.eval()
        return self
