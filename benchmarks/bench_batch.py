"""`reid replay-batch` throughput: the same batch of simulated recordings replayed by 1 and by 2
Ray workers on this machine, and what that means for a chain (docs/batch.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch.py [--data DATASET (default $GROCERY)]
        [--recordings 8] [--passes 40] [--workers 1,2] [--first-seed 200] [--work DIR]

Lanes are simulated from the data's val photos (seeds first-seed and up), the gallery built from its
train photos, as benchmarks/bench_replay.py does (both are kept in --work for the next run). A
quick check that it runs: --data sample/grocery --recordings 2 --passes 4.

Prints, per worker count: frames per second over the replay (from the first recording handed out
to the last result; the workers' start and gallery load, a fixed cost, shown apart), lane-hours per
core-hour (core = one worker: one Ray CPU, one inference thread), and the speed-up over one worker
against the target (2 workers >= 1.7x);
then the cores a chain needs by the formula in docs/batch.md, from the best measured rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.batch.manifest import read_manifest
from retail_reid.pipeline.batch.runner import BatchOptions, require_ray, run_batch
from retail_reid.pipeline.batch.worker import GallerySpec
from retail_reid.pipeline.harness.bench_lanes import add_data_argument, build_gallery, folder_view
from retail_reid.pipeline.harness.simulate import SimConfig, simulate

SPEEDUP_TARGET = 1.7  # 2 workers against 1, on this 2-core machine


def make_manifest(work: Path, val: Path, recordings: int, passes: int, first_seed: int) -> Path:
    """Simulated lanes (kept in WORK for the next run) and a CSV manifest over them."""
    images = folder_set(val)
    rows = ["id,video,pos,config,store,lane,start"]
    for i in range(recordings):
        seed = first_seed + i
        lane = work / f"lane{seed}"
        if not (lane / "truth.json").exists():
            simulate(images, lane, SimConfig(passes=passes, transactions=max(1, passes // 10), seed=seed))
        truth = json.loads((lane / "truth.json").read_text())
        (lane / "lane.toml").write_text(f"zone = {truth['zone']}\n")
        rows.append(
            f"lane{seed},{lane / truth['video']},{lane / 'pos.jsonl'},{lane / 'lane.toml'},"
            f"S{i % 3 + 1},L{i + 1},2026-11-30T08:00:00"
        )
    manifest = work / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(ap, "the grocery dataset (train.txt, val.txt), or a folder with train/ and val/ (sample/grocery)")
    ap.add_argument("--recordings", type=int, default=8, help="recordings in the batch")
    ap.add_argument("--passes", type=int, default=40, help="item passes per recording (about 2.5 s of video each)")
    ap.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    ap.add_argument("--first-seed", type=int, default=200)
    ap.add_argument("--work", help="keep views, gallery, lanes and runs here (default: a temporary folder)")
    a = ap.parse_args()
    ray = require_ray()  # started here, on the loopback address

    counts = [int(w) for w in a.workers.split(",")]
    data = Path(a.data)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_batch_"))
    work.mkdir(parents=True, exist_ok=True)
    if (data / "train.txt").is_file():  # the full dataset: split files
        train, val = (
            folder_view(data / "train.txt", data, work / "train"),
            folder_view(data / "val.txt", data, work / "val"),
        )
    else:  # a folder per split, as sample/grocery
        train, val = data / "train", data / "val"
    spec = GallerySpec(path=build_gallery(work, train, None))
    recordings = read_manifest(make_manifest(work, val, a.recordings, a.passes, a.first_seed))
    print(f"{len(recordings)} recordings of {a.passes} passes; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
    rates: dict[int, tuple[float, float]] = {}
    try:
        for n in counts:
            out = work / f"out-{n}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            summary = run_batch(recordings, spec, out, BatchOptions(workers=n))
            wall = time.perf_counter() - start
            if summary["failed"]:
                print(f"{n} workers: failed recordings {summary['failed']}")
                return 1
            frames = sum(r["frames"] for r in summary["per_recording"])
            lane_hours = summary["totals"]["lane_hours"]
            busy = summary["run"]["replay_seconds"]
            per_core = lane_hours / (busy * n / 3600.0)
            rates[n] = (frames / busy, per_core)
            print(
                f"{n} worker(s): {frames} frames ({lane_hours * 60:.1f} lane-minutes) in {busy:.1f} s "
                f"(+{summary['run']['start_seconds']:.1f} s starting workers; {wall:.1f} s in all): "
                f"{frames / busy:.1f} frames/s, {per_core:.1f} lane-hours per core-hour"
            )
    finally:
        ray.shutdown()
    if 1 in rates and 2 in rates:
        speedup = rates[2][0] / rates[1][0]
        verdict = "met" if speedup >= SPEEDUP_TARGET else "NOT met"
        print(f"2 workers / 1 worker: {speedup:.2f}x frames/s (target >= {SPEEDUP_TARGET}x: {verdict})")
    best = max(r[1] for r in rates.values())
    stores, lanes, hours, window = 100, 20, 14.0, 10.0
    cores = stores * lanes * hours / (best * window)
    print(
        f"sizing: cores = stores x lanes x hours / (lane-hours per core-hour x hours available) = "
        f"{stores} x {lanes} x {hours:g} / ({best:.1f} x {window:g}) = {cores:.0f} cores for a {stores}-store, "
        f"{lanes}-lane chain's {hours:g}-hour day replayed overnight in {window:g} hours"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
