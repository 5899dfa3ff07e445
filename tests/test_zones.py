"""Polygonal scan zones and excluded areas: parsed from the command line and lane.toml with errors
that name the field, and honoured by the motion detector, the ONNX detector's box filter and the
crop selection."""

from __future__ import annotations

import numpy as np
import pytest

from retail_reid.pipeline.config import ConfigError, DetectorConfig, MotionConfig, OnnxDetectorConfig, load_config
from retail_reid.pipeline.crops import touches_edge
from retail_reid.pipeline.detector import MotionDetector, make_detector
from retail_reid.pipeline.lane import resolve_zone
from retail_reid.pipeline.types import Frame, Zone, ZoneError

W, H = 320, 240
TRIANGLE = ((40, 200), (280, 200), (160, 20))


def test_polygon_from_text_and_list_has_its_bounding_box():
    z = Zone.parse("40,200; 280,200; 160,20")
    assert (z.x1, z.y1, z.x2, z.y2) == (40, 20, 280, 200) and z.polygon == TRIANGLE
    assert Zone.from_list([[40, 200], [280, 200], [160, 20]]) == z
    assert z.as_text() == "40,200;280,200;160,20"
    assert Zone.parse("1,2,30,40") == Zone(1, 2, 30, 40) and Zone(1, 2, 30, 40).is_rect


@pytest.mark.parametrize(
    "text, needle",
    [
        ("1,2;3", "polygon corners"),
        ("1,2;3,4", "at least three corners"),
        ("0,0;10,10;20,20", "encloses no area"),
        ("1,2,3", "four integers"),
    ],
)
def test_bad_zone_text_is_named(text, needle):
    with pytest.raises(ZoneError, match=needle):
        Zone.parse(text, "--zone")


def test_mask_looks_inside_the_polygon_and_not_in_exclusions():
    z = Zone.from_polygon(TRIANGLE).excluding((((150, 150), (170, 150), (170, 190), (150, 190)),))
    assert z.mask.shape == (180, 240)
    assert z.contains(160, 120) and not z.contains(50, 30)  # apex region outside the triangle
    assert not z.contains(160, 170)  # excluded
    assert not z.contains(10, 10)  # outside the box altogether
    with pytest.raises(ZoneError, match="cover all of it"):
        _ = Zone(0, 0, 10, 10).excluding((((0, 0), (10, 0), (10, 10), (0, 10)),)).mask


def test_clip_keeps_the_polygon_inside_the_frame():
    z = Zone.from_polygon(((-20, 10), (300, 10), (300, 260)))
    clipped, warning = z.clip(W, H)
    assert (clipped.x1, clipped.y1, clipped.x2, clipped.y2) == (0, 10, 300, 240)
    assert all(0 <= x <= W and 0 <= y <= H for x, y in clipped.polygon) and "clipped" in warning


def test_lane_toml_takes_a_polygon_zone_and_excluded_areas(tmp_path):
    path = tmp_path / "lane.toml"
    path.write_text(
        "zone = [[40, 200], [280, 200], [160, 20]]\n"
        "exclude = [[0, 0, 100, 100], [[200, 150], [260, 150], [260, 200]]]\n"
    )
    cfg = load_config(path)
    assert cfg.zone == Zone.from_polygon(TRIANGLE)
    assert cfg.exclude == (((0, 0), (100, 0), (100, 100), (0, 100)), ((200, 150), (260, 150), (260, 200)))
    zone = resolve_zone(cfg.zone, (W, H), []).excluding(cfg.exclude)
    assert not zone.contains(90, 90) and not zone.contains(250, 180) and zone.contains(160, 150)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("zone = [[1, 2], [3, 4]]", r"lane\.toml: zone: expected a polygon"),
        ("zone = [1, 2, 3]", r"lane\.toml: zone: expected \[x1, y1, x2, y2\]"),
        ("exclude = [[1, 2, 3]]", r"lane\.toml: exclude\[0\]: expected"),
        ("exclude = 5", r"lane\.toml: exclude: expected a list of areas"),
    ],
)
def test_bad_zone_or_exclusions_in_lane_toml_are_named(tmp_path, text, needle):
    path = tmp_path / "lane.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def _frames(n: int, flicker: tuple[int, int, int, int], item_x):
    """A still lane with a screen whose picture changes every frame and a bright item moving across."""
    rng = np.random.default_rng(0)
    bg = np.full((H, W, 3), 80.0, np.float32) + rng.normal(0, 4, (H, W, 1)).astype(np.float32)
    x1, y1, x2, y2 = flicker
    for i in range(n):
        img = bg + rng.normal(0, 2, bg.shape).astype(np.float32)
        img[y1:y2, x1:x2] = (30, 60, 200) if i % 7 in (3, 4) else 60  # a screen flashing now and then
        x = item_x(i)
        if x is not None:
            img[90:150, x : x + 60] = (40, 160, 230)
        yield Frame(index=i, ts=i / 15, image=np.clip(img, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("excluded", [False, True])
def test_motion_detector_ignores_a_flickering_screen_only_when_it_is_excluded(excluded):
    screen = (250, 40, 300, 80)
    zone = Zone(20, 20, 310, 220)
    if excluded:
        zone = zone.excluding((((250, 40), (300, 40), (300, 80), (250, 80)),))
    det = MotionDetector(zone, MotionConfig(warmup_frames=5))
    on_screen, on_item = 0, 0
    for frame in _frames(40, screen, lambda i: 30 + 4 * i if i >= 20 else None):
        for a, b, c, d in det.detect(frame).xyxy:
            cx, cy = (a + c) / 2, (b + d) / 2
            on_screen += 245 <= cx <= 305 and 35 <= cy <= 85
            on_item += 90 <= cy <= 150 and cx < 240
    assert (on_screen == 0) == excluded
    assert on_item >= 10  # the item is found either way


def test_motion_detector_sees_nothing_outside_a_polygon():
    zone = Zone.from_polygon(((20, 20), (310, 20), (20, 220)))  # the upper-left half
    det = MotionDetector(zone, MotionConfig(warmup_frames=5))
    found = []
    for frame in _frames(40, (0, 0, 1, 1), lambda i: 180 + 2 * (i - 20) if i >= 20 else None):
        found += [box for box in det.detect(frame).xyxy if box[0] > 170]
    # The item sits at y 90-150, x 180-260: only its upper-left corner lies in the triangle.
    assert all(zone.contains((a + c) / 2 - 10, b + 2) for a, b, c, d in found)
    assert all(d <= 150 and c <= 260 for _, _, c, d in found)


def test_crops_touching_a_polygon_edge_or_an_exclusion_count_as_cut():
    zone = Zone.from_polygon(TRIANGLE).excluding((((150, 170), (170, 170), (170, 195), (150, 195)),))
    assert not touches_edge(np.array([140, 100, 180, 140], np.float32), zone)  # well inside
    assert touches_edge(np.array([80, 120, 120, 160], np.float32), zone)  # its corner crosses the slope
    assert touches_edge(np.array([120, 140, 152, 168], np.float32), zone)  # next to the exclusion
    rect = Zone(40, 20, 280, 200)
    assert not touches_edge(np.array([80, 120, 120, 160], np.float32), rect)
    assert touches_edge(np.array([40, 120, 120, 160], np.float32), rect)


def test_onnx_detector_keeps_only_boxes_centred_where_the_zone_looks(tmp_path):
    from test_detector import _yolo_model  # the tiny YOLO-shaped graph of the detector tests

    config = OnnxDetectorConfig(model=str(_yolo_model(tmp_path / "tiny.onnx")), conf_threshold=0.5, classes=[0])
    red = np.zeros((200, 300, 3), np.uint8)
    red[..., 2] = 255
    zone = Zone(100, 50, 228, 114)  # its two boxes: centred at (164, 82) and (180, 106), see test_detector
    assert (
        len(make_detector(zone, DetectorConfig(kind="onnx", onnx=config)).detect(Frame(index=0, ts=0, image=red))) == 2
    )
    masked = zone.excluding((((170, 95), (228, 95), (228, 114), (170, 114)),))
    found = make_detector(masked, DetectorConfig(kind="onnx", onnx=config)).detect(Frame(index=0, ts=0, image=red))
    assert found.xyxy.tolist() == [pytest.approx([144, 62, 184, 102], abs=1.0)]
