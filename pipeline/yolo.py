"""YOLO detection heads: which output layout a model has, what its export metadata says, and the
boxes it gives.

Three layouts exist. Raw heads, decoded here and then put through NMS: channels-first
`(1, 4+C, N)` (YOLOv8 / v11) and channels-last `(1, N, 5+C)` with objectness (YOLOv5 / v7).
End-to-end heads, whose boxes are final: `(1, K, 6)` rows of [x1, y1, x2, y2, score, class]
(YOLOv10, YOLO26, any Ultralytics `nms=True` export; unused rows score 0). A one-class YOLOv5
head is also `(1, N, 6)`, so the layout is decided from the metadata Ultralytics writes into the
ONNX file, or from `detector.onnx.layout`, never guessed from the numbers: a misread layout
gives plausible-looking boxes that are wrong.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError

MAX_METADATA_CHARS = 256 * 1024  # a names dict of a few thousand classes; larger is not parsed
END_TO_END_COLUMNS = 6


class DetectorError(ReidError, ValueError):
    """A detection model that cannot be used; names the file."""


class YoloLayout(StrEnum):
    """How a detection model's output is laid out (`detector.onnx.layout`)."""

    AUTO = "auto"
    CHANNELS_FIRST = "yolov8"  # (1, 4+C, N): cx, cy, w, h, class scores
    CHANNELS_LAST = "yolov5"  # (1, N, 5+C): cx, cy, w, h, objectness, class scores
    END_TO_END = "end2end"  # (1, K, 6): x1, y1, x2, y2, score, class; already suppressed


@dataclass(frozen=True, kw_only=True)
class YoloMetadata:
    """What an exported model says about itself (ONNX metadata_props); None where it is silent."""

    names: dict[int, str] | None = None  # class id -> name
    imgsz: tuple[int, int] | None = None  # (height, width) it was exported for
    task: str | None = None  # "detect", "segment", "pose", ...
    end_to_end: bool | None = None  # boxes are final (end2end head or nms=True export)
    channels: int | None = None

    @property
    def num_classes(self) -> int | None:
        return len(self.names) if self.names is not None else None


def _literal(key: str, text: str, source: str) -> object:
    """A Python literal written by the exporter (`str(value)`), parsed without evaluating code."""
    if len(text) > MAX_METADATA_CHARS:
        raise DetectorError(f"{source}: metadata '{key}' is {len(text)} characters, more than {MAX_METADATA_CHARS}")
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise DetectorError(f"{source}: metadata '{key}' is not a Python literal: {text[:60]!r}") from None


def _names(value: object, source: str) -> dict[int, str]:
    if isinstance(value, list | tuple):
        value = dict(enumerate(value))
    if not (
        isinstance(value, dict)
        and all(isinstance(k, int) and not isinstance(k, bool) and isinstance(v, str) for k, v in value.items())
    ):
        raise DetectorError(f"{source}: metadata 'names' must map class ids to names, got {str(value)[:60]}")
    if sorted(value) != list(range(len(value))):
        raise DetectorError(f"{source}: metadata 'names' must number the classes 0..{len(value) - 1}")
    return value


def _imgsz(value: object, source: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 4096 for v in value)
    ):
        raise DetectorError(f"{source}: metadata 'imgsz' must be [height, width] in [32, 4096], got {value!r}")
    return int(value[0]), int(value[1])


def parse_metadata(props: Mapping[str, str], source: str) -> YoloMetadata:
    """The fields this package uses from a model's metadata_props (as Ultralytics and YOLOv5 write
    them: `str()` of Python values); absent fields stay None, malformed ones are an error."""
    literal = {key: _literal(key, props[key], source) for key in ("names", "imgsz") if key in props}
    end_to_end = None
    if "end2end" in props:
        end_to_end = props["end2end"].strip() == "True"
    if _export_args(props.get("args", ""), source).get("nms") is True:
        end_to_end = True
    channels = props.get("channels", "").strip()
    return YoloMetadata(
        names=_names(literal["names"], source) if "names" in literal else None,
        imgsz=_imgsz(literal["imgsz"], source) if "imgsz" in literal else None,
        task=props["task"].strip()[:40] if "task" in props else None,
        end_to_end=end_to_end,
        channels=int(channels) if channels.isdigit() and len(channels) < 4 else None,
    )


def _export_args(text: str, source: str) -> dict:
    """The export arguments (`args`), of which only `nms` matters here: one that cannot be read is
    no reason to refuse the model, so it counts as absent."""
    try:
        args = _literal("args", text, source) if text else {}
    except DetectorError:
        return {}
    return args if isinstance(args, dict) else {}


def check_metadata(meta: YoloMetadata, source: str) -> None:
    """Refuse what the metadata shows this detector cannot use."""
    if meta.task not in (None, "detect"):
        raise DetectorError(f"{source}: a '{meta.task}' model; the detector needs a 'detect' model")
    if meta.channels not in (None, 3):
        raise DetectorError(f"{source}: a {meta.channels}-channel model; the detector feeds 3-channel RGB")


def resolve_layout(shape: tuple[int, ...], layout: YoloLayout, meta: YoloMetadata) -> YoloLayout:
    """The layout of an output of `shape`: the configured one, or else from the metadata and
    the shape; an output that fits none is refused in one line naming its shape."""
    dims = f"detection output {tuple(shape)}"
    if len(shape) != 3 or shape[0] != 1:
        raise DetectorError(f"{dims}: expected (1, 4+C, N), (1, N, 5+C) or end-to-end (1, K, 6)")
    _, rows, cols = shape
    nc = meta.num_classes
    if layout is YoloLayout.AUTO:
        layout = _auto_layout(rows, cols, nc, meta.end_to_end, dims)
    fits = {
        YoloLayout.CHANNELS_FIRST: rows >= 5 and nc in (None, rows - 4),
        YoloLayout.CHANNELS_LAST: cols >= 5 and nc in (None, cols - 5),
        YoloLayout.END_TO_END: cols == END_TO_END_COLUMNS,
    }
    if not fits[layout]:
        classes = f" for {nc} classes" if nc is not None else ""
        raise DetectorError(f"{dims} does not fit the {layout} layout{classes}")
    return layout


def _auto_layout(rows: int, cols: int, nc: int | None, end_to_end: bool | None, dims: str) -> YoloLayout:
    if end_to_end:
        return YoloLayout.END_TO_END
    if nc is not None:
        fitting = [
            layout
            for layout, fits in (
                (YoloLayout.CHANNELS_FIRST, rows == 4 + nc),
                (YoloLayout.CHANNELS_LAST, cols == 5 + nc),
                (YoloLayout.END_TO_END, cols == END_TO_END_COLUMNS and end_to_end is None),
            )
            if fits
        ]
        if len(fitting) == 1:
            return fitting[0]
        if not fitting:
            raise DetectorError(f"{dims} fits no known layout for the {nc} classes its metadata names")
        raise DetectorError(f"{dims} could be {' or '.join(fitting)}: set detector.onnx.layout")
    if cols == END_TO_END_COLUMNS and rows > cols:
        raise DetectorError(
            f"{dims}: end-to-end boxes or a one-class YOLOv5 head? the model has no metadata; "
            "set detector.onnx.layout to 'end2end' or 'yolov5'"
        )
    if min(rows, cols) < 5:
        raise DetectorError(f"{dims}: expected (1, 4+C, N), (1, N, 5+C) or end-to-end (1, K, 6)")
    return YoloLayout.CHANNELS_FIRST if rows < cols else YoloLayout.CHANNELS_LAST


def decode_yolo(
    output: np.ndarray,
    conf_threshold: float,
    classes: list[int],
    *,
    layout: YoloLayout = YoloLayout.AUTO,
    meta: YoloMetadata = YoloMetadata(),
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, model-input pixels) and scores at or above `conf_threshold`, of the given
    class ids (all when empty)."""
    out = np.asarray(output, np.float32)
    layout = resolve_layout(out.shape, layout, meta)
    pred = out[0]
    if layout is YoloLayout.END_TO_END:
        return _end_to_end(pred, conf_threshold, classes, meta.num_classes)
    if layout is YoloLayout.CHANNELS_FIRST:
        pred = pred.T
        cls_scores = pred[:, 4:]
    else:
        cls_scores = pred[:, 5:] * pred[:, 4:5] if pred.shape[1] > 5 else pred[:, 4:5]
    _check_classes(classes, cls_scores.shape[1])
    if classes:
        cls_scores = cls_scores[:, classes]
    scores = cls_scores.max(axis=1)
    keep = scores >= conf_threshold
    cx, cy, w, h = pred[keep, 0], pred[keep, 1], pred[keep, 2], pred[keep, 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy.astype(np.float32), scores[keep].astype(np.float32)


def _end_to_end(
    pred: np.ndarray, conf_threshold: float, classes: list[int], num_classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    if num_classes is not None:
        _check_classes(classes, num_classes)
    keep = pred[:, 4] >= conf_threshold
    if classes:
        keep &= np.isin(np.rint(pred[:, 5]).astype(np.int64), classes)
    return pred[keep, :4].astype(np.float32), pred[keep, 4].astype(np.float32)


def _check_classes(classes: list[int], num_classes: int) -> None:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise DetectorError(f"detector.onnx.classes {bad} out of range: the model has {num_classes} classes")


def class_ids(wanted: list[int | str], meta: YoloMetadata, source: str) -> list[int]:
    """`detector.onnx.classes` as ids: names are looked up in the model's metadata."""
    by_name = {name: i for i, name in (meta.names or {}).items()}
    ids = []
    for c in wanted:
        if isinstance(c, int):
            ids.append(c)
        elif c in by_name:
            ids.append(by_name[c])
        elif meta.names is None:
            raise DetectorError(f"detector.onnx.classes: {c!r} is a name, but {source} names no classes; give ids")
        else:
            known = ", ".join(list(by_name)[:8]) + (", ..." if len(by_name) > 8 else "")
            raise DetectorError(f"detector.onnx.classes: {source} has no class {c!r} (it has {known})")
    if meta.num_classes is not None:
        _check_classes(ids, meta.num_classes)
    return ids
