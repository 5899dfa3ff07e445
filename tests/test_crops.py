"""Crop selection: per track, the few biggest, sharpest, uncut views of the item, kept as copies."""

from pathlib import Path

import cv2
import numpy as np

from retail_reid.images import read_image
from retail_reid.pipeline.config import CropConfig
from retail_reid.pipeline.crops import CropSelector, crop_quality, cut_crop
from retail_reid.pipeline.recognition import aggregate
from retail_reid.pipeline.types import Detections, Frame, Zone
from retail_reid.pipeline.view_quality import sharpness

PHOTO = next((Path(__file__).resolve().parent.parent / "sample" / "grocery" / "val" / "Kiwi").iterdir())
ZONE = Zone(50, 20, 450, 300)


def _photo(side: int) -> np.ndarray:
    return cv2.resize(read_image(PHOTO), (side, side), interpolation=cv2.INTER_AREA)


def test_sharpness_drops_with_motion_blur():
    img = _photo(120)
    blurred = cv2.blur(img, (9, 1))  # motion blur along x
    assert sharpness(img) > 2 * sharpness(blurred)


def test_quality_penalises_items_cut_by_the_zone_edge():
    img = _photo(100)
    inside = np.array([100, 100, 200, 200], np.float32)
    at_edge = np.array([ZONE.x1, 100, ZONE.x1 + 100, 200], np.float32)
    assert crop_quality(img, at_edge, ZONE) < 0.5 * crop_quality(img, inside, ZONE)


def test_cut_crop_adds_margin_clips_and_copies():
    frame = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(80, 100, 3).astype(np.uint8)
    crop = cut_crop(frame, np.array([10, 10, 30, 50], np.float32), 0.1)
    assert crop.shape == (48, 24, 3) and np.array_equal(crop, frame[6:54, 8:32])
    assert not np.shares_memory(crop, frame)
    assert cut_crop(frame, np.array([90, 70, 100, 80], np.float32), 0.5).shape == (15, 15, 3)


def _frame(index: int, placements: list[tuple[np.ndarray, int, int]]) -> Frame:
    img = np.full((320, 480, 3), 60, np.uint8)
    for patch, x, y in placements:
        img[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return Frame(index=index, ts=index / 15, image=img)


def test_selector_keeps_the_best_crops_per_track_best_first():
    sel = CropSelector(ZONE, CropConfig(per_track=2, margin=0.0))
    sharp, blurred = _photo(100), cv2.blur(_photo(100), (5, 1))
    small = _photo(40)
    views = [
        (blurred, 200, 100),
        (sharp, 200, 100),
        (small, 200, 100),
        (sharp, ZONE.x1, 100),
    ]  # last: cut by the zone edge
    for i, (patch, x, y) in enumerate(views):
        h, w = patch.shape[:2]
        det = Detections.from_boxes([(x, y, x + w, y + h)]).with_tracker_ids(np.array([7]))
        sel.add(_frame(i, [(patch, x, y)]), det)
    crops = sel.take(7)
    assert [c.ts for c in crops] == [1 / 15, 0.0]  # the sharp full view, then the blurred one
    assert np.array_equal(crops[0].image, sharp) and crops[0].box == (200, 100, 300, 200)
    assert crops[0].quality > crops[1].quality
    assert sel.take(7) == ()  # taken means forgotten


def test_selector_ignores_untracked_and_tiny_boxes_and_forgets_dead_tracks():
    sel = CropSelector(ZONE, CropConfig(min_side=24))
    patch = _photo(60)
    det = Detections.from_boxes([(100, 100, 160, 160), (200, 100, 210, 110), (300, 100, 360, 160)])
    det = det.with_tracker_ids(np.array([1, 2, -1]))
    sel.add(_frame(0, [(patch, 100, 100)]), det)
    assert sel.take(2) == () and len(sel.take(1)) == 1
    sel.add(_frame(1, [(patch, 100, 100)]), det)
    sel.forget(active_ids={5})
    assert sel.take(1) == ()


def test_pass_embedding_is_the_normalised_mean_of_its_crops():
    rows = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    agg = aggregate(rows)
    assert np.allclose(agg, [2**-0.5, 2**-0.5, 0]) and agg.dtype == np.float32
