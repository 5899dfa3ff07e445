"""Checkout-lane scenarios made from product photos: a video, its POS log and the truth about both.

Recorded lanes with labelled thefts are scarce, so the detector, tracker, matcher and event
logic are measured on simulated lanes instead: a top-down camera over a belt and scanner glass;
each item (a product photo cut to a rounded shape, held by a hand) crosses the scan zone from
left to right, sometimes pausing on the scanner, sometimes right behind another item; lighting
drifts, the sensor is noisy and moving items blur. The till scans most items while they cross
the scanner; the rest are the anomalies we hunt: non-scans, product switches (the till names a
different SKU) and scans with no item in the lane. Everything is drawn from one seeded RNG, so a
seed reproduces the same files byte for byte.

By default (`Difficulty.EASY`) the simulation is fair to the vision stages: every item is large
and fully visible (the hand covers only an edge), enters and leaves the zone clearly, and no two
items overlap. `Difficulty.HARD` (`SimConfig.preset`) is a cheap camera over hurried customers:
small items, long motion blur, strong noise and JPEG blocking, a hand covering up to a third of
the item, items close behind each other (two in the zone at once), stronger lighting drift, and
switches mostly to a look-alike of the same coarse class (another apple, another milk).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.images import read_image
from retail_reid.models.datasets import ImageSet
from retail_reid.pipeline.harness.simulate_pos import PosCase, TillPlan, TillRates
from retail_reid.pipeline.pos import PosEvent, PosEventType

OUTPUT_NAMES = ("video.mp4", "video.avi", "pos.jsonl", "truth.json")
# Containers tried in order: MPEG-4 Part 2 in MP4 is written by every opencv-python-headless
# wheel; Motion-JPEG in AVI is the fallback where FFmpeg is missing.
_CONTAINERS = (("video.mp4", "mp4v"), ("video.avi", "MJPG"))
# Skin tones (BGR) for the cashier's hands.
_SKIN = ((172, 196, 232), (141, 170, 214), (110, 142, 198), (86, 116, 170), (60, 84, 128), (45, 60, 92))


_ANOMALY_KEYS = ("type", "t_start", "t_end", "seen_sku", "scanned_sku", "txn")  # written even when null


class SimulationError(ReidError, ValueError):
    """Settings or inputs a scenario cannot be made from; the message names the culprit."""


class Difficulty(StrEnum):
    """Presets of camera and customers (`SimConfig.preset`)."""

    EASY = "easy"
    HARD = "hard"


# What the hard camera and customers change; every other setting keeps its default. Items of
# 80-130 px, the shutter open 70 % of the frame time (about 12-19 px of blur at 15 fps), noise
# and JPEG blocks of a cheap IP camera, the hand over up to a third of the item, more followers,
# 30-60 px behind (with items this small, two are in the zone at once; the blur narrows the
# gap the camera sees to 10-50 px), and four of five switches to a look-alike.
HARD_SETTINGS: dict[str, Any] = {  # SimConfig fields (of several types) and their values
    "item_px": (80.0, 130.0),
    "shutter": 0.7,
    "noise": 8.0,
    "jpeg_quality": 35,
    "hand_cover": 1 / 3,
    "pair_rate": 0.35,
    "pair_gap": (30.0, 60.0),
    "lookalike_rate": 0.8,
    "lighting": 0.25,
}


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Rates are shares of passes, turned into exact counts (rounded), so a
    short scenario still holds the anomalies asked for."""

    passes: int = 12
    transactions: int = 2
    non_scan_rate: float = 0.15
    switch_rate: float = 0.15
    scan_without_item_rate: float = 0.05  # phantom scans, as a share of passes (at most one per item group)
    pair_rate: float = 0.2  # chance that a pass is followed closely by a second item
    pause_rate: float = 0.3  # share of item groups that stop on the scanner for a moment
    till: TillRates = field(default_factory=TillRates)  # quantity scans, voids, keyed produce, double scans
    fps: float = 15.0
    width: int = 640
    height: int = 480
    noise: float = 3.0  # sensor noise, standard deviation in grey levels
    lighting: float = 0.12  # peak relative brightness drift over the video
    seed: int = 0
    item_px: tuple[float, float] | None = None  # items' long side in pixels (None: 26-34 % of the frame height)
    shutter: float = 0.2  # share of the frame time the shutter is open: the length of the motion blur
    jpeg_quality: int = 0  # each frame goes through JPEG at this quality first (0: not)
    hand_cover: float = 0.0  # the most of an item the hand covers (0: the fingers only touch its edge)
    pair_gap: tuple[float, float] = (20.0, 45.0)  # pixels between an item and the one close behind it
    lookalike_rate: float = 0.0  # share of switches scanned as another SKU of the item's coarse class
    difficulty: Difficulty = Difficulty.EASY  # the preset these settings started from (recorded only)

    @classmethod
    def preset(cls, difficulty: Difficulty, **overrides: Any) -> SimConfig:
        """The settings of a difficulty, with any setting given here taking precedence."""
        base = HARD_SETTINGS if difficulty is Difficulty.HARD else {}
        return cls(**{**base, **overrides, "difficulty": difficulty})

    def check(self) -> None:
        """Refuse settings that cannot make a sensible lane, naming the setting."""
        if self.passes < 1:
            raise SimulationError(f"passes must be at least 1, got {self.passes}")
        if not 1 <= self.transactions <= self.passes:
            raise SimulationError(f"transactions must be between 1 and passes ({self.passes}), got {self.transactions}")
        for name in ("non_scan_rate", "switch_rate", "scan_without_item_rate", "pair_rate", "pause_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SimulationError(f"{name} must be between 0 and 1, got {value}")
        if self.non_scan_rate + self.switch_rate > 1.0:
            raise SimulationError(
                "non_scan_rate + switch_rate must not exceed 1 (each pass is one or the other or neither)"
            )
        self.till.check(SimulationError)
        if self.non_scan_rate + self.switch_rate + self.till.share > 1.0:
            raise SimulationError("the non-scan, switch and till-case rates must not add up to more than 1")
        if not 5.0 <= self.fps <= 60.0:
            raise SimulationError(f"fps must be between 5 and 60, got {self.fps}")
        if not (320 <= self.width <= 1920 and 240 <= self.height <= 1080):
            raise SimulationError(f"frame size must be within 320x240 .. 1920x1080, got {self.width}x{self.height}")
        if not 0.0 <= self.noise <= 25.0:
            raise SimulationError(f"noise must be between 0 and 25 grey levels, got {self.noise}")
        if not 0.0 <= self.lighting <= 0.4:
            raise SimulationError(f"lighting drift must be between 0 and 0.4, got {self.lighting}")
        self._check_camera()

    def _check_camera(self) -> None:
        """The camera and customer settings of the difficulty presets."""
        if self.item_px is not None and not 24 <= self.item_px[0] <= self.item_px[1] <= 0.6 * self.height:
            raise SimulationError(
                f"item size must be MIN-MAX pixels with 24 <= MIN <= MAX <= {0.6 * self.height:g} "
                f"(60 % of the frame height), got {self.item_px[0]:g}-{self.item_px[1]:g}"
            )
        if not 0.0 <= self.shutter <= 1.0:
            raise SimulationError(f"shutter must be between 0 and 1 (a share of the frame time), got {self.shutter}")
        if self.jpeg_quality != 0 and not 5 <= self.jpeg_quality <= 100:
            raise SimulationError(f"jpeg quality must be 0 (off) or between 5 and 100, got {self.jpeg_quality}")
        if not 0.0 <= self.hand_cover <= 0.5:
            raise SimulationError(f"hand cover must be between 0 and 0.5 of the item, got {self.hand_cover}")
        if not 0.0 <= self.pair_gap[0] <= self.pair_gap[1] <= 200.0:
            raise SimulationError(
                "pair gap must be MIN-MAX pixels with 0 <= MIN <= MAX <= 200, "
                f"got {self.pair_gap[0]:g}-{self.pair_gap[1]:g}"
            )
        if not 0.0 <= self.lookalike_rate <= 1.0:
            raise SimulationError(f"lookalike_rate must be between 0 and 1, got {self.lookalike_rate}")

    @property
    def zone(self) -> tuple[int, int, int, int]:
        """The scan zone (x1, y1, x2, y2): the middle of the lane, around the scanner glass."""
        w, h = self.width, self.height
        return round(0.3 * w), round(0.18 * h), round(0.7 * w), round(0.86 * h)


@dataclass(frozen=True)
class Pass:
    """One item crossing the zone: times are when its centre entered and left the zone."""

    t_start: float
    t_end: float
    sku: str
    scanned_sku: str | None
    txn: str | None  # None: read from a truth file that names no transaction


@dataclass(frozen=True)
class Anomaly:
    """Something the system should alert on. A scan without an item spans the scan's instant."""

    type: str  # non_scan, product_switch, scan_without_item, double_scan (hand-labelled truth may add unknown_item)
    t_start: float
    t_end: float
    seen_sku: str | None
    scanned_sku: str | None
    txn: str | None = None
    entry: str | None = None  # how the scan was entered, when not scanned ("keyed", "weighed")
    weight_kg: float | None = None
    voided_sku: str | None = None  # a non-scan whose scan was voided: that scan's SKU


@dataclass(frozen=True)
class Truth:
    """The contents of truth.json (read back by `retail_reid.pipeline.harness.score.read_truth`). `video` is relative
    to the truth file's folder."""

    video: str
    fps: float
    size: tuple[int, int]
    zone: tuple[int, int, int, int]
    passes: tuple[Pass, ...]
    anomalies: tuple[Anomaly, ...]
    pos_cases: tuple[PosCase, ...] = ()  # till cases planted (written only when there are some)

    def to_dict(self) -> dict:
        d = {
            "video": self.video,
            "fps": self.fps,
            "size": list(self.size),
            "zone": list(self.zone),
            "passes": [asdict(p) for p in self.passes],
            "anomalies": [
                {k: v for k, v in asdict(a).items() if v is not None or k in _ANOMALY_KEYS} for a in self.anomalies
            ],
        }
        if self.pos_cases:
            d["pos_cases"] = [asdict(c) for c in self.pos_cases]
        return d

    def to_json(self) -> str:
        """JSON with one pass or anomaly per line, so a person can read and diff it."""
        d = self.to_dict()
        head = "".join(f' "{k}": {json.dumps(d[k])},\n' for k in ("video", "fps", "size", "zone"))
        lists = [
            f' "{k}": [' + ",".join(f"\n  {json.dumps(x)}" for x in d[k]) + ("\n ]" if d[k] else "]")
            for k in ("passes", "anomalies", "pos_cases")
            if k in d
        ]
        return "{\n" + head + ",\n".join(lists) + "\n}\n"


# --- planning: who crosses when, and what the till says ---------------------------------------


@dataclass(frozen=True)
class _Look:
    """How one item is drawn. Its own seed rebuilds the same sprites when the item comes into
    view, so only the items in the frame hold pixels: memory does not grow with the video."""

    photo: Path
    seed: int
    long_side: float
    hand: str | None  # "behind", "below" or None
    blur_px: float
    hand_cover: float = 0.0  # the share of the product the hand covers (0: the fingers touch its edge)

    def sprites(self) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
        """Premultiplied BGRA float32 sprites (still, and smeared along the motion), the product's
        centre inside them (x, y), and the product's own width on screen (without the hand)."""
        rng = np.random.default_rng(self.seed)
        img, alpha = _product(read_image(self.photo), rng, self.long_side)
        h, w = alpha.shape
        m = int(0.7 * self.long_side)  # room for the hand and the rotation
        canvas = np.zeros((h + 2 * m, w + 2 * m, 4), np.float32)
        canvas[m : m + h, m : m + w, :3] = img * alpha[..., None]
        canvas[m : m + h, m : m + w, 3] = alpha
        if self.hand:
            _hand(canvas, (m, m, m + w, m + h), self.hand, rng, self.hand_cover)
        angle = float(rng.uniform(-10, 10))
        centre = (m + w / 2, m + h / 2)
        rot = cv2.getRotationMatrix2D(centre, angle, 1.0)
        canvas = cv2.warpAffine(canvas, rot, canvas.shape[1::-1], flags=cv2.INTER_LINEAR, borderValue=0)
        ys, xs = np.nonzero(canvas[..., 3] > 1e-3)
        pad = int(self.blur_px) + 2
        y0, y1, x0, x1 = ys.min() - pad, ys.max() + pad + 1, xs.min() - pad, xs.max() + pad + 1
        sprite = np.ascontiguousarray(
            np.pad(canvas, ((pad, pad), (pad, pad), (0, 0)))[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
        )
        k = max(1, round(self.blur_px))
        blurred = cv2.blur(sprite, (k, 1), borderType=cv2.BORDER_CONSTANT) if k > 1 else sprite
        rad = math.radians(angle)
        anchor = (float(centre[0] - x0), float(centre[1] - y0))
        return sprite, blurred, anchor, abs(w * math.cos(rad)) + abs(h * math.sin(rad))


@dataclass
class _Item:
    """One product on its way across the lane; `offset` is how far it trails its group's lead."""

    look: _Look
    size: tuple[int, int]  # the sprite's width and height
    anchor: tuple[float, float]  # the product's centre inside the sprite (x, y)
    width: float  # the product's own width on screen (without the hand)
    offset: float = 0.0
    y: float = 0.0

    @classmethod
    def planned(cls, look: _Look) -> _Item:
        sprite, _, anchor, width = look.sprites()
        return cls(look, (sprite.shape[1], sprite.shape[0]), anchor, width)


@dataclass
class _Group:
    """Items moving together: one, or two close behind each other. The lead's centre starts at
    `x0` at time `t0`, moves at `speed`, and may rest at `pause_x` for `pause_s` seconds."""

    items: list[_Item]
    t0: float = 0.0
    x0: float = 0.0
    speed: float = 300.0
    pause_x: float = math.inf
    pause_s: float = 0.0
    t_gone: float = math.inf  # when the last sprite has left the frame

    def lead_x(self, t: float) -> tuple[float, bool]:
        """The lead's centre at time t, and whether the group is moving then."""
        tau = t - self.t0
        reach = (self.pause_x - self.x0) / self.speed
        if tau < reach:
            return self.x0 + self.speed * tau, True
        if tau < reach + self.pause_s:
            return self.pause_x, False
        return self.pause_x + self.speed * (tau - reach - self.pause_s), True

    def time_at(self, x: float) -> float:
        """When the lead's centre reaches x (arrival, for the resting point itself)."""
        t = self.t0 + (x - self.x0) / self.speed
        return t + self.pause_s if x > self.pause_x else t


@dataclass
class _Plan:
    """The whole scenario before any frame is drawn."""

    groups: list[_Group] = field(default_factory=list)
    passes: list[Pass] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    pos: list[PosEvent] = field(default_factory=list)
    cases: list[PosCase] = field(default_factory=list)
    duration: float = 0.0


def _product(photo: np.ndarray, rng: np.random.Generator, long_side: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo cropped a little, scaled and cut to a rounded rectangle: (BGR float32, alpha)."""
    h, w = photo.shape[:2]
    fy, fx = rng.uniform(0.9, 1.0, 2)
    ch, cw = max(8, int(h * fy)), max(8, int(w * fx))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    scale = long_side / max(ch, cw)
    size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
    img = cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    sw, sh = size
    r = int(rng.uniform(0.08, 0.25) * min(sw, sh))
    mask = np.zeros((sh * 4, sw * 4), np.uint8)  # drawn 4x larger, then shrunk: smooth edges
    cv2.rectangle(mask, (r * 4, 0), ((sw - r) * 4 - 1, sh * 4 - 1), 255, -1)
    cv2.rectangle(mask, (0, r * 4), (sw * 4 - 1, (sh - r) * 4 - 1), 255, -1)
    for cx, cy in ((r, r), (sw - r, r), (r, sh - r), (sw - r, sh - r)):
        cv2.circle(mask, (cx * 4, cy * 4), r * 4, 255, -1, cv2.LINE_AA)
    alpha = cv2.resize(mask, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return img, alpha


def _hand(
    canvas: np.ndarray, box: tuple[float, float, float, float], side: str, rng: np.random.Generator, cover: float = 0.0
) -> None:
    """Paint a hand on the RGBA canvas holding the product in `box` by its trailing ("behind")
    or bottom ("below") edge. With `cover` 0 the fingers reach only a little way onto the
    product; otherwise the hand is moved onto it until it hides that share of the product."""
    x1, y1, x2, y2 = box
    # The hand's scale: a palm a quarter to a third of the item's size; a hand that grips more of
    # the item is a bigger hand for its size (a small item in a whole hand).
    size = 0.7 * max(x2 - x1, y2 - y1) * (1 + 2 * cover)
    along = (y2 - y1) if side == "behind" else (x2 - x1)
    where = rng.uniform(-0.15, 0.15) if side == "behind" else rng.uniform(-0.2, 0.2)
    mask = _hand_mask(canvas.shape[:2], box, side, size, where * along, 0.0)
    if cover > 0:
        product = canvas[..., 3] > 0.5
        area = max(1, int(np.count_nonzero(product)))
        lo, hi = 0.0, 0.6 * float(x2 - x1 if side == "behind" else y2 - y1)  # it keeps to its own half
        for _ in range(12):  # bisect how far onto the product the hand reaches
            mid = (lo + hi) / 2
            mask = _hand_mask(canvas.shape[:2], box, side, size, where * along, mid)
            lo, hi = (mid, hi) if np.count_nonzero(mask[product] > 127) / area < cover else (lo, mid)
    skin = np.array(_SKIN[int(rng.integers(len(_SKIN)))], np.float32)
    ys = np.linspace(0.85, 1.1, canvas.shape[0], dtype=np.float32)[:, None, None]  # light from above
    a = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255.0
    canvas[..., :3] = canvas[..., :3] * (1 - a) + skin * ys * a
    canvas[..., 3:] = canvas[..., 3:] * (1 - a) + a


def _hand_mask(
    shape: tuple[int, int], box: tuple[float, float, float, float], side: str, size: float, across: float, onto: float
) -> np.ndarray:
    """The hand's pixels (uint8 0/255): palm, wrist and four fingers, `onto` pixels further onto
    the product than the light grip, `across` pixels off the middle of the edge it holds."""
    x1, y1, x2, y2 = box
    mask = np.zeros(shape, np.uint8)
    finger_w = max(2, int(0.05 * size))
    if side == "behind":
        cy = (y1 + y2) / 2 + across
        palm = (x1 - 0.14 * size + onto, cy)
        axes, wrist_dir = (0.16 * size, 0.22 * size), (-1.0, 0.35)
        tips = [(x1 + 0.08 * size + onto, cy + k * 0.08 * size) for k in (-1.5, -0.5, 0.5, 1.5)]
    else:
        cx = (x1 + x2) / 2 + across
        palm = (cx, y2 + 0.14 * size - onto)
        axes, wrist_dir = (0.22 * size, 0.16 * size), (-0.35, 1.0)
        tips = [(cx + k * 0.08 * size, y2 - 0.08 * size - onto) for k in (-1.5, -0.5, 0.5, 1.5)]
    px, py = palm
    cv2.ellipse(mask, (round(px), round(py)), (round(axes[0]), round(axes[1])), 0, 0, 360, 255, -1, cv2.LINE_AA)
    norm = math.hypot(*wrist_dir)
    wx, wy = px + wrist_dir[0] / norm * 0.35 * size, py + wrist_dir[1] / norm * 0.35 * size
    cv2.line(mask, (round(px), round(py)), (round(wx), round(wy)), 255, int(0.26 * size), cv2.LINE_AA)
    for tx, ty in tips:
        cv2.line(mask, (round(px), round(py)), (round(tx), round(ty)), 255, finger_w, cv2.LINE_AA)
    return mask


def read_coarse_classes(path: str | Path) -> dict[str, str]:
    """SKU -> coarse class ("Granny-Smith" -> "Apple") from a grocery-style classes.csv (columns
    "Class Name (str)" and "Coarse Class Name (str)"): what a look-alike switch stays within."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SimulationError(f"{p}: cannot read the coarse classes ({e})") from None
    fine, coarse = "Class Name (str)", "Coarse Class Name (str)"
    if not rows or fine not in rows[0] or coarse not in rows[0]:
        raise SimulationError(f"{p}: expected a CSV header with {fine!r} and {coarse!r}")
    return {r[fine].strip(): r[coarse].strip() for r in rows if r[fine] and r[coarse]}


def find_coarse_classes(images: str | Path, root: str | Path | None = None) -> Path | None:
    """The classes.csv that goes with a photo folder or split file: in the folder, next to it,
    or in the split file's root (as the grocery dataset and the bundled sample ship it)."""
    spec = Path(images)
    for folder in (spec, spec.parent, Path(root) if root else None):
        if folder is not None and (folder / "classes.csv").is_file():
            return folder / "classes.csv"
    return None


def _switch_sku(
    sku: str, skus: list[str], coarse: Mapping[str, str] | None, lookalike_rate: float, rng: np.random.Generator
) -> str:
    """The SKU a switch is scanned as: with `lookalike_rate`, another SKU of the same coarse class
    where the photos hold one (a cheaper code for the same kind of thing), else any other."""
    others = [s for s in skus if s != sku]
    if lookalike_rate > 0 and rng.random() < lookalike_rate and coarse is not None:
        same = [s for s in others if coarse.get(s) is not None and coarse.get(s) == coarse.get(sku)]
        if same:
            return str(rng.choice(same))
    return str(rng.choice(others))


def _look(photo: Path, hand: str, blur_px: float, cfg: SimConfig, rng: np.random.Generator) -> _Look:
    """How an item is drawn: its size and how much of it the hand covers, by the settings."""
    seed = int(rng.integers(2**63))
    long_side = rng.uniform(0.26, 0.34) * cfg.height if cfg.item_px is None else rng.uniform(*cfg.item_px)
    cover = rng.uniform(cfg.hand_cover / 3, cfg.hand_cover) if cfg.hand_cover > 0 else 0.0
    return _Look(photo, seed, long_side, hand, blur_px, cover)


def _plan(images: ImageSet, cfg: SimConfig, rng: np.random.Generator, coarse: Mapping[str, str] | None = None) -> _Plan:
    """Decide every pass, its timing, its scan and its anomaly; load and shape the photos."""
    skus = images.skus
    by_sku = {s: [p for p, lab in zip(images.paths, images.labels, strict=True) if lab == s] for s in skus}
    if cfg.switch_rate > 0 and len(skus) < 2:
        raise SimulationError("product switches need photos of at least two SKUs")
    n = cfg.passes
    kinds = np.full(n, "ok", dtype=object)
    order = rng.permutation(n)
    n_non, n_switch = round(cfg.non_scan_rate * n), round(cfg.switch_rate * n)
    kinds[order[:n_non]] = "non_scan"
    kinds[order[n_non : n_non + n_switch]] = "product_switch"
    txn_split = np.array_split(np.arange(n), cfg.transactions)
    till = TillPlan.draw(cfg.till, kinds, txn_split, rng)
    w, h = cfg.width, cfg.height
    x1, _, x2, _ = cfg.zone
    mid = (x1 + x2) / 2
    plan = _Plan()

    def other_sku(sku: str) -> str:
        return str(rng.choice([s for s in skus if s != sku]))

    # Split passes into transactions, then into groups of one or two items.
    txn_groups: list[tuple[str, list[list[int]]]] = []
    for txn_number, idx in enumerate(txn_split, start=1):
        groups, i = [], 0
        while i < len(idx):
            if i + 1 < len(idx) and rng.random() < cfg.pair_rate and till.pairable(int(idx[i]), int(idx[i + 1])):
                groups.append([int(idx[i]), int(idx[i + 1])])
                i += 2
            else:
                groups.append([int(idx[i])])
                i += 1
        txn_groups.append((f"T{txn_number}", groups))
    n_groups = sum(len(g) for _, g in txn_groups)
    phantom_after = set(rng.permutation(n_groups)[: min(n_groups, round(cfg.scan_without_item_rate * n))].tolist())
    pausing = set(rng.permutation(n_groups)[: round(cfg.pause_rate * n_groups)].tolist())
    till.place_gaps(n_groups, phantom_after, rng)

    t, gi, off_frame = 0.5, 0, 0.0
    for txn, groups in txn_groups:
        plan.pos.append(PosEvent(ts=round(t, 3), type=PosEventType.TXN_START, txn=txn))
        t_free = t + 0.5  # when the next item may start to enter the zone (the zone is empty then)
        for members in groups:
            speed = float(rng.uniform(250, 400))
            blur_px = cfg.shutter * speed / cfg.fps  # how far the item moves while the shutter is open
            items: list[tuple[_Item, int, str]] = []
            prev = None
            for j, pass_index in enumerate(members):
                sku = str(rng.choice(skus)) if prev is None or len(skus) < 2 else other_sku(prev)
                sku = till.item_sku(pass_index, sku)
                prev = sku
                photo = by_sku[sku][int(rng.integers(len(by_sku[sku])))]
                hand = ("below" if j == 0 else "behind") if len(members) == 2 else str(rng.choice(["behind", "below"]))
                item = _Item.planned(_look(photo, hand, blur_px, cfg, rng))
                item.y = 0.52 * h + rng.uniform(-0.07, 0.07) * h
                if j:
                    ahead = items[-1][0]
                    item.offset = ahead.offset + (ahead.width + item.width) / 2 + rng.uniform(*cfg.pair_gap)
                items.append((item, pass_index, sku))
            group = _Group([it for it, _, _ in items], speed=speed)
            reach = max(max(it.size) for it in group.items)
            group.x0 = -(group.items[-1].offset + reach)
            if gi in pausing:
                group.pause_x = mid + group.items[-1].offset / 2 + rng.uniform(-20, 20)
                group.pause_s = float(rng.uniform(0.6, 1.8))
            lead = group.items[0]
            group.t0 = t_free - (x1 - (lead.size[0] - lead.anchor[0]) - group.x0) / speed
            plan.groups.append(group)
            for item, pass_index, sku in items:
                t_in, t_out = group.time_at(x1 + item.offset), group.time_at(x2 + item.offset)
                start, end = math.ceil(t_in * cfg.fps) / cfg.fps, math.floor(t_out * cfg.fps) / cfg.fps
                kind = kinds[pass_index]
                scanned = (
                    None
                    if kind == "non_scan"
                    else _switch_sku(sku, skus, coarse, cfg.lookalike_rate, rng)
                    if kind == "product_switch"
                    else sku
                )
                if scanned is not None:
                    ts = group.time_at(mid + item.offset) + rng.uniform(-0.1, 0.5)
                    plan.pos.append(PosEvent(ts=round(ts, 3), type=PosEventType.SCAN, sku=scanned, txn=txn))
                plan.passes.append(Pass(round(start, 3), round(end, 3), sku, scanned, txn))
                if kind != "ok":
                    plan.anomalies.append(Anomaly(kind, round(start, 3), round(end, 3), sku, scanned, txn))
                till.settle(
                    plan, pass_index, rng, Anomaly, lambda s: _switch_sku(s, skus, coarse, cfg.lookalike_rate, rng)
                )
            last = group.items[-1]
            clear = group.time_at(x2 + last.offset + last.anchor[0])  # the last sprite has left the zone
            group.t_gone = group.time_at(w + last.offset + last.anchor[0])
            off_frame = max(off_frame, group.t_gone)
            t_free = clear + rng.uniform(0.3, 0.8)
            if gi in phantom_after:
                ts = round(clear + 1.5, 3)  # well apart from both neighbouring passes
                sku = str(rng.choice(skus))
                plan.pos.append(PosEvent(ts=ts, type=PosEventType.SCAN, sku=sku, txn=txn))
                plan.anomalies.append(Anomaly("scan_without_item", ts, ts, None, sku, txn))
                t_free = clear + 3.0
            t_free = till.after_group(
                plan, gi, clear, t_free, txn, str(rng.choice(skus)) if gi in till.gaps else "", rng
            )
            gi += 1
        t_end = round(t_free, 3)
        plan.pos.append(PosEvent(ts=t_end, type=PosEventType.TXN_END, txn=txn))
        t = t_end + 1.0
    plan.duration = max(t - 0.5, off_frame)
    plan.pos.sort(key=lambda e: e.ts)
    plan.passes.sort(key=lambda p: p.t_start)
    plan.anomalies.sort(key=lambda a: a.t_start)
    return plan


# --- rendering ---------------------------------------------------------------------------------


def _background(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """A static lane seen from above: steel counter, a ridged dark belt, and the scanner glass
    with its red laser line in the middle of the zone."""
    w, h = cfg.width, cfg.height
    bg = np.empty((h, w, 3), np.float32)
    bg[:] = (150, 152, 155)
    texture = cv2.GaussianBlur(rng.normal(0, 8, (h, w)).astype(np.float32), (0, 0), 2.5)
    bg += texture[..., None]
    top, bottom = round(0.16 * h), round(0.88 * h)
    ridges = rng.normal(0, 5, (bottom - top, 1)).astype(np.float32)
    belt = 58 + ridges + rng.normal(0, 3, (bottom - top, w)).astype(np.float32)
    bg[top:bottom] = np.stack([belt, belt + 2, belt + 4], axis=-1)
    for y in (top, bottom - 3):
        bg[y : y + 3] = (35, 35, 38)
    x1, _, x2, _ = cfg.zone
    gx1, gx2 = round((x1 + x2) / 2 - 0.07 * w), round((x1 + x2) / 2 + 0.07 * w)
    gy1, gy2 = round(0.27 * h), round(0.77 * h)
    glass = np.linspace(28, 48, gx2 - gx1, dtype=np.float32)[None, :, None] + np.array([6, 2, 0], np.float32)
    bg[gy1:gy2, gx1:gx2] = glass
    cv2.rectangle(bg, (gx1 - 2, gy1 - 2), (gx2 + 1, gy2 + 1), (120, 122, 125), 2)
    cx = (gx1 + gx2) // 2
    bg[gy1:gy2, cx - 1 : cx + 1] = bg[gy1:gy2, cx - 1 : cx + 1] * 0.4 + np.array([20, 30, 200], np.float32) * 0.6
    return bg


def _paste(frame: np.ndarray, sprite: np.ndarray, left: int, top: int) -> None:
    """Alpha-composite a premultiplied sprite onto the frame, cut at the frame's edges."""
    fh, fw = frame.shape[:2]
    sh, sw = sprite.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + sw, fw), min(top + sh, fh)
    if x0 >= x1 or y0 >= y1:
        return
    s = sprite[y0 - top : y1 - top, x0 - left : x1 - left]
    region = frame[y0:y1, x0:x1]
    region *= 1.0 - s[..., 3:]
    region += s[..., :3]


def _frames(plan: _Plan, cfg: SimConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Every frame of the video, uint8 BGR."""
    bg = _background(cfg, rng)
    w, h = cfg.width, cfg.height
    period, phase = rng.uniform(15, 40), rng.uniform(0, 2 * math.pi)
    tint = rng.uniform(0, 2 * math.pi, 3)
    # Fresh Gaussian noise for every frame is the slowest step; random windows into a few larger
    # noise fields are just as random to look at and several times cheaper.
    pad = 64
    bank = rng.standard_normal((4, h + pad, w + pad, 3), dtype=np.float32) * np.float32(cfg.noise)
    pending = sorted(plan.groups, key=lambda g: g.t0)[::-1]
    live: list[tuple[_Group, list[tuple[np.ndarray, np.ndarray]]]] = []
    for i in range(math.ceil(plan.duration * cfg.fps)):
        t = i / cfg.fps
        while pending and pending[-1].t0 <= t:  # a group starts just outside the frame's left edge
            group = pending.pop()
            live.append((group, [it.look.sprites()[:2] for it in group.items]))
        live = [(g, s) for g, s in live if g.t_gone >= t]
        frame = bg.copy()
        for group, sprites in live:
            lead, moving = group.lead_x(t)
            for item, (still, blurred) in zip(group.items, sprites, strict=True):
                sprite = blurred if moving else still
                left = round(lead - item.offset - item.anchor[0])
                if left < w and left + sprite.shape[1] > 0:
                    _paste(frame, sprite, left, round(item.y - item.anchor[1]))
        gain = 1.0 + cfg.lighting * math.sin(2 * math.pi * t / period + phase)
        colour = 1.0 + 0.25 * cfg.lighting * np.sin(2 * math.pi * t / (1.7 * period) + tint)
        frame *= (gain * colour).astype(np.float32)
        if cfg.noise:
            k, dy, dx = rng.integers(4), rng.integers(pad), rng.integers(pad)
            frame += bank[k, dy : dy + h, dx : dx + w]
        yield _jpeg(np.clip(frame, 0, 255).astype(np.uint8), cfg.jpeg_quality)


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """The frame after a JPEG round trip at `quality` (its 8x8 blocks and ringing); 0: as it is."""
    if not quality:
        return frame
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return frame
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert decoded is not None  # cv2's own JPEG encoding always decodes
    return decoded


def _write_video(
    frames: Iterator[np.ndarray], total: int, out: Path, cfg: SimConfig, progress: bool
) -> tuple[str, int]:
    """Encode to the first container OpenCV can write here; written under a temporary name and
    renamed when complete, so an interrupted run leaves no half video behind."""
    for name, fourcc in _CONTAINERS:
        tmp = out / f".partial-{name}"
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), cfg.fps, (cfg.width, cfg.height))
        if writer.isOpened():
            break
        writer.release()
    else:
        raise SimulationError(f"OpenCV cannot write {' or '.join(n for n, _ in _CONTAINERS)} on this system")
    count = 0
    try:
        for frame in tqdm(frames, total=total, disable=not progress, unit="frame", desc="simulate"):
            writer.write(frame)
            count += 1
    except BaseException:  # a bad photo, or Ctrl-C: leave no partial file
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(tmp, out / name)
    return name, count


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".partial-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Scenario:
    """What `simulate` wrote."""

    truth: Truth
    pos: tuple[PosEvent, ...]
    frames: int
    video: Path
    pos_path: Path
    truth_path: Path


def simulate(
    images: ImageSet,
    out: str | Path,
    cfg: SimConfig,
    overwrite: bool = False,
    progress: bool = False,
    coarse: Mapping[str, str] | None = None,
) -> Scenario:
    """Write OUT/video.mp4 (or .avi), OUT/pos.jsonl and OUT/truth.json for one seeded scenario.
    Existing scenario files in OUT are kept unless `overwrite`. `coarse` (SKU -> coarse class,
    `read_coarse_classes`) is what look-alike switches choose within."""
    cfg.check()
    if cfg.lookalike_rate > 0 and cfg.switch_rate > 0 and coarse is None:
        raise SimulationError(
            "look-alike switches need the photos' coarse classes (a classes.csv next to them, or --classes)"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SimulationError(f"{out}: exists and is not a folder")
    existing = [n for n in OUTPUT_NAMES if (out / n).exists()]
    if existing and not overwrite:
        raise SimulationError(
            f"{out}: already holds {', '.join(existing)}; choose another folder or overwrite them (--overwrite)"
        )
    rng = np.random.default_rng(cfg.seed)
    plan = _plan(images, cfg, rng, coarse)  # reads every photo once: a bad one stops us before OUT is touched
    out.mkdir(parents=True, exist_ok=True)
    name, count = _write_video(_frames(plan, cfg, rng), math.ceil(plan.duration * cfg.fps), out, cfg, progress)
    for stale in existing:
        if stale.startswith("video.") and stale != name:
            (out / stale).unlink()
    truth = Truth(
        name, cfg.fps, (cfg.width, cfg.height), cfg.zone, tuple(plan.passes), tuple(plan.anomalies), tuple(plan.cases)
    )
    _write_text(out / "pos.jsonl", "".join(e.to_json() + "\n" for e in plan.pos))
    _write_text(out / "truth.json", truth.to_json())
    return Scenario(truth, tuple(plan.pos), count, out / name, out / "pos.jsonl", out / "truth.json")
