"""Lane references: a bounded sample of crops from item passes whose scan the camera verified with
high confidence (policy `confident`) or that the till labelled unambiguously (policy `till`), kept
per product on disk so that an operator (`reid console`) or the automatic rule
(`reid gallery accept-lane-references`) can turn them into gallery references. The lane sees every
product from the exact angle, light and blur that its alerts are judged in; the gallery's photos were
taken elsewhere.

The folder's layout, its manifests and the reading of them are the gallery's
(gallery/lane_suggestions.py); this module is the lane's side, the sampler that fills the folder.

Each file is written by `retail_reid.durable.replace_atomically`, the crop before the manifest that
names it, so a crash leaves at worst a crop no manifest names; a sampler removes those when it starts.

Rules: under the confident policy a pass is sampled when its verdict is ok (the seen SKU is the
scanned one) and the calibrated confidence of that match is at least `min_confidence`; under the till
policy when the lane's event builder labels it (`TillLabel`: one scan of a known SKU matched in time,
quantity 1, one item, no void; given once no void can reopen it), whatever the camera's confidence,
its crops going to the scanned SKU as candidates (the gallery accepts them only by consensus). A
crop is at least `min_side` pixels on its short side and `min_sharpness` sharp. At most `per_pass`
crops of a pass (its best), at most one pass per product every `min_gap_s` seconds of lane time. A
product holds at most `per_product` crops (the oldest goes first); all products together at most
`max_total_mb` (the oldest crop of the product with the most crops goes first, so rare products keep
theirs).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import cv2

from retail_reid.durable import replace_atomically
from retail_reid.gallery.lane_suggestions import (
    FOLDER,
    IMAGES,
    PRODUCTS,
    LabelPolicy,
    LaneCrop,
    LaneReferenceError,
    ProductSample,
    read_samples,
    write_sample,
)
from retail_reid.pipeline.config import LaneConfig, LaneReferenceConfig
from retail_reid.pipeline.events import TillLabel
from retail_reid.pipeline.recognition import GalleryLike
from retail_reid.pipeline.records import PassRecord, Verdict
from retail_reid.pipeline.types import ItemPass
from retail_reid.pipeline.view_quality import sharpness

JPEG_QUALITY = 92
log = logging.getLogger("reid.lane_references")


class LaneReferenceSampler:
    """Called by the lane with each decided pass and its crops (the confident policy), or with each
    pass the till labelled (`labelled`, the till policy); keeps those the rules allow."""

    def __init__(
        self,
        root: Path,
        config: LaneReferenceConfig,
        confidence: Callable[[float], float],
        lane: str = "",
    ):
        """`confidence(similarity)` is the gallery's calibrated confidence of a match."""
        self.root = root
        self.config = config
        self.confidence = confidence
        self.lane = lane
        self.kept = 0  # crops kept since start
        self.error: str | None = None  # why the latest crop could not be kept; None once one is again
        try:
            (root / PRODUCTS).mkdir(parents=True, exist_ok=True)
            (root / IMAGES).mkdir(exist_ok=True)
            self.samples = read_samples(root)
            self._remove_unnamed()
        except OSError as e:
            raise LaneReferenceError(f"{root}: cannot use the lane-references folder ({e.strerror or e})") from None
        # (lane, SKU) -> lane time of its last sampled pass: each lane has a clock of its own
        self._last: dict[tuple[str, str], float] = {}

    def _remove_unnamed(self) -> None:
        """Crops a crash left without a manifest naming them."""
        named = {c.image for s in self.samples.values() for c in s.crops}
        for path in (self.root / IMAGES).glob("*/*"):
            rel = path.relative_to(self.root).as_posix()
            if rel not in named:
                path.unlink(missing_ok=True)

    def total_bytes(self) -> int:
        return sum(c.bytes for s in self.samples.values() for c in s.crops)

    @property
    def labels(self) -> Callable[[TillLabel], int] | None:
        """What the lane gives its till labels to: `labelled` under the till policy, else None."""
        return self.labelled if self.config.policy is LabelPolicy.TILL else None

    def __call__(self, item: ItemPass, record: PassRecord) -> int:
        """Keep the usable crops of a confidently verified pass (the confident policy); returns how
        many were kept."""
        sku = record.seen_sku
        if self.config.policy is not LabelPolicy.CONFIDENT:
            return 0
        if record.verdict is not Verdict.OK or sku is None or sku != record.scanned_sku:
            return 0
        confidence = float(self.confidence(record.seen_score))
        if not math.isfinite(confidence) or confidence < self.config.min_confidence:
            return 0
        return self._keep(item, sku, confidence, sku, record.seen_score)

    def labelled(self, label: TillLabel) -> int:
        """Keep the usable crops of a pass the till labelled, as candidates of the scanned SKU (the
        till policy); returns how many were kept."""
        if self.config.policy is not LabelPolicy.TILL:
            return 0
        confidence = float(self.confidence(label.seen_score))
        return self._keep(
            label.item, label.sku, confidence if math.isfinite(confidence) else 0.0, label.seen_sku, label.seen_score
        )

    def _keep(self, item: ItemPass, sku: str, confidence: float, seen_sku: str | None, seen_score: float) -> int:
        """Keep up to `per_pass` usable crops of `item` under `sku`, with why."""
        cfg = self.config
        last = self._last.get((self.lane, sku))
        if last is not None and item.t_end - last < cfg.min_gap_s:
            return 0
        usable = [
            c
            for c in sorted(item.crops, key=lambda c: c.quality, reverse=True)
            if min(c.image.shape[:2]) >= cfg.min_side and sharpness(c.image) >= cfg.min_sharpness
        ][: cfg.per_pass]
        if not usable:
            return 0
        sample = self.samples.setdefault(sku, ProductSample(sku))
        known = {c.sha256 for c in sample.crops}
        added = 0
        try:
            for crop in usable:
                ok, jpeg = cv2.imencode(".jpg", crop.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    continue
                data = jpeg.tobytes()
                sha = hashlib.sha256(data).hexdigest()
                if sha in known:
                    continue
                rel = f"{IMAGES}/{sha[:2]}/{sha}.jpg"
                (self.root / rel).parent.mkdir(exist_ok=True)
                replace_atomically(self.root / rel, data, "lane-reference")
                sample.crops.append(
                    LaneCrop(
                        sha256=sha,
                        image=rel,
                        bytes=len(data),
                        confidence=round(confidence, 4),
                        quality=round(crop.quality, 4),
                        ts=round(item.t_end, 3),
                        lane=self.lane,
                        track_id=item.track_id,
                        policy=cfg.policy,
                        seen_sku=seen_sku,
                        seen_score=round(float(seen_score), 4),
                    )
                )
                known.add(sha)
                added += 1
            if added:
                self._last[(self.lane, sku)] = item.t_end
                self._evict(sample)
                self.kept += added
        except OSError as e:  # never stops the lane: references are a by-product; the next pass tries again
            self.error = f"{self.root}: cannot keep a lane reference ({e.strerror or e})"
            log.warning("%s", self.error)
            return added
        self.error = None
        return added

    def _evict(self, changed: ProductSample) -> None:
        """Apply the caps, then write every manifest that changed, and only then delete the crops."""
        gone: list[LaneCrop] = []
        touched = {changed.sku}
        while len(changed.crops) > self.config.per_product:
            gone.append(changed.crops.pop(0))
        limit = self.config.max_total_mb * 1e6
        total = self.total_bytes()
        while total > limit:
            fullest = max(self.samples.values(), key=lambda s: len(s.crops))
            if not fullest.crops:
                break
            crop = fullest.crops.pop(0)
            gone.append(crop)
            touched.add(fullest.sku)
            total -= crop.bytes
        for sku in touched:
            write_sample(self.root, self.samples[sku])
        for crop in gone:
            (self.root / crop.image).unlink(missing_ok=True)


def open_sampler(root: Path, config: LaneReferenceConfig, gallery: GalleryLike, lane: str = "") -> LaneReferenceSampler:
    """A sampler into `root` judging confidence with the gallery's calibration."""
    calibration = gallery.calibration
    if calibration is None:
        raise LaneReferenceError(f"{root}: the gallery's model has no calibration, so no confidence to sample by")
    return LaneReferenceSampler(root, config, lambda s: float(calibration.confidence(s)), lane)


def lane_reference_sampler(
    state: Path, config: LaneConfig, gallery: GalleryLike, lane: str
) -> LaneReferenceSampler | None:
    """`reid edge`'s sampler under STATE/lane-references when `[lane_references] enabled`, else None."""
    if not config.lane_references.enabled:
        return None
    return open_sampler(state / FOLDER, config.lane_references, gallery, lane)
