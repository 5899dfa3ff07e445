"""Recognition: an item pass's crops turned into gallery matches (`Recogniser.recognise`), and the
pass judged against the SKU the till scanned for it (`Recogniser.judge`). The alert thresholds
come from the model's calibration (by name) or from the config (as numbers), so a new model
brings its own operating points.

A product switch is an accusation, so it needs positive evidence: enough views of usable quality
(big and sharp enough), most of them on their own naming the same other SKU by a margin, and the
pass as a whole scoring the scanned SKU low and the other SKU high by a margin. A pass whose
scan looks doubtful without that evidence is UNVERIFIED: counted and shown, not alerted."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np

from retail_reid.models.calibration import Calibration
from retail_reid.pipeline.config import ConfigError, EventConfig, Threshold
from retail_reid.pipeline.records import Verdict
from retail_reid.pipeline.types import Crop, ItemPass
from retail_reid.pipeline.view_quality import sharpness

if TYPE_CHECKING:
    from pathlib import Path

    from retail_reid.gallery import SkuMatch, Verification
    from retail_reid.models.runtime import OnnxEmbedder

MATCHES_KEPT = 5
# The pass's embedding weights each view by its quality score to this power, chosen on the
# development lanes (docs/pipeline.md, "Weighting a pass's views by their quality").
WEIGHT_POWER = 0.5
MIN_WEIGHT = 1e-6  # a view of quality 0 still counts when all its pass's views score 0
CONFIDENCE_PREFIX = "confidence:"


class GalleryLike(Protocol):
    """What the pipeline needs from `gallery.Gallery`."""

    embedder: OnnxEmbedder
    calibration: Calibration  # of the gallery's SKU scoring: the thresholds that alerts use

    @property
    def version(self) -> int: ...  # read-only (Gallery's is a property)

    def match(self, embeddings: np.ndarray, k: int = 5) -> list[list[SkuMatch]]: ...
    def verify(self, embedding: np.ndarray, sku: str) -> Verification: ...
    def has_sku(self, sku: str) -> bool: ...
    def sku_for_barcode(self, code: str) -> str | None: ...
    def reference_image(self, sku: str) -> Path | None: ...
    def display_name(self, sku: str) -> str: ...


@dataclass(frozen=True)
class Thresholds:
    """Similarities behind the decisions (cosine, accept a claim when similarity >= threshold).
    Each field is named as its `[events]` setting, so a setting keeps one name from lane.toml to
    the decision (and in summary.json)."""

    switch_reject: float  # the scanned SKU scores below this: it does not look like the item
    switch_accept: float  # another SKU scores at least this: the item looks like that one
    unknown_below: float  # no SKU reaches this: the item is not in the gallery
    min_margin: float  # the other SKU must beat the scanned one by this much
    # Evidence a switch needs (the defaults ask for none beyond the thresholds above):
    switch_min_views: int = 1  # usable views of the item
    switch_min_agreement: float = 0.0  # share of them that on their own name the same other SKU ...
    switch_view_margin: float = 0.0  # ... beating the scanned SKU by at least this much
    view_min_side: int = 0  # a usable view is at least this many pixels on its short side ...
    view_min_sharpness: float = 0.0  # ... and at least this sharp (view_quality.sharpness)

    @classmethod
    def resolve(cls, config: EventConfig, calibration: Calibration | None) -> Thresholds:
        """Turn each setting into a similarity: a number is one already; a name ("eer",
        "far_0.01", ...) is the model's calibrated threshold; "confidence:P" is the similarity at
        which the model's calibrated confidence is P."""

        def value(key: str, spec: Threshold) -> float:
            if isinstance(spec, float):
                return spec  # in [-1, 1]: EventConfig declares it
            if calibration is None:
                raise ConfigError(
                    f"events.{key} = {spec!r} needs the model's calibration, and it has none; give a number"
                )
            if spec.startswith(CONFIDENCE_PREFIX):
                try:
                    p = float(spec[len(CONFIDENCE_PREFIX) :])
                except ValueError:
                    p = -1.0
                if not 0.0 < p < 1.0:
                    raise ConfigError(
                        f"events.{key} = {spec!r}: the confidence must be a number strictly between 0 and 1"
                    )
                return float((np.log(p / (1.0 - p)) - calibration.b) / calibration.a)
            if spec not in calibration.thresholds:
                raise ConfigError(
                    f"events.{key} = {spec!r}: the model's calibration has only "
                    f"{', '.join(sorted(calibration.thresholds))} (or use a number, or 'confidence:P')"
                )
            return calibration.threshold(spec)

        return cls(
            value("switch_reject", config.switch_reject),
            value("switch_accept", config.switch_accept),
            value("unknown_below", config.unknown_below),
            config.min_margin,
            switch_min_views=config.switch_min_views,
            switch_min_agreement=config.switch_min_agreement,
            switch_view_margin=config.switch_view_margin,
            view_min_side=config.view_min_side,
            view_min_sharpness=config.view_min_sharpness,
        )


@dataclass(frozen=True, kw_only=True)
class Recognition:
    """A pass's aggregated embedding and its best gallery matches, best first; no embedding when
    the pass left no crop (too small throughout). `views` holds the unit embeddings of its crops
    of usable quality, one row each (None: not measured; the aggregate stands for one view)."""

    embedding: np.ndarray | None
    matches: tuple[SkuMatch, ...]
    views: np.ndarray | None = None


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """The verdict on one pass given the SKU scanned for it (None: no scan)."""

    verdict: Verdict
    seen_sku: str | None  # what the camera believes passed; None when it cannot tell
    seen_score: float
    seen_confidence: float
    scanned_score: float | None = None
    scanned_confidence: float | None = None


class _Seen(TypedDict):
    """A judgement's view of what passed."""

    seen_sku: str | None
    seen_score: float
    seen_confidence: float


class _Scanned(TypedDict):
    """A judgement's view of the scanned SKU."""

    scanned_score: float
    scanned_confidence: float


def aggregate(embeddings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """One unit vector for a pass from its crops' unit embeddings: their normalised mean, weighted
    by `weights` (one per row; None: all alike)."""
    mean = np.average(embeddings, axis=0, weights=weights)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def view_weights(crops: Sequence[Crop], power: float = WEIGHT_POWER) -> np.ndarray:
    """The crops' weights in their pass's embedding: their quality score (`crops.crop_quality`,
    in [0, 1]) to `power`; 0 weights them alike."""
    return np.maximum([c.quality for c in crops], MIN_WEIGHT) ** power


class Recogniser:
    """Embeds passes (all their crops in one batch) and judges them against scans."""

    def __init__(self, gallery: GalleryLike, thresholds: Thresholds, weight_power: float = WEIGHT_POWER):
        """`weight_power`: how strongly a view's quality weights it in its pass's embedding
        (`view_weights`; 0: a plain mean)."""
        self.gallery = gallery
        self.thresholds = thresholds
        self.weight_power = weight_power

    def recognise(self, passes: list[ItemPass]) -> list[Recognition]:
        """One Recognition per pass, in order; all crops go through the embedder in one batch."""
        seen = [p for p in passes if p.crops]
        if not seen:
            return [Recognition(embedding=None, matches=()) for _ in passes]
        vectors = self.gallery.embedder.embed([c.image for p in seen for c in p.crops])
        bounds = np.cumsum([0] + [len(p.crops) for p in seen])
        combined = [
            self.combine(p.crops, vectors[a:b]) for p, (a, b) in zip(seen, itertools.pairwise(bounds), strict=True)
        ]
        embeddings = np.stack([e for e, _ in combined])
        views = [v for _, v in combined]
        found = iter(zip(embeddings, views, self.gallery.match(embeddings, k=MATCHES_KEPT), strict=True))
        out = []
        for p in passes:
            if p.crops:
                embedding, usable_views, matches = next(found)
                out.append(Recognition(embedding=embedding, matches=tuple(matches), views=usable_views))
            else:
                out.append(Recognition(embedding=None, matches=()))
        return out

    def combine(self, crops: Sequence[Crop], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A pass's embedding from its crops' unit embeddings, and the embeddings of its usable
        views: the usable views, weighted by quality, make the embedding; a pass without any
        usable view keeps all its crops."""
        usable = np.array([self.usable(c.image) for c in crops], bool)
        use = usable if usable.any() else np.ones(len(crops), bool)
        weights = view_weights([c for c, u in zip(crops, use, strict=True) if u], self.weight_power)
        return aggregate(vectors[use], weights), vectors[usable]

    def usable(self, image: np.ndarray) -> bool:
        """Whether a crop is big and sharp enough to testify about what the item is."""
        t = self.thresholds
        return min(image.shape[:2]) >= t.view_min_side and (
            t.view_min_sharpness <= 0 or sharpness(image) >= t.view_min_sharpness
        )

    def switch_evidence(self, rec: Recognition, scanned_sku: str, other_sku: str) -> bool:
        """Enough usable views, and enough of them on their own naming `other_sku` over the
        scanned SKU by the view margin."""
        t = self.thresholds
        if rec.views is not None:
            views = rec.views
        else:
            assert rec.embedding is not None  # judge() asks only about passes with an embedding
            views = rec.embedding[None]
        if len(views) < t.switch_min_views:
            return False
        if t.switch_min_agreement <= 0:
            return True
        checks = [self.gallery.verify(v, scanned_sku) for v in views]
        agree = sum(c.best_other_sku == other_sku and -c.margin >= t.switch_view_margin for c in checks)
        return agree >= t.switch_min_agreement * len(views)

    def judge(self, rec: Recognition, scanned_sku: str | None) -> Judgement:
        t = self.thresholds
        if rec.embedding is None:
            verdict = Verdict.NON_SCAN if scanned_sku is None else Verdict.UNVERIFIED
            return Judgement(verdict=verdict, seen_sku=None, seen_score=-1.0, seen_confidence=0.0)
        best = rec.matches[0] if rec.matches else None
        best_score = best.score if best else -1.0
        best_conf = best.confidence if best else 0.0
        known = best is not None and best_score >= t.unknown_below
        best_seen = _Seen(
            seen_sku=best.sku if known and best else None, seen_score=best_score, seen_confidence=best_conf
        )
        if scanned_sku is None:
            return Judgement(verdict=Verdict.NON_SCAN, **best_seen)
        if not self.gallery.has_sku(scanned_sku):
            return Judgement(verdict=Verdict.UNVERIFIED, **best_seen)
        v = self.gallery.verify(rec.embedding, scanned_sku)
        scanned = _Scanned(scanned_score=v.similarity, scanned_confidence=v.confidence)
        as_scanned = _Seen(seen_sku=scanned_sku, seen_score=v.similarity, seen_confidence=v.confidence)
        if v.similarity >= t.switch_reject:
            return Judgement(verdict=Verdict.OK, **as_scanned, **scanned)
        if v.best_other_sku is not None and v.best_other_similarity >= t.switch_accept and -v.margin >= t.min_margin:
            if not self.switch_evidence(rec, scanned_sku, v.best_other_sku):
                return Judgement(verdict=Verdict.UNVERIFIED, **as_scanned, **scanned)
            other_conf = next((m.confidence for m in rec.matches if m.sku == v.best_other_sku), best_conf)
            return Judgement(
                verdict=Verdict.PRODUCT_SWITCH,
                seen_sku=v.best_other_sku,
                seen_score=v.best_other_similarity,
                seen_confidence=other_conf,
                **scanned,
            )
        if max(v.similarity, v.best_other_similarity) < t.unknown_below:
            return Judgement(
                verdict=Verdict.UNKNOWN_ITEM, seen_sku=None, seen_score=best_score, seen_confidence=best_conf, **scanned
            )
        # The scan is doubtful but no other SKU is clearly it: not an alert, and the scanned SKU
        # keeps the benefit of the doubt (in the seen basket too) while it is a plausible match.
        if v.similarity >= t.unknown_below:
            return Judgement(verdict=Verdict.UNCONFIRMED, **as_scanned, **scanned)
        return Judgement(verdict=Verdict.UNCONFIRMED, **best_seen, **scanned)
