"""The lane's settings: a TOML file mapped onto dataclasses whose defaults suit a 640x480, 15 fps
checkout camera. Each field declares its type and limits (pipeline/setting_types.py); an unknown
key, a wrong type, a number that is not finite or out of its range is an error naming the file and
the key, so a typo never silently falls back to a default."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import Field, PlainValidator, ValidationInfo, WithJsonSchema
from pydantic.dataclasses import dataclass

from retail_reid.compat import StrEnum, tomllib
from retail_reid.gallery.lane_suggestions import LabelPolicy
from retail_reid.pipeline.setting_types import SETTINGS, ConfigError, Flag, Real, Text, Whole, named, rule, settings
from retail_reid.pipeline.types import Polygon, Zone, ZoneError, areas_from_list
from retail_reid.pipeline.yolo import YoloLayout

T = TypeVar("T")

RECTANGLE = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}
POLYGON = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
    "minItems": 3,
}
AREA = {"anyOf": [RECTANGLE, POLYGON], "description": "[x1, y1, x2, y2] or a polygon [[x, y], [x, y], [x, y], ...]"}


def _zone(value: object, info: ValidationInfo) -> Zone | None:
    if value is None or isinstance(value, Zone):
        return value
    try:
        return Zone.from_list(value, info.field_name or "zone")
    except ZoneError as e:
        raise named(str(e)) from None


def _areas(value: object, info: ValidationInfo) -> tuple[Polygon, ...]:
    try:
        return areas_from_list(value, info.field_name or "exclude")
    except ZoneError as e:
        raise named(str(e)) from None


ZoneSetting = Annotated[Zone | None, PlainValidator(_zone), WithJsonSchema({"anyOf": [AREA, {"type": "null"}]})]
AreasSetting = Annotated[tuple[Polygon, ...], PlainValidator(_areas), WithJsonSchema({"type": "array", "items": AREA})]
Share = Annotated[Real, Field(ge=0, le=1)]  # a share or a similarity margin, [0, 1]


class DetectorKind(StrEnum):
    MOTION = "motion"  # OpenCV MOG2 background subtraction in the zone
    ONNX = "onnx"  # a YOLO-style ONNX model ([detector.onnx])


@settings("detector.motion")
@dataclass(frozen=True, config=SETTINGS)
class MotionConfig:
    """Background subtraction (OpenCV MOG2) inside the zone."""

    # the zone is processed at this scale: speed, and fewer noise specks
    scale: Annotated[Real, Field(ge=0.1, le=1)] = 0.5
    # frames MOG2 remembers: long, so an item resting on the scanner stays foreground
    history: Annotated[Whole, Field(ge=2, le=100_000)] = 500
    # MOG2 weight share that is background; lower keeps resting items longer
    background_ratio: Annotated[Real, Field(gt=0, lt=1)] = 0.7
    # MOG2 squared-distance threshold: higher ignores more sensor noise (255² at most)
    var_threshold: Annotated[Real, Field(gt=0, le=65025)] = 32.0
    blur: Annotated[Whole, Field(ge=1, le=99)] = 5  # Gaussian kernel (odd, pixels at scale) before subtraction
    min_area: Annotated[Real, Field(gt=0, lt=1)] = 0.02  # smallest blob, as a share of the zone's area
    # box only the blob's part deeper than this share of its thickest point (0: whole blob)
    core: Annotated[Real, Field(ge=0, lt=1)] = 0.7
    # foreground share of the zone treated as a change of light: relearn
    relearn_above: Annotated[Real, Field(gt=0, le=1)] = 0.7
    # ... and so is a rise of the share by this much from one frame to the next
    relearn_jump: Annotated[Real, Field(gt=0, le=1)] = 0.3
    warmup_frames: Annotated[Whole, Field(ge=0, le=10_000)] = 10  # frames that only teach the background at start

    def __post_init__(self) -> None:
        rule(self.blur % 2 == 1, "blur", f"must be an odd number, got {self.blur}")


@settings("detector.onnx")
@dataclass(frozen=True, config=SETTINGS)
class OnnxDetectorConfig:
    """A user-supplied YOLO-style ONNX detection model."""

    model: Text = ""  # path to the .onnx file (relative paths are taken from the config file's folder)
    # the letterbox square when neither the model's input nor its metadata fix one
    input_size: Annotated[Whole, Field(ge=32, le=4096)] = 640
    conf_threshold: Share = 0.25
    iou_threshold: Share = 0.45  # class-agnostic NMS
    # class ids or names (metadata) that are items; empty: all
    classes: list[Whole | Text] = field(default_factory=list)
    layout: YoloLayout = YoloLayout.AUTO  # the output layout; auto: from the model's metadata and output shape


@settings("detector")
@dataclass(frozen=True, config=SETTINGS)
class DetectorConfig:
    kind: DetectorKind = DetectorKind.MOTION
    motion: MotionConfig = field(default_factory=MotionConfig)
    onnx: OnnxDetectorConfig = field(default_factory=OnnxDetectorConfig)

    def __post_init__(self) -> None:
        rule(
            self.kind != DetectorKind.ONNX or bool(self.onnx.model),
            "onnx.model",
            "is required when detector.kind is 'onnx'",
        )


@settings("tracker")
@dataclass(frozen=True, config=SETTINGS)
class TrackerConfig:
    """One track per item pass; a track ends when its item has been unseen for `max_lost_s`."""

    min_iou: Annotated[Real, Field(gt=0, le=1)] = 0.1  # overlap with the predicted box that continues a track
    # else: centre distance, in box diagonals, that still continues it
    max_jump: Annotated[Real, Field(ge=0, le=100)] = 1.0
    max_lost_s: Annotated[Real, Field(gt=0, le=60)] = 0.4  # unseen this long = the item has left (brief occlusion)
    min_frames: Annotated[Whole, Field(ge=1, le=1000)] = 3  # shorter tracks are noise, not items


@settings("crops")
@dataclass(frozen=True, config=SETTINGS)
class CropConfig:
    # crops embedded per pass (averaged); the embedder is the costliest stage
    per_track: Annotated[Whole, Field(ge=1, le=32)] = 2
    # Share of the box added around it as context; negative cuts inside it (the motion box holds
    # hand, shadow and background).
    margin: Annotated[Real, Field(ge=-0.4, le=1)] = -0.05
    min_side: Annotated[Whole, Field(ge=8, le=4096)] = 24  # smaller crops carry no product detail


# A similarity (number), a calibrated threshold of the model by name ("eer", "far_0.01",
# "far_0.001"), or "confidence:P": the similarity at which the model's calibrated confidence is P.
Threshold = Text | Annotated[Real, Field(ge=-1, le=1)]
Seconds = Annotated[Real, Field(ge=0, le=3600)]  # a window of lane time


@settings("events")
@dataclass(frozen=True, config=SETTINGS)
class EventConfig:
    """Lining passes up with scans, and the similarity thresholds behind the alerts."""

    # a scan this long before an item enters still belongs to it
    window_before_s: Annotated[Real, Field(ge=0, le=600)] = 1.0
    # ... and this long after it leaves (the non-scan alert waits for it)
    window_after_s: Annotated[Real, Field(ge=0, le=600)] = 0.5
    # POS clock minus camera clock (a day at most either way)
    clock_offset_s: Annotated[Real, Field(ge=-86400, le=86400)] = 0.0
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
    min_margin: Share = 0.1  # the other SKU must beat the scanned one by at least this much
    qty_window_s: Seconds = 10.0  # a quantity scan pays for items of its product passing up to this long after it
    void_window_s: Seconds = 10.0  # a void may still cancel a scan this long after it (its transaction's end at most)
    # Evidence a switch alert may also ask of the pass's views (else: unverified). With the bar above
    # it kept no false alert out on the development lanes and lost switches, so by default it asks
    # for nothing beyond the pass itself:
    switch_min_views: Annotated[Whole, Field(ge=1, le=32)] = 1  # views of usable quality, at least (crops.per_track)
    switch_min_agreement: Share = 0.0  # share of them that on their own name the same other SKU ...
    switch_view_margin: Share = 0.0  # ... over the scanned SKU by at least this similarity
    view_min_side: Annotated[Whole, Field(ge=0, le=512)] = 90  # a usable view's short side in pixels, at least ...
    # ... and its sharpness (variance of the Laplacian at 96 px), at least
    view_min_sharpness: Annotated[Real, Field(ge=0, le=10000)] = 200.0


@settings("basket")
@dataclass(frozen=True, config=SETTINGS)
class BasketConfig:
    """Tversky weights: alpha for items seen but not scanned (the loss), beta for the reverse."""

    tversky_alpha: Annotated[Real, Field(ge=0, le=100)] = 1.0
    tversky_beta: Annotated[Real, Field(ge=0, le=100)] = 0.5


@settings("lane_references")
@dataclass(frozen=True, config=SETTINGS)
class LaneReferenceConfig:
    """The `[lane_references]` table: which decided passes keep crops as suggested gallery references
    (pipeline/lane_references.py); `reid edge` samples when `enabled`, `reid replay` with --lane-references."""

    enabled: Flag = False
    # confident: passes the camera verified (min_confidence); till: passes the till labelled alone
    # (one scan matched in time, one item, no void, no quantity), kept as candidates for consensus
    policy: LabelPolicy = LabelPolicy.CONFIDENT
    min_confidence: Annotated[Real, Field(gt=0, lt=1)] = 0.9  # calibrated confidence of the verified match
    min_side: Annotated[Whole, Field(ge=8, le=4096)] = 48  # pixels, the crop's short side
    # variance of the Laplacian (pipeline.view_quality.sharpness)
    min_sharpness: Annotated[Real, Field(ge=0, le=10000)] = 20.0
    per_pass: Annotated[Whole, Field(ge=1, le=8)] = 1  # best crops kept from one pass
    per_product: Annotated[Whole, Field(ge=1, le=1000)] = 20  # crops kept per product
    max_total_mb: Annotated[Real, Field(gt=0, le=100_000)] = 200.0  # all products together
    # lane seconds between two sampled passes of one product
    min_gap_s: Annotated[Real, Field(ge=0, le=86400)] = 60.0


@settings()
@dataclass(frozen=True, config=SETTINGS)
class LaneConfig:
    """A lane's settings: lane.toml without its [edge] tables, or `reid replay --config`."""

    zone: ZoneSetting = None  # [x1, y1, x2, y2] or a polygon [[x, y], ...]; the command line's --zone overrides it
    # Areas of the frame never looked at, each [x1, y1, x2, y2] or [[x, y], ...]: the cashier's
    # side, the bagging area, a screen that flickers.
    exclude: AreasSetting = ()
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    events: EventConfig = field(default_factory=EventConfig)
    basket: BasketConfig = field(default_factory=BasketConfig)
    lane_references: LaneReferenceConfig = field(default_factory=LaneReferenceConfig)

    def __post_init__(self) -> None:
        rule(
            self.events.switch_min_views <= self.crops.per_track,
            "events.switch_min_views",
            f"{self.events.switch_min_views} exceeds crops.per_track ({self.crops.per_track}): "
            "no pass would ever have enough views for a switch alert",
        )


def from_table(cls: type[T], data: dict) -> T:
    """A settings dataclass from a TOML table, strictly: an unknown key, a wrong type or a value
    out of its limits is a ConfigError naming the key. The edge service reads its own tables with it."""
    return cls(**data)


MAX_CONFIG_BYTES = 1 << 20  # a lane.toml is a few KB: a megabyte is not a config file


def read_toml(path: Path) -> dict:
    """A TOML config file as a dict, bounded before it is parsed; any problem is a ConfigError
    naming the file (never a traceback: a 5000-digit number or lists nested thousands deep too)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} KiB, not a config file")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except ValueError:  # Python refuses to convert an integer of over 4300 digits
        raise ConfigError(f"{path}: a number too long to be a setting (thousands of digits)") from None
    except RecursionError:
        raise ConfigError(f"{path}: lists or tables nested too deeply to be a config") from None


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
