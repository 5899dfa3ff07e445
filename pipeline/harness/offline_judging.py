"""Scanned passes judged again, offline: the tuners (benchmarks/tune_switch.py, tune_view_quality.py)
replay the development lanes once, keep every scanned pass with its recognition and the simulated item
that really passed, then judge them again under each setting of a grid with the lane's own
`Recogniser.judge`, counting switches found and false switch alerts against the truth."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from retail_reid.gallery import Gallery
from retail_reid.gallery.matching import Verification
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.harness.simulate import Pass
from retail_reid.pipeline.recognition import Recogniser, Recognition
from retail_reid.pipeline.records import Verdict

T = TypeVar("T")


@dataclass(frozen=True)
class ScannedPass:
    """A judged pass that had a scan: what the lane saw and what really passed."""

    lane: str
    t_start: float
    scanned_sku: str  # as the lane assigned it
    truth: Pass | None  # the simulated item overlapping the pass most (None: none, a stray track)
    recognition: Recognition

    @property
    def switched(self) -> bool:
        """A planted switch: the item was scanned as another product."""
        return self.truth is not None and self.truth.scanned_sku not in (None, self.truth.sku)


class CachedVerify:
    """The gallery, with `verify` remembered per (embedding, SKU): judging the same passes under
    hundreds of settings asks the same questions again and again."""

    def __init__(self, gallery: Gallery):
        self._gallery = gallery
        self._verified: dict[tuple[bytes, str], Verification] = {}

    def verify(self, embedding: np.ndarray, sku: str) -> Verification:
        key = (np.asarray(embedding, np.float32).tobytes(), sku)
        if key not in self._verified:
            self._verified[key] = self._gallery.verify(embedding, sku)
        return self._verified[key]

    def __getattr__(self, name: str) -> object:  # everything else is the gallery's
        return getattr(self._gallery, name)


def collected_once(path: Path, collect: Callable[[], T]) -> T:
    """What `collect` gives, kept in `path` and read back from it next time (the replays are the slow part)."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = collect()
    path.write_bytes(pickle.dumps(value))
    return value


def hash_config(config: LaneConfig) -> str:
    """A short digest of the lane config (its settings decide the passes collected)."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:10]


def overlapping(truth_passes: tuple[Pass, ...], t_start: float, t_end: float) -> Pass | None:
    """The simulated item that overlaps the pass most in time (None: none does)."""
    best, overlap = None, 0.0
    for p in truth_passes:
        o = min(t_end, p.t_end) - max(t_start, p.t_start)
        if o > overlap:
            best, overlap = p, o
    return best


@dataclass
class Count:
    """Switch decisions over some scanned passes, against what really passed."""

    switches: int = 0
    found: int = 0
    named_right: int = 0
    normal: int = 0
    false: int = 0

    @property
    def per100(self) -> float:
        """False switch alerts per 100 normal scanned passes."""
        return 100 * self.false / max(1, self.normal)

    def row(self) -> str:
        recall = self.found / max(1, self.switches)
        return (
            f"recall {recall:.3f} ({self.found}/{self.switches}) false/100 {self.per100:.2f} ({self.false}) "
            f"named {self.named_right}/{self.found}"
        )


def judge_all(passes: list[ScannedPass], recogniser: Recogniser) -> Count:
    """Every pass judged under `recogniser`'s thresholds and counted (a stray track, no simulated item, is left out)."""
    c = Count()
    for p in passes:
        if p.truth is None:
            continue
        switch = p.switched
        j = recogniser.judge(p.recognition, p.scanned_sku)
        alert = j.verdict is Verdict.PRODUCT_SWITCH
        c.switches += switch
        c.normal += not switch
        c.found += alert and switch
        c.false += alert and not switch
        c.named_right += alert and switch and j.seen_sku == p.truth.sku
    return c
