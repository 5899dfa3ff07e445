"""How far a transaction's basket as seen by the camera agrees with the basket the till scanned.

Baskets are multisets of SKUs (`collections.Counter`): three apples seen and two scanned is a
disagreement a plain set would hide. Intersection counts the smaller multiplicity of each SKU.
`Basket` keeps both counts of one transaction as passes and scans are decided; the event builder
and the merge of a chunked replay both count with it.

Empty baskets: two empty baskets agree perfectly (1.0); an empty basket against a non-empty one
has nothing in common (0.0), including for the overlap coefficient, whose smaller side is then empty.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from retail_reid.pipeline.config import BasketConfig
from retail_reid.pipeline.records import BasketEvent

# Tversky weights: a missed scan (seen, not scanned) is the loss we hunt, so it costs more than
# a scan the camera did not see (often an occluded item).
TVERSKY_ALPHA = 1.0
TVERSKY_BETA = 0.5
UNKNOWN = "unknown"  # the seen-basket entry for an item the gallery could not name


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


@dataclass
class Basket:
    """One transaction's basket as the camera saw it (a pass counts under the SKU it was seen as,
    or `UNKNOWN`) and as the till scanned it (under the scan's label: its SKU, or "barcode:CODE").
    A count taken back to nothing leaves no entry."""

    seen: Counter[str] = field(default_factory=Counter)
    scanned: Counter[str] = field(default_factory=Counter)

    def see(self, sku: str | None, n: int = 1) -> str:
        """Count `n` passes seen as `sku` (None: unknown; negative: taken back); returns the entry counted."""
        entry = sku or UNKNOWN
        self.seen[entry] += n
        self.seen += Counter()  # drop entries counted down to nothing
        return entry

    def scan(self, label: str, n: int = 1) -> None:
        """Count `n` units scanned under `label` (negative: taken back, by a void)."""
        self.scanned[label] += n
        self.scanned += Counter()  # drop entries counted down to nothing

    def __bool__(self) -> bool:
        return bool(self.seen or self.scanned)

    def event(self, txn: str | None, weights: BasketConfig) -> BasketEvent:
        """The basket event of transaction `txn` (None: passes and scans outside any transaction)."""
        s = compare(self.seen, self.scanned, weights.tversky_alpha, weights.tversky_beta)
        return BasketEvent(
            txn=txn,
            seen=dict(self.seen),
            scanned=dict(self.scanned),
            jaccard=s.jaccard,
            dice=s.dice,
            overlap=s.overlap,
            tversky=s.tversky,
        )
