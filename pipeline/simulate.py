"""Checkout-lane scenarios made from product photos: a video, its POS log and the truth about both.

Recorded lanes with labelled thefts are scarce, so the detector, tracker, matcher and event
logic are measured on simulated lanes instead: a top-down camera over a belt and scanner glass;
each item (a product photo cut to a rounded shape, held by a hand) crosses the scan zone from
left to right, sometimes pausing on the scanner, sometimes right behind another item; lighting
drifts, the sensor is noisy and moving items blur. The till scans most items while they cross
the scanner; the rest are the anomalies we hunt: non-scans, product switches (the till names a
different SKU) and scans with no item in the lane. Everything is drawn from one seeded RNG, so a
seed reproduces the same files byte for byte.

The simulation is fair to the vision stages on purpose: every item is fully visible (the hand
covers only an edge), enters and leaves the zone clearly, and no two items overlap.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from retail_reid.errors import ReidError
from retail_reid.images import read_image
from retail_reid.models.datasets import ImageSet
from retail_reid.pipeline.pos import PosEvent, PosEventType

OUTPUT_NAMES = ("video.mp4", "video.avi", "pos.jsonl", "truth.json")
# Containers tried in order: MPEG-4 Part 2 in MP4 is written by every opencv-python-headless
# wheel; Motion-JPEG in AVI is the fallback where FFmpeg is missing.
_CONTAINERS = (("video.mp4", "mp4v"), ("video.avi", "MJPG"))
# Skin tones (BGR) for the cashier's hands.
_SKIN = ((172, 196, 232), (141, 170, 214), (110, 142, 198), (86, 116, 170), (60, 84, 128), (45, 60, 92))


class SimulationError(ReidError, ValueError):
    """Settings or inputs a scenario cannot be made from; the message names the culprit."""


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
    fps: float = 15.0
    width: int = 640
    height: int = 480
    noise: float = 3.0  # sensor noise, standard deviation in grey levels
    lighting: float = 0.12  # peak relative brightness drift over the video
    seed: int = 0

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
        if not 5.0 <= self.fps <= 60.0:
            raise SimulationError(f"fps must be between 5 and 60, got {self.fps}")
        if not (320 <= self.width <= 1920 and 240 <= self.height <= 1080):
            raise SimulationError(f"frame size must be within 320x240 .. 1920x1080, got {self.width}x{self.height}")
        if not 0.0 <= self.noise <= 25.0:
            raise SimulationError(f"noise must be between 0 and 25 grey levels, got {self.noise}")
        if not 0.0 <= self.lighting <= 0.4:
            raise SimulationError(f"lighting drift must be between 0 and 0.4, got {self.lighting}")

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
    txn: str


@dataclass(frozen=True)
class Anomaly:
    """Something the system should alert on. A scan without an item spans the scan's instant."""

    type: str  # "non_scan" | "product_switch" | "scan_without_item" (hand-labelled truth may add "unknown_item")
    t_start: float
    t_end: float
    seen_sku: str | None
    scanned_sku: str | None
    txn: str | None = None


@dataclass(frozen=True)
class Truth:
    """The contents of truth.json (read back by `retail_reid.pipeline.score.read_truth`). `video` is relative
    to the truth file's folder."""

    video: str
    fps: float
    size: tuple[int, int]
    zone: tuple[int, int, int, int]
    passes: tuple[Pass, ...]
    anomalies: tuple[Anomaly, ...]

    def to_dict(self) -> dict:
        return {
            "video": self.video,
            "fps": self.fps,
            "size": list(self.size),
            "zone": list(self.zone),
            "passes": [asdict(p) for p in self.passes],
            "anomalies": [asdict(a) for a in self.anomalies],
        }

    def to_json(self) -> str:
        """JSON with one pass or anomaly per line, so a person can read and diff it."""
        d = self.to_dict()
        head = "".join(f' "{k}": {json.dumps(d[k])},\n' for k in ("video", "fps", "size", "zone"))
        lists = [
            f' "{k}": [' + ",".join(f"\n  {json.dumps(x)}" for x in d[k]) + ("\n ]" if d[k] else "]")
            for k in ("passes", "anomalies")
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
            _hand(canvas, (m, m, m + w, m + h), self.hand, rng)
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


def _hand(canvas: np.ndarray, box: tuple[float, float, float, float], side: str, rng: np.random.Generator) -> None:
    """Paint a hand on the RGBA canvas holding the product in `box` by its trailing ("behind")
    or bottom ("below") edge; the fingers reach only a little way onto the product."""
    x1, y1, x2, y2 = box
    size = 0.7 * max(x2 - x1, y2 - y1)  # the hand's scale: a palm a quarter to a third of the item's size
    mask = np.zeros(canvas.shape[:2], np.uint8)
    finger_w = max(2, int(0.05 * size))
    if side == "behind":
        cy = (y1 + y2) / 2 + rng.uniform(-0.15, 0.15) * (y2 - y1)
        palm = (x1 - 0.14 * size, cy)
        axes, wrist_dir = (0.16 * size, 0.22 * size), (-1.0, 0.35)
        tips = [(x1 + 0.08 * size, cy + k * 0.08 * size) for k in (-1.5, -0.5, 0.5, 1.5)]
    else:
        cx = (x1 + x2) / 2 + rng.uniform(-0.2, 0.2) * (x2 - x1)
        palm = (cx, y2 + 0.14 * size)
        axes, wrist_dir = (0.22 * size, 0.16 * size), (-0.35, 1.0)
        tips = [(cx + k * 0.08 * size, y2 - 0.08 * size) for k in (-1.5, -0.5, 0.5, 1.5)]
    px, py = palm
    cv2.ellipse(mask, (round(px), round(py)), (round(axes[0]), round(axes[1])), 0, 0, 360, 255, -1, cv2.LINE_AA)
    norm = math.hypot(*wrist_dir)
    wx, wy = px + wrist_dir[0] / norm * 0.35 * size, py + wrist_dir[1] / norm * 0.35 * size
    cv2.line(mask, (round(px), round(py)), (round(wx), round(wy)), 255, int(0.26 * size), cv2.LINE_AA)
    for tx, ty in tips:
        cv2.line(mask, (round(px), round(py)), (round(tx), round(ty)), 255, finger_w, cv2.LINE_AA)
    skin = np.array(_SKIN[int(rng.integers(len(_SKIN)))], np.float32)
    ys = np.linspace(0.85, 1.1, canvas.shape[0], dtype=np.float32)[:, None, None]  # light from above
    a = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255.0
    canvas[..., :3] = canvas[..., :3] * (1 - a) + skin * ys * a
    canvas[..., 3:] = canvas[..., 3:] * (1 - a) + a


def _plan(images: ImageSet, cfg: SimConfig, rng: np.random.Generator) -> _Plan:
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
    w, h = cfg.width, cfg.height
    x1, _, x2, _ = cfg.zone
    mid = (x1 + x2) / 2
    plan = _Plan()

    def other_sku(sku: str) -> str:
        return str(rng.choice([s for s in skus if s != sku]))

    # Split passes into transactions, then into groups of one or two items.
    txn_groups: list[tuple[str, list[list[int]]]] = []
    for t, idx in enumerate(np.array_split(np.arange(n), cfg.transactions), start=1):
        groups, i = [], 0
        while i < len(idx):
            if i + 1 < len(idx) and rng.random() < cfg.pair_rate:
                groups.append([int(idx[i]), int(idx[i + 1])])
                i += 2
            else:
                groups.append([int(idx[i])])
                i += 1
        txn_groups.append((f"T{t}", groups))
    n_groups = sum(len(g) for _, g in txn_groups)
    phantom_after = set(rng.permutation(n_groups)[: min(n_groups, round(cfg.scan_without_item_rate * n))].tolist())
    pausing = set(rng.permutation(n_groups)[: round(cfg.pause_rate * n_groups)].tolist())

    t, gi, off_frame = 0.5, 0, 0.0
    for txn, groups in txn_groups:
        plan.pos.append(PosEvent(ts=round(t, 3), type=PosEventType.TXN_START, txn=txn))
        t_free = t + 0.5  # when the next item may start to enter the zone (the zone is empty then)
        for members in groups:
            speed = float(rng.uniform(250, 400))
            blur_px = 0.2 * speed / cfg.fps  # the shutter is open a fifth of the frame time
            items, prev = [], None
            for j, pass_index in enumerate(members):
                sku = str(rng.choice(skus)) if prev is None or len(skus) < 2 else other_sku(prev)
                prev = sku
                photo = by_sku[sku][int(rng.integers(len(by_sku[sku])))]
                hand = ("below" if j == 0 else "behind") if len(members) == 2 else str(rng.choice(["behind", "below"]))
                item = _Item.planned(_Look(photo, int(rng.integers(2**63)), rng.uniform(0.26, 0.34) * h, hand, blur_px))
                item.y = 0.52 * h + rng.uniform(-0.07, 0.07) * h
                if j:
                    ahead = items[-1][0]
                    item.offset = ahead.offset + (ahead.width + item.width) / 2 + rng.uniform(20, 45)
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
                scanned = None if kind == "non_scan" else other_sku(sku) if kind == "product_switch" else sku
                if scanned is not None:
                    ts = group.time_at(mid + item.offset) + rng.uniform(-0.1, 0.5)
                    plan.pos.append(PosEvent(ts=round(ts, 3), type=PosEventType.SCAN, sku=scanned, txn=txn))
                plan.passes.append(Pass(round(start, 3), round(end, 3), sku, scanned, txn))
                if kind != "ok":
                    plan.anomalies.append(Anomaly(kind, round(start, 3), round(end, 3), sku, scanned, txn))
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
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _write_video(
    frames: Iterator[np.ndarray], total: int, out: Path, cfg: SimConfig, progress: bool
) -> tuple[str, int]:
    """Encode to the first container OpenCV can write here; written under a temporary name and
    renamed when complete, so an interrupted run leaves no half video behind."""
    for name, fourcc in _CONTAINERS:
        tmp = out / f".partial-{name}"
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), cfg.fps, (cfg.width, cfg.height))
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
    images: ImageSet, out: str | Path, cfg: SimConfig, overwrite: bool = False, progress: bool = False
) -> Scenario:
    """Write OUT/video.mp4 (or .avi), OUT/pos.jsonl and OUT/truth.json for one seeded scenario.
    Existing scenario files in OUT are kept unless `overwrite`."""
    cfg.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SimulationError(f"{out}: exists and is not a folder")
    existing = [n for n in OUTPUT_NAMES if (out / n).exists()]
    if existing and not overwrite:
        raise SimulationError(
            f"{out}: already holds {', '.join(existing)}; choose another folder or overwrite them (--overwrite)"
        )
    rng = np.random.default_rng(cfg.seed)
    plan = _plan(images, cfg, rng)  # reads every photo once: a bad one stops us before OUT is touched
    out.mkdir(parents=True, exist_ok=True)
    name, count = _write_video(_frames(plan, cfg, rng), math.ceil(plan.duration * cfg.fps), out, cfg, progress)
    for stale in existing:
        if stale.startswith("video.") and stale != name:
            (out / stale).unlink()
    truth = Truth(name, cfg.fps, (cfg.width, cfg.height), cfg.zone, tuple(plan.passes), tuple(plan.anomalies))
    _write_text(out / "pos.jsonl", "".join(e.to_json() + "\n" for e in plan.pos))
    _write_text(out / "truth.json", truth.to_json())
    return Scenario(truth, tuple(plan.pos), count, out / name, out / "pos.jsonl", out / "truth.json")
