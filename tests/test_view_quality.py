"""A view's quality score: smaller, blurred and hand-covered views of an item score lower, skin-coloured
print inside the item is not a hand, and a skin-coloured item keeps its views' order."""

from __future__ import annotations

import cv2
import numpy as np

from retail_reid.models.views import SKIN_RGB
from retail_reid.pipeline.view_quality import HAND_FLOOR, hand_fraction, view_quality

SKIN_BGR = tuple(round(255 * c) for c in SKIN_RGB[::-1])


def _item(side: int = 128, seed: int = 0) -> np.ndarray:
    """A textured blue-green item filling the crop (a carton's print): stripes and fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    stripes = 60 * (np.sin(xx / 2.5) * np.cos(yy / 4.0))
    img = np.stack([170 + stripes, 120 - stripes / 2, 40 + 0 * xx], axis=-1) + rng.normal(0, 12, (side, side, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _with_hand(img: np.ndarray, reach: float) -> np.ndarray:
    """A hand (skin-coloured palm and fingers) entering from the bottom edge, `reach` of the height up."""
    out = img.copy()
    h, w = out.shape[:2]
    top = round(h * (1 - reach))
    cv2.ellipse(out, (w // 2, h), (w // 3, h - top), 0, 180, 360, SKIN_BGR, -1)
    for k in (-3, -1, 1, 3):
        cv2.line(out, (w // 2 + k * w // 16, h - 1), (w // 2 + k * w // 12, top - h // 10), SKIN_BGR, max(2, w // 20))
    return out


def test_a_motion_blurred_view_scores_lower_than_a_sharp_one():
    sharp = _item()
    blurred = cv2.blur(sharp, (13, 1))  # motion blur along x
    qs, qb = view_quality(sharp), view_quality(blurred)
    assert qs.sharpness > qb.sharpness + 0.2 and qs.score > 1.5 * qb.score
    assert 0 < qb.sharpness < qs.sharpness < 1


def test_a_small_view_scores_lower_than_a_large_one():
    large = _item(128)
    small = cv2.resize(large, (48, 48), interpolation=cv2.INTER_AREA)
    ql, qs = view_quality(large), view_quality(small)
    assert ql.size == 1.0 and abs(qs.size - 48 / 128) < 1e-6
    assert ql.score > 2 * qs.score


def test_a_hand_over_the_item_lowers_its_score_by_the_share_it_covers():
    clean = _item()
    held = _with_hand(clean, reach=0.5)
    covered = float(np.mean(np.all(held == SKIN_BGR, axis=-1)))
    assert hand_fraction(clean) < 0.02
    assert covered > 0.25 and 0.6 * covered < hand_fraction(held) <= covered + 0.05  # its rim is not smooth
    assert view_quality(held).score < 0.9 * view_quality(clean).score  # the hand's outline adds some sharpness


def test_skin_coloured_print_inside_the_item_is_not_a_hand():
    spotted = _item()
    cv2.circle(spotted, (64, 64), 30, SKIN_BGR, -1)  # a face on the label: it does not reach the edge
    assert hand_fraction(spotted) < 0.02


def test_a_textured_skin_coloured_scene_is_not_a_hand():
    # Warm-lit shelves and crates of fruit behind a product are skin-coloured but textured.
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    light = 1 + 0.3 * np.sin(xx / 1.5) * np.sin(yy / 2.0)
    crate = np.clip(np.array(SKIN_BGR, np.float32) * light[..., None], 0, 255).astype(np.uint8)
    assert hand_fraction(crate) < 0.05
    assert hand_fraction(_with_hand(crate, reach=0.5)) > 0.15


def test_a_skin_coloured_item_keeps_its_views_in_order_of_sharpness():
    # A potato or a peach reads as hand all over: every view of it alike, so the order stays.
    rng = np.random.default_rng(3)
    potato = np.clip(np.array(SKIN_BGR, np.float32) * (0.85 + 0.15 * rng.random((128, 128, 1))), 0, 255)
    potato = potato.astype(np.uint8)
    blurred = cv2.blur(potato, (9, 1))
    qp, qb = view_quality(potato), view_quality(blurred)
    assert qp.hand > 0.9 and qb.hand > 0.9
    assert qp.score >= HAND_FLOOR * qp.size * qp.sharpness > 0
    assert qp.score > qb.score


def test_the_score_is_deterministic():
    img = _with_hand(_item(seed=5), reach=0.3)
    assert view_quality(img) == view_quality(img.copy())
