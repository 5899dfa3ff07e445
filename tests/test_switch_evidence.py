"""A product switch is alerted only on positive evidence: enough usable views of the item, most of
them naming the same other SKU over the scanned one by a margin; otherwise the pass is unverified
(no alert). The settings come from the config, within declared limits."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from retail_reid.gallery import SkuMatch as Match
from retail_reid.gallery import Verification as Check
from retail_reid.pipeline.config import ConfigError, CropConfig, EventConfig, LaneConfig
from retail_reid.pipeline.recognition import Recogniser, Recognition, Thresholds
from retail_reid.pipeline.records import Verdict
from retail_reid.pipeline.types import Crop, ItemPass

SKUS = {"Milk": np.array([1, 0, 0, 0], np.float32), "Oat": np.array([0, 1, 0, 0], np.float32)}
SKUS["Juice"] = np.array([0, 0, 1, 0], np.float32)


class ColourEmbedder:
    """Embeds a crop by its mean colour: blue-ish is Milk, green-ish Oat, red-ish Juice."""

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        out = np.stack([img.reshape(-1, 3).mean(axis=0) for img in images]).astype(np.float32)
        out = np.concatenate([out, np.full((len(out), 1), 1.0, np.float32)], axis=1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class TinyGallery:
    embedder = ColourEmbedder()

    def _scores(self, e: np.ndarray) -> dict[str, float]:
        return {k: float(np.dot(e, v)) for k, v in SKUS.items()}

    def match(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        return [
            [Match(s, v, (v + 1) / 2) for s, v in sorted(self._scores(e).items(), key=lambda t: -t[1])[:k]]
            for e in embeddings
        ]

    def verify(self, embedding: np.ndarray, sku: str) -> Check:
        scores = self._scores(embedding)
        sim = scores[sku]
        other = max(((s, v) for s, v in scores.items() if s != sku), key=lambda t: t[1])
        return Check(sku, sim, (sim + 1) / 2, other[0], other[1], sim - other[1])

    def has_sku(self, sku: str) -> bool:
        return sku in SKUS


STRICT = Thresholds(
    switch_reject=0.5,
    switch_accept=0.6,
    unknown_below=0.3,
    min_margin=0.1,
    switch_min_views=2,
    switch_min_agreement=0.75,
    switch_view_margin=0.1,
    view_min_side=40,
    view_min_sharpness=20.0,
)


def _unit(**w: float) -> np.ndarray:
    v = sum(x * SKUS[k] for k, x in w.items()) + 0.2 * np.array([0, 0, 0, 1], np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _rec(*views: np.ndarray) -> Recognition:
    agg = np.mean(views, axis=0)
    agg = (agg / np.linalg.norm(agg)).astype(np.float32)
    return Recognition(embedding=agg, matches=tuple(TinyGallery().match(agg[None])[0]), views=np.stack(views))


def test_views_that_agree_on_another_sku_raise_a_switch():
    j = Recogniser(TinyGallery(), STRICT).judge(_rec(_unit(Oat=1), _unit(Oat=1, Milk=0.2)), "Milk")
    assert j.verdict is Verdict.PRODUCT_SWITCH and j.seen_sku == "Oat" and j.scanned_score < 0.5


def test_views_that_disagree_leave_the_pass_unverified_without_an_alert():
    # Together they look like Oat over Milk, but one view says Juice: not consistent.
    j = Recogniser(TinyGallery(), STRICT).judge(_rec(_unit(Oat=1), _unit(Oat=1), _unit(Juice=1)), "Milk")
    assert j.verdict is Verdict.UNVERIFIED and j.verdict.alert is None
    assert j.seen_sku == "Milk" and j.scanned_score is not None  # the scan keeps the benefit of the doubt


def test_too_few_usable_views_leave_the_pass_unverified():
    j = Recogniser(TinyGallery(), STRICT).judge(_rec(_unit(Oat=1)), "Milk")
    assert j.verdict is Verdict.UNVERIFIED


def test_a_view_must_beat_the_scanned_sku_by_the_view_margin():
    close = _unit(Oat=1, Milk=0.95)  # Oat by a hair on its own
    strict = Recogniser(TinyGallery(), STRICT).judge(_rec(_unit(Oat=1), close), "Milk")
    lenient = Recogniser(TinyGallery(), Thresholds(**{**vars(STRICT), "switch_view_margin": 0.0})).judge(
        _rec(_unit(Oat=1), close), "Milk"
    )
    assert strict.verdict is Verdict.UNVERIFIED and lenient.verdict is Verdict.PRODUCT_SWITCH


def test_the_default_thresholds_ask_for_no_more_than_the_similarities():
    loose = Thresholds(switch_reject=0.5, switch_accept=0.6, unknown_below=0.3, min_margin=0.1)
    assert Recogniser(TinyGallery(), loose).judge(_rec(_unit(Oat=1)), "Milk").verdict is Verdict.PRODUCT_SWITCH


def _crop(colour: tuple[int, int, int], side: int, blur: int = 0) -> Crop:
    rng = np.random.default_rng(side)
    img = np.clip(np.array(colour, np.float32) + rng.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8)
    if blur:
        img = cv2.blur(img, (blur, blur))
    return Crop(image=img, ts=0.0, box=(0, 0, side, side), quality=1.0)


def test_recognise_keeps_only_usable_views_and_builds_the_embedding_from_them():
    green, blue = (0, 200, 0), (200, 0, 0)
    crops = (_crop(green, 64), _crop(green, 60), _crop(blue, 20), _crop(blue, 64, blur=25))
    item = ItemPass(track_id=1, t_start=0.0, t_end=1.0, frames=9, crops=crops)
    (rec,) = Recogniser(TinyGallery(), STRICT).recognise([item])
    assert len(rec.views) == 2  # the small and the blurred crop do not testify
    assert rec.matches[0].sku == "Oat"
    unusable = ItemPass(track_id=2, t_start=0.0, t_end=1.0, frames=9, crops=crops[2:])
    (rec,) = Recogniser(TinyGallery(), STRICT).recognise([unusable])
    assert len(rec.views) == 0 and rec.embedding is not None  # still recognised, from all its crops
    assert Recogniser(TinyGallery(), STRICT).judge(rec, "Oat").verdict is not Verdict.PRODUCT_SWITCH


def test_thresholds_take_the_evidence_settings_from_the_config():
    cfg = EventConfig(
        switch_reject=0.4,
        switch_accept=0.6,
        unknown_below=0.2,
        switch_min_views=3,
        switch_min_agreement=0.5,
        switch_view_margin=0.05,
        view_min_side=32,
        view_min_sharpness=15.0,
    )
    t = Thresholds.resolve(cfg, None)
    evidence = (t.switch_min_views, t.switch_min_agreement, t.switch_view_margin, t.view_min_side, t.view_min_sharpness)
    assert evidence == (3, 0.5, 0.05, 32, 15.0)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(switch_min_views=0), "events.switch_min_views"),
        (dict(switch_min_agreement=1.5), "events.switch_min_agreement"),
        (dict(switch_view_margin=-0.1), "events.switch_view_margin"),
        (dict(view_min_side=-1), "events.view_min_side"),
        (dict(view_min_sharpness=-1.0), "events.view_min_sharpness"),
        (dict(min_margin=2.0), "events.min_margin"),
    ],
)
def test_evidence_settings_outside_their_limits_are_refused(change, needle):
    with pytest.raises(ConfigError, match=needle):
        EventConfig(**change)


def test_more_views_required_than_crops_kept_is_refused():
    with pytest.raises(ConfigError, match=r"events\.switch_min_views.*crops\.per_track"):
        LaneConfig(events=EventConfig(switch_min_views=4), crops=CropConfig(per_track=3))


def test_a_pass_weights_its_views_by_quality():
    # Two usable views: a good one of Oat, a poor one (blurred, hand-covered: low quality) that
    # leans to Milk. A plain mean names Milk; weighted by quality the pass is Oat.
    good = dataclasses.replace(_crop((0, 200, 0), 64), quality=0.9)
    poor = dataclasses.replace(_crop((230, 0, 0), 64), quality=0.1)
    item = ItemPass(track_id=1, t_start=0.0, t_end=1.0, frames=9, crops=(good, poor))
    loose = dataclasses.replace(STRICT, view_min_sharpness=0.0)
    (weighted,) = Recogniser(TinyGallery(), loose).recognise([item])
    (plain,) = Recogniser(TinyGallery(), loose, weight_power=0.0).recognise([item])
    assert weighted.matches[0].sku == "Oat" and plain.matches[0].sku == "Milk"
    assert len(weighted.views) == 2  # both still testify on their own
