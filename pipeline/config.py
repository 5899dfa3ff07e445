"""The lane's settings: a TOML file mapped onto dataclasses whose defaults suit a 640x480, 15 fps
checkout camera. Unknown keys and wrong types are errors naming the file and the key, so a typo
never silently falls back to a default."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from retail_reid.compat import StrEnum, tomllib
from retail_reid.errors import ReidError
from retail_reid.pipeline.types import Polygon, Zone, ZoneError, areas_from_list
from retail_reid.pipeline.yolo import YoloLayout

DETECTOR_KINDS = ("motion", "onnx")

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = typing.TypeVar("T", bound="DataclassInstance")  # a settings dataclass


class ConfigError(ReidError, ValueError):
    """A config file or value that cannot be used; names the file and key."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class MotionConfig:
    """Background subtraction (OpenCV MOG2) inside the zone."""

    scale: float = 0.5  # the zone is processed at this scale: speed, and fewer noise specks
    history: int = 500  # frames MOG2 remembers: long, so an item resting on the scanner stays foreground
    background_ratio: float = 0.7  # MOG2 weight share that is background; lower keeps resting items longer
    var_threshold: float = 32.0  # MOG2 squared-distance threshold: higher ignores more sensor noise
    blur: int = 5  # Gaussian kernel (odd, pixels at scale) applied before subtraction, against noise
    min_area: float = 0.02  # smallest blob, as a share of the zone's area
    core: float = 0.7  # box only the blob's part deeper than this share of its thickest point (0: whole blob)
    relearn_above: float = 0.7  # foreground share of the zone treated as a change of light: relearn
    relearn_jump: float = 0.3  # ... and so is a rise of the share by this much from one frame to the next
    warmup_frames: int = 10  # frames that only teach the background at start

    def __post_init__(self) -> None:
        _check(0.1 <= self.scale <= 1.0, "detector.motion.scale", f"must be in [0.1, 1], got {self.scale}")
        _check(self.history >= 2, "detector.motion.history", f"must be at least 2, got {self.history}")
        _check(
            0 < self.background_ratio < 1,
            "detector.motion.background_ratio",
            f"must be in (0, 1), got {self.background_ratio}",
        )
        _check(0 <= self.core < 1, "detector.motion.core", f"must be in [0, 1), got {self.core}")
        _check(self.var_threshold > 0, "detector.motion.var_threshold", f"must be positive, got {self.var_threshold}")
        _check(
            self.blur >= 1 and self.blur % 2 == 1,
            "detector.motion.blur",
            f"must be an odd number >= 1, got {self.blur}",
        )
        _check(0 < self.min_area < 1, "detector.motion.min_area", f"must be in (0, 1), got {self.min_area}")
        _check(
            0 < self.relearn_above <= 1, "detector.motion.relearn_above", f"must be in (0, 1], got {self.relearn_above}"
        )
        _check(
            0 < self.relearn_jump <= 1, "detector.motion.relearn_jump", f"must be in (0, 1], got {self.relearn_jump}"
        )
        _check(self.warmup_frames >= 0, "detector.motion.warmup_frames", f"must be >= 0, got {self.warmup_frames}")


@dataclass(frozen=True)
class OnnxDetectorConfig:
    """A user-supplied YOLO-style ONNX detection model."""

    model: str = ""  # path to the .onnx file (relative paths are taken from the config file's folder)
    input_size: int = 640  # the letterbox square when neither the model's input nor its metadata fix one
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45  # class-agnostic NMS
    classes: list[int | str] = field(default_factory=list)  # class ids or names (metadata) that are items; empty: all
    layout: YoloLayout = YoloLayout.AUTO  # the output layout; auto: from the model's metadata and output shape

    def __post_init__(self) -> None:
        _check(
            32 <= self.input_size <= 4096, "detector.onnx.input_size", f"must be in [32, 4096], got {self.input_size}"
        )
        _check(
            0 <= self.conf_threshold <= 1,
            "detector.onnx.conf_threshold",
            f"must be in [0, 1], got {self.conf_threshold}",
        )
        _check(
            0 <= self.iou_threshold <= 1, "detector.onnx.iou_threshold", f"must be in [0, 1], got {self.iou_threshold}"
        )


@dataclass(frozen=True)
class DetectorConfig:
    kind: str = "motion"  # "motion" or "onnx"
    motion: MotionConfig = field(default_factory=MotionConfig)
    onnx: OnnxDetectorConfig = field(default_factory=OnnxDetectorConfig)

    def __post_init__(self) -> None:
        _check(
            self.kind in DETECTOR_KINDS,
            "detector.kind",
            f"must be one of {', '.join(DETECTOR_KINDS)}, got {self.kind!r}",
        )
        _check(
            self.kind != "onnx" or bool(self.onnx.model),
            "detector.onnx.model",
            "is required when detector.kind is 'onnx'",
        )


@dataclass(frozen=True)
class TrackerConfig:
    """One track per item pass; a track ends when its item has been unseen for `max_lost_s`."""

    min_iou: float = 0.1  # overlap with the predicted box that continues a track
    max_jump: float = 1.0  # else: centre distance, in box diagonals, that still continues it
    max_lost_s: float = 0.4  # unseen this long = the item has left (covers brief occlusion)
    min_frames: int = 3  # shorter tracks are noise, not items

    def __post_init__(self) -> None:
        _check(0 < self.min_iou <= 1, "tracker.min_iou", f"must be in (0, 1], got {self.min_iou}")
        _check(self.max_jump >= 0, "tracker.max_jump", f"must be >= 0, got {self.max_jump}")
        _check(self.max_lost_s > 0, "tracker.max_lost_s", f"must be positive, got {self.max_lost_s}")
        _check(self.min_frames >= 1, "tracker.min_frames", f"must be >= 1, got {self.min_frames}")


@dataclass(frozen=True)
class CropConfig:
    per_track: int = 2  # crops embedded per pass (averaged); the embedder is the costliest stage
    # Share of the box added around it as context; negative cuts inside it (the motion box holds
    # hand, shadow and background).
    margin: float = -0.05
    min_side: int = 24  # smaller crops carry no product detail

    def __post_init__(self) -> None:
        _check(1 <= self.per_track <= 32, "crops.per_track", f"must be in [1, 32], got {self.per_track}")
        _check(-0.4 <= self.margin <= 1, "crops.margin", f"must be in [-0.4, 1], got {self.margin}")
        _check(self.min_side >= 8, "crops.min_side", f"must be >= 8, got {self.min_side}")


# A similarity (number), a calibrated threshold of the model by name ("eer", "far_0.01",
# "far_0.001"), or "confidence:P": the similarity at which the model's calibrated confidence is P.
Threshold = str | float


@dataclass(frozen=True)
class EventConfig:
    """Lining passes up with scans, and the similarity thresholds behind the alerts."""

    window_before_s: float = 1.0  # a scan this long before an item enters still belongs to it
    window_after_s: float = 0.5  # ... and this long after it leaves (the non-scan alert waits for it)
    clock_offset_s: float = 0.0  # POS clock minus camera clock
    # The switch thresholds were chosen for the shipped model on 10 development lanes per camera
    # (benchmarks/tune_switch.py; docs/pipeline.md, "Choosing the switch decision"): the most switches
    # found with at most 0.8 false switch alerts per 100 normal passes on the easy and the hard camera
    # alike. They are calibrated confidences: a new model keeps their meaning, not their choice.
    # Scanned SKU below this similarity: it does not look like the item ("confidence:0.3": a cosine of
    # 0.42 for the shipped model).
    switch_reject: Threshold = "confidence:0.3"
    # Another SKU at or above this: the item is that one, nearly surely. A lower bar (0.5, 0.7) let
    # blurred, hand-covered normal passes that look like a few products (garlic, plum) raise alerts.
    switch_accept: Threshold = "confidence:0.9"
    unknown_below: Threshold = "confidence:0.05"  # no SKU reaches this: the item is not in the gallery
    min_margin: float = 0.1  # the other SKU must beat the scanned one by at least this much
    qty_window_s: float = 10.0  # a quantity scan pays for items of its product passing up to this long after it
    void_window_s: float = 10.0  # a void may still cancel a scan this long after it (its transaction's end at most)
    # Evidence a switch alert may also ask of the pass's views (else: unverified). With the bar above
    # it kept no false alert out on the development lanes and lost switches, so by default it asks
    # for nothing beyond the pass itself:
    switch_min_views: int = 1  # views of usable quality, at least
    switch_min_agreement: float = 0.0  # share of them that on their own name the same other SKU ...
    switch_view_margin: float = 0.0  # ... over the scanned SKU by at least this similarity
    view_min_side: int = 90  # a usable view's short side in pixels, at least ...
    view_min_sharpness: float = 200.0  # ... and its sharpness (variance of the Laplacian at 96 px), at least

    def __post_init__(self) -> None:
        _check(self.window_before_s >= 0, "events.window_before_s", f"must be >= 0, got {self.window_before_s}")
        _check(self.window_after_s >= 0, "events.window_after_s", f"must be >= 0, got {self.window_after_s}")
        _check(self.qty_window_s >= 0, "events.qty_window_s", f"must be >= 0, got {self.qty_window_s}")
        _check(self.void_window_s >= 0, "events.void_window_s", f"must be >= 0, got {self.void_window_s}")
        _check(0 <= self.min_margin <= 1, "events.min_margin", f"must be in [0, 1], got {self.min_margin}")
        _check(
            1 <= self.switch_min_views <= 32,
            "events.switch_min_views",
            f"must be in [1, 32] (crops.per_track bounds the views), got {self.switch_min_views}",
        )
        _check(
            0 <= self.switch_min_agreement <= 1,
            "events.switch_min_agreement",
            f"must be in [0, 1], got {self.switch_min_agreement}",
        )
        _check(
            0 <= self.switch_view_margin <= 1,
            "events.switch_view_margin",
            f"must be in [0, 1], got {self.switch_view_margin}",
        )
        _check(0 <= self.view_min_side <= 512, "events.view_min_side", f"must be in [0, 512], got {self.view_min_side}")
        _check(
            0 <= self.view_min_sharpness <= 10000,
            "events.view_min_sharpness",
            f"must be in [0, 10000], got {self.view_min_sharpness}",
        )


@dataclass(frozen=True)
class BasketConfig:
    """Tversky weights: alpha for items seen but not scanned (the loss), beta for the reverse."""

    tversky_alpha: float = 1.0
    tversky_beta: float = 0.5

    def __post_init__(self) -> None:
        _check(self.tversky_alpha >= 0, "basket.tversky_alpha", f"must be >= 0, got {self.tversky_alpha}")
        _check(self.tversky_beta >= 0, "basket.tversky_beta", f"must be >= 0, got {self.tversky_beta}")


@dataclass(frozen=True)
class LaneReferenceConfig:
    """The `[lane_references]` table: which decided passes keep crops as suggested gallery references
    (pipeline/lane_references.py); `reid edge` samples when `enabled`, `reid replay` with --lane-references."""

    enabled: bool = False
    min_confidence: float = 0.9  # calibrated confidence of the verified match
    min_side: int = 48  # pixels, the crop's short side
    min_sharpness: float = 20.0  # variance of the Laplacian (pipeline.view_quality.sharpness)
    per_pass: int = 1  # best crops kept from one pass
    per_product: int = 20  # crops kept per product
    max_total_mb: float = 200.0  # all products together
    min_gap_s: float = 60.0  # lane seconds between two sampled passes of one product

    def __post_init__(self) -> None:
        _check(
            0 < self.min_confidence < 1,
            "lane_references.min_confidence",
            f"must be in (0, 1), got {self.min_confidence}",
        )
        _check(8 <= self.min_side <= 4096, "lane_references.min_side", f"must be in [8, 4096], got {self.min_side}")
        _check(self.min_sharpness >= 0, "lane_references.min_sharpness", f"must be >= 0, got {self.min_sharpness}")
        _check(1 <= self.per_pass <= 8, "lane_references.per_pass", f"must be in [1, 8], got {self.per_pass}")
        _check(
            1 <= self.per_product <= 1000,
            "lane_references.per_product",
            f"must be in [1, 1000], got {self.per_product}",
        )
        _check(
            0 < self.max_total_mb <= 100_000,
            "lane_references.max_total_mb",
            f"must be in (0, 100000], got {self.max_total_mb}",
        )
        _check(self.min_gap_s >= 0, "lane_references.min_gap_s", f"must be >= 0, got {self.min_gap_s}")


@dataclass(frozen=True)
class LaneConfig:
    zone: Zone | None = None  # [x1, y1, x2, y2] or a polygon [[x, y], ...]; the command line's --zone overrides it
    # Areas of the frame never looked at, each [x1, y1, x2, y2] or [[x, y], ...]: the cashier's
    # side, the bagging area, a screen that flickers.
    exclude: tuple[Polygon, ...] = ()
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    events: EventConfig = field(default_factory=EventConfig)
    basket: BasketConfig = field(default_factory=BasketConfig)
    lane_references: LaneReferenceConfig = field(default_factory=LaneReferenceConfig)

    def __post_init__(self) -> None:
        _check(
            self.events.switch_min_views <= self.crops.per_track,
            "events.switch_min_views",
            f"{self.events.switch_min_views} exceeds crops.per_track ({self.crops.per_track}): "
            "no pass would ever have enough views for a switch alert",
        )


def _convert(value: object, kind: object, key: str) -> object:
    """Check one TOML value against a field's annotated type (ints pass as floats, never bools)."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):  # (an annotation: a class, never an instance)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a table ([{key}]), got {type(value).__name__}")
        return from_table(kind, value, key)
    if kind is Zone or kind == (Zone | None) or kind == tuple[Polygon, ...]:
        try:
            return areas_from_list(value, key) if kind == tuple[Polygon, ...] else Zone.from_list(value, key)
        except ZoneError as e:
            raise ConfigError(str(e)) from None
    options = typing.get_args(kind) if isinstance(kind, (types.UnionType, typing._UnionGenericAlias)) else (kind,)  # type: ignore[attr-defined]
    for option in options:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool) and type(value) is option:
            return value
        if isinstance(option, type) and issubclass(option, StrEnum) and type(value) is str:
            if value not in set(option):
                raise ConfigError(f"{key}: must be one of {', '.join(option)}, got {value!r}")
            return option(value)
        if typing.get_origin(option) is list and isinstance(value, list) and all(_item_fits(v, option) for v in value):
            return list(value)
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"{key}: must be {names}, got {type(value).__name__} {value!r}")


def _item_fits(value: object, kind: object) -> bool:
    """A list item against the list's item type: integers (never bools) and/or strings."""
    (item,) = typing.get_args(kind)
    allowed = typing.get_args(item) or (item,)
    return (int in allowed and isinstance(value, int) and not isinstance(value, bool)) or (
        str in allowed and isinstance(value, str)
    )


def _type_name(kind: object) -> str:
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return "list of " + " or ".join(
            {int: "integers", str: "strings"}[t] for t in (typing.get_args(item) or (item,))
        )
    return getattr(kind, "__name__", str(kind))


def from_table(cls: type[T], data: dict, prefix: str = "") -> T:
    """A settings dataclass from a TOML table, strictly: an unknown key or a wrong type is a
    ConfigError naming the key (under `prefix`). The edge service reads its own tables with it."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in known:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"unknown key '{key}' (known here: {', '.join(sorted(known))})")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()
    }
    return cls(**kwargs)


def read_toml(path: Path) -> dict:
    """A TOML config file as a dict; any problem is a ConfigError naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def load_config(path: str | Path | None) -> LaneConfig:
    """The defaults, overridden by a TOML file if given. Relative model paths are resolved
    against the file's folder."""
    if path is None:
        return LaneConfig()
    p = Path(path)
    data = read_toml(p)
    try:
        config = from_table(LaneConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    model = config.detector.onnx.model
    if model and not Path(model).is_absolute():
        onnx = dataclasses.replace(config.detector.onnx, model=str(p.parent / model))
        config = dataclasses.replace(config, detector=dataclasses.replace(config.detector, onnx=onnx))
    return config
