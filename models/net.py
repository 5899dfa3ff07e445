"""The embedding network: a timm backbone's pooled features, projected and L2-normalised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingNet(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int = 128):
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

    def __init__(self, backbone: nn.Module):
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=1)
