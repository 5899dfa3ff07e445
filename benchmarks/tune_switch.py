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
import itertools
import sys

from retail_reid.pipeline.config import EventConfig
from retail_reid.pipeline.harness.bench_lanes import FIRST_SEED, Bench, parse_lane_arguments, prepare, simulated_lane
from retail_reid.pipeline.harness.offline_judging import (
    CachedVerify,
    Count,
    ScannedPass,
    collected_once,
    hash_config,
    judge_all,
    overlapping,
)
from retail_reid.pipeline.harness.simulate import Difficulty
from retail_reid.pipeline.recognition import Recogniser, Thresholds
from retail_reid.pipeline.records import PassRecord
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.types import ItemPass, Zone

GRID = {
    "switch_reject": ["confidence:0.05", "confidence:0.1", "confidence:0.2", "confidence:0.3"],
    "switch_accept": ["confidence:0.5", "confidence:0.7", "confidence:0.85", "confidence:0.9", "confidence:0.95"],
    "min_margin": [0.1, 0.2],
    "switch_min_views": [1, 2],  # crops.per_track keeps 2 views a pass
    "switch_min_agreement": [0.0, 1.0],
    "switch_view_margin": [0.0, 0.1],
}
BUDGETS = (0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0)  # false switch alerts per 100 normal passes


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
