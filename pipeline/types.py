"""The plain data that flows from one lane stage to the next: frames, zone, detections, crops and
item passes (the events and pass records they end in are in `retail_reid.pipeline.records`).
Stages share nothing else, so each can be swapped or tested alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TypeGuard

import cv2
import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError


class ZoneError(ReidError, ValueError):
    """A scan zone that is malformed or lies outside the frame."""


class Unverifiable(StrEnum):
    """Why the camera cannot check a scan: the camera was down when it was made, or the scan names
    a barcode the gallery's catalogue lacks or a SKU the gallery holds no photos of."""

    CAMERA_DOWN = "camera_down"
    UNKNOWN_BARCODE = "unknown_barcode"
    UNKNOWN_SKU = "unknown_sku"


@dataclass(frozen=True)
class ScanWarning:
    """A scan the camera cannot check: why (`reason`), and a line for people naming the scan."""

    reason: Unverifiable
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One decoded camera frame; `ts` is seconds on the camera clock (container time when replaying)."""

    index: int
    ts: float
    image: np.ndarray  # uint8 BGR, H x W x 3


Point = tuple[int, int]
Polygon = tuple[Point, ...]  # corners in order, frame pixels


@dataclass(frozen=True)
class Zone:
    """The scan zone in frame pixels: the rectangle x1, y1 to x2, y2 (exclusive), or a polygon
    (`polygon`; the rectangle is then its bounding box), less the areas in `exclude` (the
    cashier's side, the bagging area, a screen that flickers), where nothing is ever detected."""

    x1: int
    y1: int
    x2: int
    y2: int
    polygon: Polygon = ()  # empty: the whole rectangle
    exclude: tuple[Polygon, ...] = ()

    def __post_init__(self) -> None:
        for axis, lo, hi in (("x", self.x1, self.x2), ("y", self.y1, self.y2)):
            if hi < lo:
                raise ZoneError(
                    f"zone {self.as_text()} is inverted: {axis}2 {hi} is less than {axis}1 {lo} "
                    "(give the top-left corner first, then the bottom-right: X1,Y1,X2,Y2)"
                )
            if hi == lo:
                raise ZoneError(
                    f"zone {self.as_text()} has zero {'width' if axis == 'x' else 'height'}: {axis}1 = {axis}2 = {lo}"
                )

    @classmethod
    def from_polygon(cls, points: Polygon, exclude: tuple[Polygon, ...] = (), where: str = "zone") -> Zone:
        """A polygonal zone; its rectangle is the polygon's bounding box."""
        if len(points) < 3:
            raise ZoneError(f"{where}: a polygon needs at least three corners, got {len(points)}")
        xs, ys = [x for x, _ in points], [y for _, y in points]
        if cv2.contourArea(np.asarray(points, np.float32)) < 1:
            raise ZoneError(f"{where}: the polygon {_points_text(points)} encloses no area")
        return cls(min(xs), min(ys), max(xs), max(ys), tuple(points), exclude)

    @classmethod
    def parse(cls, text: str, where: str = "zone") -> Zone:
        """'X1,Y1,X2,Y2' (a rectangle) or 'X,Y;X,Y;X,Y;...' (a polygon's corners), integers, as
        given on the command line."""
        text = str(text)
        if ";" in text:
            try:
                points = tuple(_point(p.split(",")) for p in text.split(";") if p.strip())
            except ValueError:
                raise ZoneError(f"{where}: expected polygon corners X,Y;X,Y;X,Y (integers), got {text!r}") from None
            return cls.from_polygon(points, where=where)
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) != 4:
                raise ValueError
            values = [int(p) for p in parts]
        except ValueError:
            raise ZoneError(
                f"{where}: expected four integers X1,Y1,X2,Y2 or polygon corners X,Y;X,Y;X,Y, got {text!r}"
            ) from None
        x1, y1, x2, y2 = values
        try:
            return cls(x1, y1, x2, y2)
        except ZoneError as e:
            raise ZoneError(f"{where}: {e}") from None

    @classmethod
    def from_list(cls, values: object, where: str = "zone") -> Zone:
        """[x1, y1, x2, y2] (a rectangle) or [[x, y], [x, y], [x, y], ...] (a polygon), as a
        config file gives them."""
        if _is_points(values):
            return cls.from_polygon(polygon_from_list(values, where), where=where)
        return cls._rect(values, where)

    @classmethod
    def _rect(cls, values: object, where: str) -> Zone:
        if not _is_ints(values, 4):
            raise ZoneError(
                f"{where}: expected [x1, y1, x2, y2] or a polygon [[x, y], [x, y], [x, y], ...] "
                f"(integers), got {values!r}"
            )
        x1, y1, x2, y2 = values
        return cls(x1, y1, x2, y2)

    def excluding(self, areas: tuple[Polygon, ...]) -> Zone:
        """The zone less these areas as well (the ones it already leaves out stay out)."""
        return replace(self, exclude=self.exclude + tuple(areas)) if areas else self

    def as_text(self) -> str:
        if self.polygon:
            return _points_text(self.polygon)
        return f"{self.x1},{self.y1},{self.x2},{self.y2}"

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def is_rect(self) -> bool:
        """The whole rectangle is looked at (no polygon, nothing excluded): the cheap case."""
        return not self.polygon and not self.exclude

    @cached_property
    def mask(self) -> np.ndarray:
        """uint8 (height, width) over the rectangle: 255 where the zone looks, 0 where it does not."""
        if self.is_rect:
            return np.full((self.height, self.width), 255, np.uint8)
        m = np.zeros((self.height, self.width), np.uint8)
        origin = np.array([self.x1, self.y1], np.int32)
        if self.polygon:
            cv2.fillPoly(m, [np.asarray(self.polygon, np.int32) - origin], 255)
        else:
            m[:] = 255
        for area in self.exclude:
            cv2.fillPoly(m, [np.asarray(area, np.int32) - origin], 0)
        if not m.any():
            raise ZoneError(f"zone {self.as_text()}: its exclusions cover all of it")
        return m

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (frame pixels) lies where the zone looks."""
        ix, iy = int(x) - self.x1, int(y) - self.y1
        return 0 <= ix < self.width and 0 <= iy < self.height and bool(self.mask[iy, ix])

    def clip(self, width: int, height: int) -> tuple[Zone, str | None]:
        """The zone cut to a width x height frame, with a warning if it had to be cut.
        A zone wholly outside the frame is an error: nothing could ever be seen in it."""
        x1, y1 = max(0, self.x1), max(0, self.y1)
        x2, y2 = min(width, self.x2), min(height, self.y2)
        if x2 <= x1 or y2 <= y1:
            raise ZoneError(f"zone {self.as_text()} lies wholly outside the {width}x{height} frame")
        if (x1, y1, x2, y2) == (self.x1, self.y1, self.x2, self.y2):
            return self, None
        polygon = tuple((min(max(x, 0), width), min(max(y, 0), height)) for x, y in self.polygon)
        clipped = replace(self, x1=x1, y1=y1, x2=x2, y2=y2, polygon=polygon)
        return (
            clipped,
            f"zone {self.as_text()} reaches outside the {width}x{height} frame; clipped to {clipped.as_text()}",
        )


def polygon_from_list(values: object, where: str) -> Polygon:
    """[[x, y], ...] (at least three corners, integers) as a polygon."""
    if not _is_points(values) or len(values) < 3:
        raise ZoneError(f"{where}: expected a polygon [[x, y], [x, y], [x, y], ...] (integers), got {values!r}")
    return tuple((int(x), int(y)) for x, y in values)


def areas_from_list(values: object, where: str) -> tuple[Polygon, ...]:
    """A config's list of areas, each a rectangle [x1, y1, x2, y2] or a polygon [[x, y], ...]."""
    if not isinstance(values, (list, tuple)):
        raise ZoneError(f"{where}: expected a list of areas ([x1, y1, x2, y2] or [[x, y], ...]), got {values!r}")
    areas = []
    for i, v in enumerate(values):
        z = Zone.from_list(v, f"{where}[{i}]")
        areas.append(z.polygon or ((z.x1, z.y1), (z.x2, z.y1), (z.x2, z.y2), (z.x1, z.y2)))
    return tuple(areas)


def _is_ints(values: object, n: int) -> TypeGuard[Sequence[int]]:
    return (
        isinstance(values, (list, tuple))
        and len(values) == n
        and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    )


def _is_points(values: object) -> TypeGuard[Sequence[Sequence[int]]]:
    return isinstance(values, (list, tuple)) and bool(values) and all(_is_ints(v, 2) for v in values)


def _point(parts: list[str]) -> Point:
    if len(parts) != 2:
        raise ValueError
    return int(parts[0]), int(parts[1])


def _points_text(points: Polygon) -> str:
    return ";".join(f"{x},{y}" for x, y in points)


@dataclass(frozen=True)
class Detections:
    """Boxes found in one frame, as supervision's Detections: arrays that travel together through
    detector, tracker and crop selection. `tracker_id` is -1 until a tracker assigns one."""

    xyxy: np.ndarray  # (N, 4) float32, full-frame pixels
    confidence: np.ndarray  # (N,) float32
    tracker_id: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.confidence.shape != (n,) or self.tracker_id.shape != (n,):
            raise ValueError(
                f"detections arrays disagree: xyxy {self.xyxy.shape}, confidence {self.confidence.shape}, "
                f"tracker_id {self.tracker_id.shape}"
            )

    @classmethod
    def from_boxes(cls, xyxy: np.ndarray | list, confidence: np.ndarray | list | None = None) -> Detections:
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        conf = np.ones(len(boxes), np.float32) if confidence is None else np.asarray(confidence, np.float32).reshape(-1)
        return cls(boxes, conf, np.full(len(boxes), -1, np.int64))

    @classmethod
    def empty(cls) -> Detections:
        return cls.from_boxes(np.zeros((0, 4), np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def with_tracker_ids(self, ids: np.ndarray) -> Detections:
        return Detections(self.xyxy, self.confidence, np.asarray(ids, np.int64))


@dataclass(frozen=True, kw_only=True)
class Crop:
    """A picture of a tracked item cut from one frame, with how useful it is for recognition."""

    image: np.ndarray  # uint8 BGR
    ts: float  # camera clock
    box: tuple[int, int, int, int]  # full-frame pixels
    quality: float  # higher is better; see pipeline.crops


@dataclass(frozen=True, kw_only=True)
class ItemPass:
    """One item's pass through the scan zone: a finished track with its best crops."""

    track_id: int
    t_start: float  # camera clock, first frame the item was seen
    t_end: float  # camera clock, last frame the item was seen
    frames: int  # frames in which the item was detected
    crops: tuple[Crop, ...]
