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
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from retail_reid.cli import main as reid  # noqa: E402
from retail_reid.gallery import Gallery, GalleryError  # noqa: E402
from retail_reid.gallery.renderings import DEFAULT_VIEWS  # noqa: E402
from retail_reid.models.datasets import folder_set, split_file_set  # noqa: E402
from retail_reid.models.views import LaneLevel  # noqa: E402
from retail_reid.pipeline.config import LaneConfig, load_config  # noqa: E402
from retail_reid.pipeline.harness.score import Score, StoreRates, read_events, read_truth, score  # noqa: E402
from retail_reid.pipeline.harness.simulate import Difficulty, SimConfig, Truth, read_coarse_classes, simulate  # noqa: E402
from retail_reid.pipeline.replay import replay  # noqa: E402
from retail_reid.pipeline.types import Zone  # noqa: E402

TARGETS = {"non_scan": (0.95, 0.95), "product_switch": (0.85, 0.90)}  # (recall, precision)
SWITCH_SKU_TARGET = 0.80  # found switches that name the seen SKU right
FALSE_ALERT_TARGET = 1.0  # false loss alerts per 100 normal passes, at most
SPEED_TARGET = 15.0
FIRST_SEED = {  # (benchmark, development) seed of lane 0
    Difficulty.EASY: (100, 10),
    Difficulty.HARD: (300, 30),
}


def folder_view(split: Path, root: Path, dest: Path) -> Path:
    """FOLDER/<sku>/<photo> symlinks for a grocery split file (the gallery imports folders)."""
    images = split_file_set(split, root)
    for path, sku in zip(images.paths, images.labels, strict=True):
        link = dest / sku / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return dest


def build_gallery(work: Path, train: Path, model: str | None, lane_camera: str | None = None) -> Path:
    """The train photos' gallery (with lane-camera renderings at the declared level `lane_camera`,
    the profile's default views, when given), built once per model and kept in `work`."""
    root = work / (f"gallery-{lane_camera}" if lane_camera else "gallery")
    if root.exists():
        try:
            Gallery.open(root, model=model)
            return root  # reused: built earlier with this same model
        except GalleryError as e:  # made with another model: start over
            print(f"rebuilding the gallery ({e})")
            shutil.rmtree(root)
    t = time.perf_counter()
    steps = [["init", str(root)] + (["--model", model] if model else []), ["import-folder", str(root), str(train)]]
    if lane_camera:
        steps.append(["lane-camera", str(root), "--level", lane_camera, "--views", str(DEFAULT_VIEWS)])
    for step in steps:
        if reid(["gallery", *step]):
            shutil.rmtree(root)
            raise SystemExit(f"{root}: `reid gallery {step[0]}` failed (above); the gallery was removed")
    print(f"gallery: built from {train} in {time.perf_counter() - t:.0f} s")
    return root


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


@dataclass(frozen=True)
class Bench:
    """What every lane of a run shares: the work folder (the grocery splits as folders, the
    lanes, the runs), the gallery of the train photos, the lane config and the coarse classes."""

    work: Path
    gallery: Gallery
    config: LaneConfig
    coarse: dict


def prepare(a: argparse.Namespace, prefix: str) -> Bench:
    """The work folder (--work, or a new temporary one) with the splits' folder views, the gallery
    (built once per model) and the config (--config)."""
    data = Path(a.data)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    train = folder_view(data / "train.txt", data, work / "train")
    folder_view(data / "val.txt", data, work / "val")
    gallery = Gallery.open(build_gallery(work, train, a.model, a.lane_camera), model=a.model)
    return Bench(work, gallery, load_config(a.config), read_coarse_classes(data / "classes.csv"))


def simulated_lane(bench: Bench, difficulty: Difficulty, seed: int, passes: int) -> tuple[Path, Truth]:
    """Lane `seed` of a difficulty, simulated from the val photos once (kept in the work folder)."""
    sim = SimConfig.preset(difficulty, passes=passes, transactions=max(1, passes // 10), seed=seed)
    scen = bench.work / f"scenario-{difficulty}{seed}"
    if not (scen / "truth.json").exists():
        simulate(folder_set(bench.work / "val"), scen, sim, coarse=bench.coarse)
    return scen, read_truth(scen / "truth.json")


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


def add_data_argument(
    ap: argparse.ArgumentParser, what: str = "the Grocery Store Dataset folder with train.txt and val.txt"
) -> None:
    """--data, defaulting to $GROCERY (required when that is unset): every grocery benchmark takes it so."""
    ap.add_argument(
        "--data",
        default=os.environ.get("GROCERY"),
        required="GROCERY" not in os.environ,
        help=f"{what} (default: $GROCERY)",
    )


def parse_lane_arguments(ap: argparse.ArgumentParser, scenarios: int, passes: int) -> argparse.Namespace:
    """The options every lane benchmark takes (--data, --scenarios, --passes, --model, --config,
    --work), added to `ap`, parsed and checked."""
    add_data_argument(ap)
    ap.add_argument("--scenarios", type=int, default=scenarios, help="lanes per difficulty (1-19)")
    ap.add_argument("--passes", type=int, default=passes, help="item passes per lane")
    ap.add_argument("--model", help="embedder (default: the shipped model)")
    ap.add_argument("--config", help="lane config TOML")
    ap.add_argument(
        "--lane-camera",
        choices=[level.value for level in LaneLevel],
        help="also render the gallery's photos through this declared lane camera (default: none, as a new gallery)",
    )
    ap.add_argument("--work", help="keep views, gallery, scenarios and runs here (default: a temporary folder)")
    a = ap.parse_args()
    if not 1 <= a.scenarios < 20:
        ap.error("--scenarios must be 1-19 (more would reach the other lane set's seeds)")
    return a


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
