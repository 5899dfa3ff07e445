"""Metric-learning losses by name, composed from pytorch-metric-learning parts.

All operate on unit embeddings with PML's default L2 distance. The triplet loss margin and the
miner margin are set to the same value on purpose: PML's defaults differ (0.05 vs 0.2), which
would mine triplets the loss then ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_metric_learning import losses, miners

LOSSES = ("triplet", "contrastive", "multi-similarity", "arcface")
MINER_TYPES = ("all", "hard", "semihard", "easy")


@dataclass
class Objective:
    """A loss and the optional miner that picks which tuples it sees (miners only return indices)."""

    loss: torch.nn.Module
    miner: torch.nn.Module | None = None

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, tuples)


def build_objective(
    name: str, embedding_dim: int, num_classes: int, miner_type: str = "semihard", margin: float = 0.2
) -> Objective:
    if name == "triplet":
        if miner_type not in MINER_TYPES:
            raise ValueError(f"miner type must be one of {MINER_TYPES}, got {miner_type!r}")
        return Objective(
            losses.TripletMarginLoss(margin=margin),
            miners.TripletMarginMiner(margin=margin, type_of_triplets=miner_type),
        )
    if name == "contrastive":
        # unit vectors: distance 1.0 is cosine similarity 0.5; push other SKUs beyond it
        return Objective(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0))
    if name == "multi-similarity":
        return Objective(
            losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), miners.MultiSimilarityMiner(epsilon=0.1)
        )
    if name == "arcface":
        return Objective(
            losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=28.6, scale=64)
        )
    raise ValueError(f"unknown loss {name!r}; choose from {LOSSES}")
