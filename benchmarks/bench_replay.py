"""Replay accuracy and speed on lanes simulated from the grocery data's val photos (which the
model never trained on), against a gallery built from its train photos, for the easy and the hard
camera side by side (see docs/pipeline.md for the targets and recorded figures).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_replay.py [--data DATASET]
        (DATASET: the Grocery Store Dataset, see README.md "Data"; default $GROCERY)
        [--difficulty easy hard] [--scenarios 3] [--passes 40] [--dev] [--model M] [--work DIR]
        [--config lane.toml] [--lane-camera middle]  (the gallery also holds lane-camera renderings)

Benchmark lanes: easy lane i has seed 100 + i, hard lane i seed 300 + i. Tune only on development
lanes (`--dev`: easy 10 + i, hard 30 + i); the two sets never share a seed as long as
--scenarios stays below 20.

Prints, per difficulty over all its lanes together: precision and recall per alert type, how often
a switch alert names the seen SKU right, false loss alerts (`reid score`'s: loss alerts matching no
true anomaly) per 100 normal passes and per 1,000 transactions, passes left unverified, every
error with its lane and time, replay speed as a multiple of real time (640x480 at 15 fps), and the lane-time
delay from an item leaving the zone to its alert.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from retail_reid.pipeline.harness.bench_lanes import FIRST_SEED, Bench, parse_lane_arguments, prepare, simulated_lane
from retail_reid.pipeline.harness.score import Score, StoreRates, read_events, score
from retail_reid.pipeline.harness.simulate import Difficulty
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.types import Zone

TARGETS = {"non_scan": (0.95, 0.95), "product_switch": (0.85, 0.90)}  # (recall, precision)
SWITCH_SKU_TARGET = 0.80  # found switches that name the seen SKU right
FALSE_ALERT_TARGET = 1.0  # false loss alerts per 100 normal passes, at most
SPEED_TARGET = 15.0


@dataclass
class Tally:
    """One difficulty's lanes added up."""

    kinds: dict[str, list[int]] = field(default_factory=dict)  # per alert type: truth, alerts, matched
    switch_right: int = 0
    switch_matched: int = 0
    rates: StoreRates = field(default_factory=StoreRates)
    verdicts: Counter = field(default_factory=Counter)
    speeds: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, lane: str, result: Score, summary: dict) -> None:
        for t in result.types:
            counts = self.kinds.setdefault(t.type, [0, 0, 0])
            for i, n in enumerate((t.truth, t.alerts, t.matched)):
                counts[i] += n
        self.errors += [
            f"{lane} {e.t_start:8.2f}s {e.kind} {e.type}: seen {e.seen_sku}, scanned {e.scanned_sku}"
            for e in result.errors
        ]
        self.switch_matched += result.switches_matched
        self.switch_right += result.switches_sku_right
        self.rates = self.rates + result.rates
        self.verdicts.update(summary["verdicts"])
        self.speeds.append(summary["speed_x_realtime"])
        if summary["alert_delay_s"]:
            self.delays.append(summary["alert_delay_s"]["p95"])
        self.frame_ms.append(summary["frame_ms"]["max"])


def run_lanes(difficulty: Difficulty, a: argparse.Namespace, bench: Bench) -> Tally:
    """Simulate (once; kept in WORK) and replay every lane of one difficulty, and score them."""
    tally = Tally()
    first = FIRST_SEED[difficulty][1 if a.dev else 0]
    for seed in range(first, first + a.scenarios):
        scen, truth = simulated_lane(bench, difficulty, seed, a.passes)
        out = bench.work / f"run-{difficulty}{seed}"
        cfg = dataclasses.replace(bench.config, zone=Zone(*truth.zone))
        summary = replay(scen / truth.video, scen / "pos.jsonl", bench.gallery, out, cfg, overwrite=True)
        tally.add(f"{difficulty}{seed}", score(truth, read_events(out / "events.jsonl"), 1.0), summary)
        print(
            f"{difficulty} lane seed {seed}: {len(truth.passes)} passes, {summary['video_seconds']:.0f} s of video "
            f"at {summary['speed_x_realtime']}x real time; alerts {json.dumps(summary['counts'])}",
            flush=True,
        )
    return tally


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def report(tallies: dict[Difficulty, Tally], show_errors: int) -> None:
    """The difficulties side by side, then each one's errors."""
    names = list(tallies)
    print("\n" + f"{'':34s}" + "".join(f"{n:>22s}" for n in names) + "   target")
    kinds = sorted({k for t in tallies.values() for k in t.kinds}, key=lambda k: (k not in TARGETS, k))
    for kind in kinds:
        target = TARGETS.get(kind)
        for what in ("recall", "precision"):
            cells = []
            for n in names:
                truth, alerts, matched = tallies[n].kinds.get(kind, (0, 0, 0))
                den = truth if what == "recall" else alerts
                cells.append(f"{_ratio(matched, den):.3f} ({matched}/{den})")
            goal = "" if target is None else f">= {target[0] if what == 'recall' else target[1]}"
            print(f"{kind + ' ' + what:34s}" + "".join(f"{c:>22s}" for c in cells) + f"   {goal}")
    rows = [
        (
            "switch: seen SKU right",
            lambda t: f"{_ratio(t.switch_right, t.switch_matched):.3f} ({t.switch_right}/{t.switch_matched})",
            f">= {SWITCH_SKU_TARGET}",
        ),
        (
            "false loss alerts / 100 normal",
            lambda t: (
                f"{100 * _ratio(t.rates.false_loss_alerts, t.rates.normal_passes):.2f} "
                f"({t.rates.false_loss_alerts}/{t.rates.normal_passes})"
            ),
            f"<= {FALSE_ALERT_TARGET}",
        ),
        (
            "false loss alerts / 1000 txns",
            lambda t: f"{1000 * _ratio(t.rates.false_loss_alerts, t.rates.transactions):.1f}",
            "",
        ),
        ("loss alerts / transaction", lambda t: f"{_ratio(t.rates.loss_alerts, t.rates.transactions):.2f}", ""),
        ("passes unverified", lambda t: f"{t.verdicts.get('unverified', 0)} of {sum(t.verdicts.values())}", ""),
        ("passes unconfirmed", lambda t: f"{t.verdicts.get('unconfirmed', 0)} of {sum(t.verdicts.values())}", ""),
        ("speed x real time (slowest lane)", lambda t: f"{min(t.speeds):.1f}", f">= {SPEED_TARGET}"),
        ("alert delay p95, worst lane (s)", lambda t: f"{max(t.delays, default=float('nan')):.2f}", ""),
        ("slowest frame (ms)", lambda t: f"{max(t.frame_ms):.0f}", ""),
    ]
    for label, cell, goal in rows:
        print(f"{label:34s}" + "".join(f"{cell(tallies[n]):>22s}" for n in names) + f"   {goal}")
    for n in names:
        errors = tallies[n].errors
        print(f"\n{n}: {len(errors)} errors" + (f" (first {show_errors})" if len(errors) > show_errors else ""))
        for line in errors[:show_errors]:
            print("  " + line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--difficulty", nargs="+", type=Difficulty, default=list(Difficulty), help="easy and/or hard")
    ap.add_argument("--dev", action="store_true", help="the development lanes (for tuning), not the benchmark's")
    ap.add_argument("--errors", type=int, default=40, help="errors listed per difficulty")
    a = parse_lane_arguments(ap, scenarios=3, passes=40)
    bench = prepare(a, "bench_replay_")
    embedder = bench.gallery.embedder
    print(
        f"model: {embedder.path} ({embedder.fingerprint[:12]}, dim {embedder.dim}); "
        f"threads: REID_THREADS={os.environ.get('REID_THREADS', 'all')}; "
        f"{'development' if a.dev else 'benchmark'} lanes"
    )
    tallies = {d: run_lanes(d, a, bench) for d in a.difficulty}
    report(tallies, a.errors)
    print(f"work folder: {bench.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
