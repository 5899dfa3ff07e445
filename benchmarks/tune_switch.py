"""Choose the product-switch decision's settings on the development lanes, offline.

    OMP_NUM_THREADS=1 REID_THREADS=1 .venv/bin/python benchmarks/tune_switch.py --data $GROCERY \
        --scenarios 10 --passes 50 --work /tmp/tune12 [--model M] [--false-budget 0.8] [--lane-camera middle]

Replays the development lanes (easy seeds 10+, hard seeds 30+; never the benchmark's) once, keeps
every scanned pass with its crops, recognises it once, then judges it again under each setting
of the grid below with the lane's own `Recogniser.judge`, against the simulator's truth (the item
that really passed). Prints, per setting, switch recall, false switch alerts per 100 normal
scanned passes and how often a found switch names the seen SKU right, for the easy and the hard
lanes; the settings within the false-alert budget on both, best pooled recall first; and the
lane defaults' row. Only the switch decision's settings move; the views a pass keeps and their
quality bar stay the lane config's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay import FIRST_SEED, Bench, parse_lane_arguments, prepare, simulated_lane

from retail_reid.gallery import Gallery
from retail_reid.gallery.matching import Verification
from retail_reid.pipeline.config import EventConfig, LaneConfig
from retail_reid.pipeline.recognition import Recogniser, Recognition, Thresholds
from retail_reid.pipeline.records import PassRecord, Verdict
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.simulate import Difficulty, Pass
from retail_reid.pipeline.types import ItemPass, Zone

GRID = {
    "switch_reject": ["confidence:0.05", "confidence:0.1", "confidence:0.2", "confidence:0.3"],
    "switch_accept": ["confidence:0.5", "confidence:0.7", "confidence:0.85", "confidence:0.9", "confidence:0.95"],
    "min_margin": [0.1, 0.2],
    "switch_min_views": [1, 2],  # crops.per_track keeps 2 views a pass
    "switch_min_agreement": [0.0, 1.0],
    "switch_view_margin": [0.0, 0.1],
}
T = TypeVar("T")
BUDGETS = (0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0)  # false switch alerts per 100 normal passes


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


def collect(difficulty: Difficulty, a: argparse.Namespace, bench: Bench) -> list[ScannedPass]:
    """Replay the development lanes of one difficulty; every scanned pass, recognised once."""
    recogniser = Recogniser(bench.gallery, Thresholds.resolve(bench.config.events, bench.gallery.calibration))
    out: list[ScannedPass] = []
    first = FIRST_SEED[difficulty][1]
    for seed in range(first, first + a.scenarios):
        scen, truth = simulated_lane(bench, difficulty, seed, a.passes)
        kept: list[tuple[ItemPass, PassRecord]] = []
        replay(
            scen / truth.video,
            scen / "pos.jsonl",
            bench.gallery,
            bench.work / f"run-{difficulty}{seed}",
            dataclasses.replace(bench.config, zone=Zone(*truth.zone)),
            overwrite=True,
            references=lambda item, record, into=kept: into.append((item, record)),
        )
        scanned = [(item, rec) for item, rec in kept if rec.scanned_sku is not None and item.crops]
        recognitions = recogniser.recognise([item for item, _ in scanned])
        for (_, rec), recognition in zip(scanned, recognitions, strict=True):
            truth_pass = overlapping(truth.passes, rec.t_start, rec.t_end)
            out.append(ScannedPass(f"{difficulty}{seed}", rec.t_start, rec.scanned_sku, truth_pass, recognition))
        print(f"{difficulty} lane seed {seed}: {len(scanned)} scanned passes", flush=True)
    return out


@dataclass
class Count:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--false-budget", type=float, default=0.8, help="false switch alerts per 100 normal passes")
    ap.add_argument("--show", type=int, default=8, help="settings listed within --false-budget")
    a = parse_lane_arguments(ap, scenarios=10, passes=50)
    bench = prepare(a, "tune_switch_")
    gallery, config = bench.gallery, bench.config
    # The replays are the slow part: their passes are kept per model, config and lanes.
    rendered = f"-{a.lane_camera}-renderings" if a.lane_camera else ""
    key = f"{gallery.embedder.fingerprint[:12]}{rendered}-{a.scenarios}x{a.passes}-{hash_config(config)}"
    cache = bench.work / f"scanned-passes-{key}.pickle"
    lanes = collected_once(cache, lambda: {d: collect(d, a, bench) for d in Difficulty})
    cached = CachedVerify(gallery)

    def counts(events: EventConfig) -> dict[Difficulty, Count]:
        r = Recogniser(cached, Thresholds.resolve(events, gallery.calibration))  # type: ignore[arg-type]
        return {d: judge_all(p, r) for d, p in lanes.items()}

    rows = []
    for values in itertools.product(*GRID.values()):
        setting = dict(zip(GRID, values, strict=True))
        c = counts(dataclasses.replace(config.events, **setting))
        rows.append((sum(x.found for x in c.values()), setting, c))

    def show(setting: dict, c: dict[Difficulty, Count]) -> None:
        print(" ", " ".join(f"{k}={v}" for k, v in setting.items()))
        for d, x in c.items():
            print(f"      {d}: {x.row()}")

    print(f"\n{len(rows)} settings. The most switches found within each false-alert budget on both difficulties:")
    for budget in BUDGETS:
        fitting = [r for r in rows if all(x.per100 <= budget for x in r[2].values())]
        if fitting:
            print(f"\n<= {budget} false switch alerts per 100 normal passes:")
            show(*max(fitting, key=lambda r: (r[0], -sum(x.false for x in r[2].values())))[1:])
    print(f"\nWithin {a.false_budget} per 100 on both, most switches found first:")
    fitting = [r for r in rows if all(x.per100 <= a.false_budget for x in r[2].values())]
    for _, setting, c in sorted(fitting, key=lambda r: -r[0])[: a.show]:
        show(setting, c)
    evidence = {k: getattr(config.events, k) for k in GRID if k not in ("switch_reject", "switch_accept")}
    print("\nThe lane defaults' view evidence, each pair of thresholds:")
    for _, setting, c in rows:
        if all(setting[k] == v for k, v in evidence.items()):
            show(setting, c)
    print("\nlane defaults:")
    for d, x in counts(config.events).items():
        print(f"      {d}: {x.row()}")
    print(f"work folder: {bench.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
