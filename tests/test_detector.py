"""Crop detectors and the scan zone: background subtraction on generated lane footage with a real
product photo, noise, lighting drift and a hand; the ONNX detector with a tiny model built here."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from retail_reid.cli import main
from retail_reid.images import read_image
from retail_reid.pipeline.config import DetectorConfig, MotionConfig, OnnxDetectorConfig
from retail_reid.pipeline.detector import (
    DetectorError,
    MotionDetector,
    OnnxYoloDetector,
    decode_yolo,
    dominant_body,
    letterbox,
    make_detector,
    nms,
)
from retail_reid.pipeline.tracker import iou_matrix
from retail_reid.pipeline.types import Frame, Zone, ZoneError

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "grocery" / "val"
W, H = 320, 240
ZONE = Zone(80, 30, 260, 210)
ITEM = 64  # product side in pixels


def _background(rng: np.random.Generator) -> np.ndarray:
    bg = np.full((H, W, 3), 70.0, np.float32)
    bg += cv2.GaussianBlur(rng.normal(0, 10, (H, W)).astype(np.float32), (0, 0), 2)[..., None]
    bg[100:140] += 30  # a stripe across the belt
    return bg


def _scene(n: int, x_at, gain_at, seed: int = 0):
    """Frames of an item (a real photo, held by a hand from below) at x_at(i), under gain_at(i),
    with sensor noise; returns frames and the item's true boxes (None when off-frame)."""
    rng = np.random.default_rng(seed)
    bg = _background(rng)
    photo = cv2.resize(read_image(next((SAMPLE / "Granny-Smith").iterdir())), (ITEM, ITEM)).astype(np.float32)
    frames, boxes = [], []
    for i in range(n):
        img = bg.copy()
        x = x_at(i)
        box = None
        if x is not None:
            y = 90
            x0, x1 = max(0, x), min(W, x + ITEM)
            if x1 > x0:
                img[y : y + ITEM, x0:x1] = photo[:, x0 - x : x1 - x]
                cx = x + ITEM // 2
                cv2.ellipse(img, (cx, y + ITEM + 8), (14, 12), 0, 0, 360, (120, 150, 205), -1)  # palm
                cv2.line(img, (cx, y + ITEM + 8), (cx - 10, y + ITEM + 40), (120, 150, 205), 12)  # wrist
                for k in (-9, -3, 3, 9):
                    cv2.line(img, (cx, y + ITEM + 8), (cx + k, y + ITEM - 6), (120, 150, 205), 3)  # fingers
                box = (x0, y, x1, y + ITEM)
        img = img * gain_at(i) + rng.normal(0, 3, img.shape)
        frames.append(Frame(index=i, ts=i / 15, image=np.clip(img, 0, 255).astype(np.uint8)))
        boxes.append(box)
    return frames, boxes


def _inside(box) -> bool:
    return box is not None and box[0] >= ZONE.x1 + 4 and box[2] <= ZONE.x2 - 4


def _run(frames, truth, config: MotionConfig):
    """Detections per frame; asserts nothing is found in frames without an item in the zone."""
    det = MotionDetector(ZONE, config)
    boxes, empty_frames = [], 0
    for frame, box in zip(frames, truth, strict=True):
        found = det.detect(frame)
        if frame.index >= config.warmup_frames + 2 and (box is None or box[2] <= ZONE.x1 - 12):
            assert len(found) == 0, f"frame {frame.index}: noise or drift detected as an item: {found.xyxy}"
            empty_frames += 1
        if _inside(box):
            assert len(found) == 1, f"frame {frame.index}: expected one item, got {len(found)}"
            boxes.append((box, found.xyxy[0]))
    assert empty_frames >= 15 and len(boxes) >= 10
    return boxes


def test_motion_detector_boxes_the_item_not_the_hand_under_noise_and_drift():
    n = 80
    frames, truth = _scene(n, lambda i: None if i < 20 else -ITEM + (i - 20) * 7, lambda i: 1.0 + 0.25 * i / n)
    found = _run(frames, truth, MotionConfig())
    ious = [float(iou_matrix(np.array([t], np.float32), b[None])[0, 0]) for t, b in found]
    assert min(ious) >= 0.6 and np.median(ious) >= 0.7, ious
    # The hand hangs 50 px below the item; the box keeps at most a knuckle of it.
    assert all(b[3] <= t[3] + 20 for t, b in found)
    whole = _run(frames, truth, MotionConfig(core=0.0))
    assert all(b[3] >= t[3] + 40 for t, b in whole)


def test_motion_detector_ignores_a_sudden_change_of_light():
    # Everything brighter at once: the gain compensation takes it.
    frames, _ = _scene(40, lambda i: None, lambda i: 1.0 if i < 25 else 1.6)
    det = MotionDetector(ZONE, MotionConfig())
    assert sum(len(det.detect(f)) for f in frames) == 0
    # A light coming on over one side (uneven, so no single gain explains it): relearnt.
    ramp = np.linspace(1.0, 2.5, W, dtype=np.float32)[None, :, None]
    frames = [
        Frame(
            index=f.index, ts=f.ts, image=f.image if f.index < 25 else np.clip(f.image * ramp, 0, 255).astype(np.uint8)
        )
        for f in frames
    ]
    det = MotionDetector(ZONE, MotionConfig())
    assert sum(len(det.detect(f)) for f in frames) == 0
    assert det.relearned >= 1


def test_motion_detector_sees_only_the_zone():
    # An item moving outside the zone (left part of the frame) is not detected.
    frames, truth = _scene(40, lambda i: None if i < 15 else 2 + (i - 15) // 4, lambda i: 1.0)
    assert all(b is None or b[2] < ZONE.x1 for b in truth)
    det = MotionDetector(ZONE, MotionConfig())
    assert sum(len(det.detect(f)) for f in frames) == 0


def test_dominant_body_drops_a_thin_arm():
    blob = np.zeros((120, 160), bool)
    blob[20:80, 40:100] = True  # the product, 60 x 60
    cv2.ellipse(blob.view(np.uint8), (70, 92), (14, 12), 0, 0, 360, 1, -1)  # palm under it
    blob[92:120, 64:76] = True  # wrist down to the edge
    x, y, w, h = dominant_body(blob, 0.5, (5, 7))
    assert abs(x - 45) <= 2 and abs(y - 27) <= 2 and abs(w - 60) <= 3 and abs(h - 60) <= 3


# --- the ONNX (YOLO-style) detector ------------------------------------------------------------


def test_letterbox_keeps_aspect_and_centres():
    img = np.full((50, 100, 3), 200, np.uint8)
    out, r, (px, py) = letterbox(img, (64, 64))
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.64) and (px, py) == (0, 16)
    assert (out[:16] == 114).all() and (out[16:48] == 200).all() and (out[48:] == 114).all()
    out, r, (px, py) = letterbox(img, (40, 100))  # a rectangular input (height 40, width 100)
    assert out.shape == (40, 100, 3) and r == pytest.approx(0.8) and (px, py) == (10, 0)


def test_decode_yolo_reads_both_layouts():
    # YOLOv8 layout (1, 4+C, N): two classes, three candidates.
    v8 = np.zeros((1, 6, 8), np.float32)  # real heads have thousands of candidates; unused ones score 0
    v8[0, :, :3] = [[10, 30, 50], [10, 30, 50], [4, 4, 4], [4, 4, 4], [0.9, 0.1, 0.2], [0.05, 0.8, 0.1]]
    boxes, scores = decode_yolo(v8, 0.5, [])
    assert boxes.tolist() == [[8, 8, 12, 12], [28, 28, 32, 32]] and scores == pytest.approx([0.9, 0.8])
    boxes, scores = decode_yolo(v8, 0.5, [1])
    assert boxes.tolist() == [[28, 28, 32, 32]]
    # YOLOv5 layout (1, N, 5+C) with objectness: score = objectness * class score.
    v5 = np.array(
        [
            [
                [10, 10, 4, 4, 0.5, 0.9, 0.1],
                [30, 30, 4, 4, 1.0, 0.2, 0.7],
                [50, 50, 4, 4, 0.9, 0.9, 0.9],
                [70, 70, 4, 4, 0.1, 0.9, 0.9],
                [90, 90, 4, 4, 0.0, 0.0, 0.0],
                [5, 5, 2, 2, 0.0, 0.0, 0.0],
                [6, 6, 2, 2, 0.0, 0.0, 0.0],
                [7, 7, 2, 2, 0.0, 0.0, 0.0],
            ]
        ],
        np.float32,
    )
    boxes, scores = decode_yolo(v5, 0.6, [])
    assert scores == pytest.approx([0.7, 0.81])
    with pytest.raises(DetectorError, match="out of range"):
        decode_yolo(v8, 0.5, [5])


def test_nms_is_class_agnostic():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]], np.float32)
    keep = nms(boxes, np.array([0.6, 0.9, 0.5], np.float32), 0.45)
    assert keep.tolist() == [1, 2]


def _yolo_model(path: Path, size: int = 64) -> Path:
    """A graph with YOLOv8-shaped output (1, 4+2, 3) whose boxes are fixed (in input pixels) and
    whose class-0 score is the mean of the input's first channel (red, when fed RGB) times a
    per-box weight: so the test sees letterboxing, colour order and scaling to [0, 1] at once."""
    onnx = pytest.importorskip("onnx")  # the [train] extra; without it this test is skipped
    from onnx import TensorProto, helper

    boxes = np.zeros((1, 4, 8), np.float32)  # cx, cy, w, h rows; 8 candidates, the last 5 of size 0
    boxes[0, :, :3] = [[32, 32, 40], [32, 34, 46], [20, 20, 8], [20, 20, 12]]
    weights = np.array([[[1.0, 0.9, 1.0, 0, 0, 0, 0, 0]]], np.float32)
    nodes = [
        helper.make_node("Slice", ["images", "c0", "c1", "axis1"], ["red"]),
        helper.make_node("ReduceMean", ["red"], ["mean"], keepdims=0),
        helper.make_node("Reshape", ["mean", "shape111"], ["m1"]),
        helper.make_node("Mul", ["m1", "weights"], ["cls0"]),  # (1, 1, 3)
        helper.make_node("Sub", ["one", "cls0"], ["cls1"]),
        helper.make_node("Concat", ["boxes", "cls0", "cls1"], ["output0"], axis=1),
    ]
    inits = [
        helper.make_tensor("boxes", TensorProto.FLOAT, boxes.shape, boxes.ravel()),
        helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.ravel()),
        helper.make_tensor("c0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("c1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("shape111", TensorProto.INT64, [3], [1, 1, 1]),
        helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_detector_maps_boxes_back_through_the_letterbox(tmp_path):
    model = _yolo_model(tmp_path / "tiny.onnx")
    zone = Zone(100, 50, 228, 114)  # 128 x 64: scale 0.5, padded 16 px above and below in the 64 px input
    config = OnnxDetectorConfig(model=str(model), conf_threshold=0.5, classes=[0])
    det = make_detector(zone, DetectorConfig(kind="onnx", onnx=config))
    assert isinstance(det, OnnxYoloDetector) and det.size == (64, 64)
    red = np.zeros((200, 300, 3), np.uint8)
    red[..., 2] = 255  # BGR red; as RGB input its first channel's mean is (1 + 114/255) / 2 = 0.72 with the padding
    found = det.detect(Frame(index=0, ts=0.0, image=red))
    assert found.confidence.tolist() == pytest.approx([0.724, 0.724], abs=0.01)
    # Boxes 0 and 1 overlap heavily: NMS keeps the stronger, box 0. Input pixels map back as
    # x / 0.5 + 100 and (y - 16) / 0.5 + 50; box 2 is cut at the zone's bottom edge.
    assert sorted(found.xyxy.tolist()) == [
        pytest.approx([144, 62, 184, 102], abs=1.0),
        pytest.approx([172, 98, 188, 114], abs=1.0),
    ]
    blue = np.zeros((200, 300, 3), np.uint8)
    blue[..., 0] = 255  # fed as RGB, the red channel is empty: class 0 scores 0.22, below the threshold
    assert len(det.detect(Frame(index=1, ts=0.1, image=blue))) == 0


def test_onnx_detector_refuses_a_missing_or_broken_model(tmp_path):
    with pytest.raises(DetectorError, match="not found"):
        OnnxYoloDetector(ZONE, OnnxDetectorConfig(model=str(tmp_path / "none.onnx")))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="not a loadable ONNX model"):
        OnnxYoloDetector(ZONE, OnnxDetectorConfig(model=str(bad)))


# --- the zone ----------------------------------------------------------------------------------


def test_zone_parsing_and_clipping():
    assert Zone.parse(" 1, 2,30,40") == Zone(1, 2, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "10,10,5,20"):
        with pytest.raises(ZoneError):
            Zone.parse(bad)
    z, warning = Zone(-10, 5, 100, 500).clip(320, 240)
    assert z == Zone(0, 5, 100, 240) and "clipped to 0,5,100,240" in warning
    assert Zone(0, 0, 320, 240).clip(320, 240) == (Zone(0, 0, 320, 240), None)
    with pytest.raises(ZoneError, match="wholly outside"):
        Zone(400, 0, 500, 100).clip(320, 240)


def test_an_inverted_or_empty_zone_says_what_is_wrong(tmp_path, capsys):
    with pytest.raises(ZoneError, match=r"^--zone: zone 300,10,100,200 is inverted: x2 100 is less than x1 300"):
        Zone.parse("300,10,100,200", "--zone")
    with pytest.raises(ZoneError, match=r"^zone: zone 1,5,30,5 has zero height: y1 = y2 = 5$"):
        Zone.parse("1,5,30,5")
    with pytest.raises(ZoneError, match=r"zone 7,1,7,9 has zero width: x1 = x2 = 7$"):
        Zone(7, 1, 7, 9)
    args = ["replay", "v.mp4", "--pos", "p.jsonl", "--gallery", "g", "--out", str(tmp_path / "o")]
    assert main([*args, "--zone", "10,200,300,100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid replay: error: --zone: zone 10,200,300,100 is inverted: y2 100 is less than y1 200")
    assert "four integers" not in err
