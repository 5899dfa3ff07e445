"""How far a transaction's basket as seen by the camera agrees with the basket the till scanned.

Baskets are multisets of SKUs (`collections.Counter`): three apples seen and two scanned is a
disagreement a plain set would hide. Intersection counts the smaller multiplicity of each SKU.

Empty baskets: two empty baskets agree perfectly (1.0); an empty basket against a non-empty one
has nothing in common (0.0), including for the overlap coefficient, whose smaller side is then empty.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

# Tversky weights: a missed scan (seen, not scanned) is the loss we hunt, so it costs more than
# a scan the camera did not see (often an occluded item).
TVERSKY_ALPHA = 1.0
TVERSKY_BETA = 0.5


def _sizes(a: Counter, b: Counter) -> tuple[int, int, int]:
    """|A ∩ B|, |A − B|, |B − A| of two multisets, refusing negative or non-integer counts."""
    for basket in (a, b):
        for sku, n in basket.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"basket count for {sku!r} must be a non-negative integer, got {n!r}")
    common = sum(min(n, b.get(sku, 0)) for sku, n in a.items())
    return common, sum(a.values()) - common, sum(b.values()) - common


def jaccard(a: Counter, b: Counter) -> float:
    """|A ∩ B| / |A ∪ B|: the share of all items that both baskets agree on."""
    common, only_a, only_b = _sizes(a, b)
    union = common + only_a + only_b
    return common / union if union else 1.0


def dice(a: Counter, b: Counter) -> float:
    """Sørensen–Dice, 2|A ∩ B| / (|A| + |B|): like Jaccard but counts agreement twice."""
    common, only_a, only_b = _sizes(a, b)
    total = 2 * common + only_a + only_b
    return 2 * common / total if total else 1.0


def overlap(a: Counter, b: Counter) -> float:
    """Szymkiewicz–Simpson, |A ∩ B| / min(|A|, |B|): 1.0 when one basket lies inside the other."""
    common, only_a, only_b = _sizes(a, b)
    smaller = min(common + only_a, common + only_b)
    if smaller:
        return common / smaller
    return 1.0 if only_a == only_b == 0 else 0.0


def tversky(a: Counter, b: Counter, alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA) -> float:
    """|A ∩ B| / (|A ∩ B| + α|A − B| + β|B − A|) with A = seen and B = scanned, so `alpha` weighs
    items seen but not scanned and `beta` items scanned but not seen. α = β = 1 is Jaccard,
    α = β = 0.5 is Dice. Asymmetric unless α = β."""
    for name, w in (("alpha", alpha), ("beta", beta)):
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"Tversky {name} must be a finite number >= 0, got {w}")
    common, only_a, only_b = _sizes(a, b)
    if common == only_a == only_b == 0:
        return 1.0
    denom = common + alpha * only_a + beta * only_b
    return common / denom if denom else 0.0


@dataclass(frozen=True)
class BasketScores:
    """All four agreement measures of one transaction's seen and scanned baskets."""

    jaccard: float
    dice: float
    overlap: float
    tversky: float


def compare(seen: Counter, scanned: Counter, alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA) -> BasketScores:
    """Every measure at once, for the per-transaction basket event."""
    return BasketScores(
        jaccard(seen, scanned), dice(seen, scanned), overlap(seen, scanned), tversky(seen, scanned, alpha, beta)
    )
