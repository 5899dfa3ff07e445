"""Crop detectors: find the items in the scan zone of a frame.

`MotionDetector` (the default) needs no model: OpenCV's MOG2 background subtractor on the zone,
downscaled and blurred against sensor noise, a cleaned mask, one box per blob. `OnnxYoloDetector`
runs a user-supplied YOLO-style detection model on the zone instead (its output layouts and export
metadata: `pipeline/yolo.py`). Both return full-frame boxes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort

from retail_reid.pipeline.config import DetectorConfig, DetectorKind, MotionConfig, OnnxDetectorConfig
from retail_reid.pipeline.types import Detections, Frame, Zone
from retail_reid.pipeline.yolo import (
    DetectorError,
    YoloMetadata,
    check_metadata,
    class_ids,
    decode_yolo,
    parse_metadata,
    resolve_layout,
)

LETTERBOX_FILL = 114  # the grey YOLO models are trained to see as padding
GAIN_STRIDE = 3  # lighting gain is estimated on every 3rd pixel of every 3rd row


class Detector(Protocol):
    def detect(self, frame: Frame) -> Detections: ...


class MotionDetector:
    """Moving things in the zone, by background subtraction.

    Lighting: each frame is divided by its gain against the learnt background (per colour
    channel, the median ratio over pixels that were background last frame), so drift and tint
    do not read as motion; an uneven change that still floods much of the zone at once relearns
    the background.
    Noise: blur before, morphological opening after, a minimum blob area. A hand holding an item
    joins its blob; the box is shrunk to the blob's dominant body (`core`), which drops the
    thinner hand and wrist.
    Zone shape: outside a polygonal zone and inside its exclusions the mask is always empty, and
    those pixels count neither towards the share of the zone that changed nor towards the gain.
    """

    def __init__(self, zone: Zone, config: MotionConfig | None = None):
        self.zone = zone
        self.config = config = config or MotionConfig()
        self._size = (max(8, round(zone.width * config.scale)), max(8, round(zone.height * config.scale)))
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=config.history, varThreshold=config.var_threshold, detectShadows=False
        )
        self._subtractor.setBackgroundRatio(config.background_ratio)
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
        # Where the zone looks, at working scale (None: all of it).
        self._looks = None if zone.is_rect else cv2.resize(zone.mask, self._size, interpolation=cv2.INTER_NEAREST) > 0
        self._area = self._size[0] * self._size[1] if self._looks is None else max(1, int(self._looks.sum()))
        self._still = np.ones(self._size[::-1], bool) if self._looks is None else self._looks.copy()
        self._frames = 0
        self._share = 0.0  # foreground share of the zone last frame
        self.relearned = 0  # sudden lighting changes absorbed

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        z = self.zone
        roi = image[z.y1 : z.y2, z.x1 : z.x2]
        small = cv2.resize(roi, self._size, interpolation=cv2.INTER_AREA)
        b = self.config.blur
        return cv2.GaussianBlur(small, (b, b), 0) if b > 1 else small

    def _compensate(self, small: np.ndarray) -> np.ndarray:
        """Undo the global gain (per channel) between this frame and the background model."""
        background = self._subtractor.getBackgroundImage()
        if background is None:
            return small
        # A sparse grid of pixels is plenty for three numbers, and keeps this cheap.
        still = self._still[::GAIN_STRIDE, ::GAIN_STRIDE]
        ref = background[::GAIN_STRIDE, ::GAIN_STRIDE][still].astype(np.float32)
        cur = small[::GAIN_STRIDE, ::GAIN_STRIDE][still].astype(np.float32)
        usable = ref.min(axis=1) > 8  # ratios of near-black pixels are all noise
        if np.count_nonzero(usable) < 50:
            return small
        gain = np.median(cur[usable] / ref[usable], axis=0)
        # a per-channel scalar, which cv2 takes though its stubs ask for an array
        return cv2.multiply(small, (*(float(g) for g in 1.0 / gain), 0.0))  # type: ignore[call-overload]

    def mask(self, frame: Frame) -> np.ndarray:
        """The cleaned foreground mask of the zone at working scale (uint8, 0 or 255)."""
        small = self._prepare(frame.image)
        self._frames += 1
        if self._frames <= self.config.warmup_frames:
            self._subtractor.apply(small, learningRate=1.0 if self._frames == 1 else -1)
            return np.zeros(small.shape[:2], np.uint8)
        small = self._compensate(small)
        mask = self._subtractor.apply(small)
        if self._looks is not None:
            mask[~self._looks] = 0
        share = np.count_nonzero(mask) / self._area
        jump, self._share = share - self._share, share
        # Items slide in from the zone's edge a few percent of it per frame; light falls on
        # much of it at once. Either sign means: this is the new background.
        if share > self.config.relearn_above or jump > self.config.relearn_jump:
            self._subtractor.apply(small, learningRate=1.0)
            self.relearned += 1
            self._still[:] = True if self._looks is None else self._looks
            self._share = 0.0
            return np.zeros_like(mask)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close)
        self._still = cv2.dilate(mask, self._close) == 0
        if self._looks is not None:
            self._still &= self._looks
        return mask

    def detect(self, frame: Frame) -> Detections:
        mask = self.mask(frame)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        min_area = self.config.min_area * self._area
        boxes, scores = [], []
        for i in range(1, n):
            x, y, w, h, area = stats[i]
            if area < min_area:
                continue
            if self.config.core > 0:
                x, y, w, h = dominant_body(labels[y : y + h, x : x + w] == i, self.config.core, (x, y))
            boxes.append((x, y, x + w, y + h))
            scores.append(area / (w * h))  # fill ratio: a solid object scores higher than a scatter
        if not boxes:
            return Detections.empty()
        xyxy = np.asarray(boxes, np.float32)
        sx, sy = self.zone.width / self._size[0], self.zone.height / self._size[1]
        xyxy = xyxy * np.array([sx, sy, sx, sy], np.float32) + np.array([self.zone.x1, self.zone.y1] * 2, np.float32)
        return Detections.from_boxes(xyxy, scores)


def dominant_body(blob: np.ndarray, ratio: float, origin: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (x, y, w, h) of a blob's thickest part: the pixels deeper inside it than `ratio` of
    its largest inscribed radius, around the deepest point, grown back by that depth. A product
    is thicker than the hand and wrist holding it, so they fall away; the product's own outline
    survives (eroding and re-growing a convex shape gives it back)."""
    padded = np.pad(blob.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)
    depth = float(dist.max())
    if depth < 2:
        return origin[0], origin[1], blob.shape[1], blob.shape[0]
    cut = ratio * depth
    _, labels = cv2.connectedComponents((dist >= cut).astype(np.uint8))
    peak = labels[np.unravel_index(int(np.argmax(dist)), dist.shape)]
    ys, xs = np.nonzero(labels == peak)
    x1 = max(0, int(xs.min() - 1 - cut))
    y1 = max(0, int(ys.min() - 1 - cut))
    x2 = min(blob.shape[1], int(np.ceil(xs.max() - 1 + cut)) + 1)
    y2 = min(blob.shape[0], int(np.ceil(ys.max() - 1 + cut)) + 1)
    return origin[0] + x1, origin[1] + y1, x2 - x1, y2 - y1


def letterbox(image: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to shape (height, width); returns (image, scale, (pad_x, pad_y))."""
    h, w = image.shape[:2]
    th, tw = shape
    r = min(th / h, tw / w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    px, py = (tw - nw) // 2, (th - nh) // 2
    out = cv2.copyMakeBorder(
        resized, py, th - nh - py, px, tw - nw - px, cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3
    )
    return out, r, (px, py)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-agnostic non-maximum suppression (OpenCV's); returns kept indices, best first."""
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou_threshold)
    return np.asarray(idx, np.int64).reshape(-1)


class OnnxYoloDetector:
    """A YOLO-style ONNX model run on the zone: letterbox, decode, class-agnostic NMS."""

    def __init__(self, zone: Zone, config: OnnxDetectorConfig):
        path = Path(config.model)
        if not path.is_file():
            raise DetectorError(f"{path}: detection model file not found")
        opts = ort.SessionOptions()
        threads = int(os.environ.get("REID_THREADS", "0"))  # as the embedder: 0 lets onnxruntime choose
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise DetectorError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise DetectorError(f"{path}: expected one NCHW image input, found {[(i.name, i.shape) for i in inputs]}")
        batch = inputs[0].shape[0]
        if isinstance(batch, int) and batch != 1:
            raise DetectorError(f"{path}: the model takes batches of {batch} images; export it with batch=1")
        self._input = inputs[0].name
        self.meta: YoloMetadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        check_metadata(self.meta, str(path))
        self.size = self._input_shape(inputs[0].shape, config.input_size)
        self.classes = class_ids(config.classes, self.meta, str(path))
        self.layout = config.layout
        shape = self.session.get_outputs()[0].shape
        if all(isinstance(d, int) for d in shape):  # a fixed output is checked now, a dynamic one at the first frame
            self.layout = resolve_layout(tuple(shape), config.layout, self.meta)
        self.zone = zone
        self.config = config
        self.path = path

    def _input_shape(self, shape: list, input_size: int) -> tuple[int, int]:
        """(height, width) the zone is letterboxed to: the model's fixed input, else the size it
        was exported for (metadata `imgsz`), else `detector.onnx.input_size`."""
        fixed = shape[2:]
        if all(isinstance(d, int) and d > 0 for d in fixed):
            return int(fixed[0]), int(fixed[1])
        return self.meta.imgsz or (input_size, input_size)

    def detect(self, frame: Frame) -> Detections:
        z = self.zone
        roi = frame.image[z.y1 : z.y2, z.x1 : z.x2]
        boxed, r, (px, py) = letterbox(roi, self.size)
        tensor = np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255.0
        output = self.session.run(None, {self._input: tensor})[0]
        xyxy, scores = decode_yolo(output, self.config.conf_threshold, self.classes, layout=self.layout, meta=self.meta)
        keep = nms(xyxy, scores, self.config.iou_threshold)
        xyxy, scores = xyxy[keep], scores[keep]
        xyxy = (xyxy - np.array([px, py, px, py], np.float32)) / r + np.array([z.x1, z.y1, z.x1, z.y1], np.float32)
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(z.x1, z.x2)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(z.y1, z.y2)
        keep = ((xyxy[:, 2] - xyxy[:, 0]) >= 2) & ((xyxy[:, 3] - xyxy[:, 1]) >= 2)
        if not z.is_rect:  # an item counts where its box's centre is: in the polygon, not in an exclusion
            keep &= np.array([z.contains((a + c) / 2, (b + d) / 2) for a, b, c, d in xyxy], bool)
        return Detections.from_boxes(xyxy[keep], scores[keep])


def make_detector(zone: Zone, config: DetectorConfig) -> Detector:
    """The detector the config chooses."""
    if config.kind is DetectorKind.ONNX:
        return OnnxYoloDetector(zone, config.onnx)
    return MotionDetector(zone, config.motion)
