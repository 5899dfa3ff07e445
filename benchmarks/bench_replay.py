"""Replay accuracy and speed on lanes simulated from the grocery data's val photos, against a
gallery built from its train photos (see docs/pipeline.md for the targets and recorded figures).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_replay.py [--data DATASET]
        (DATASET: the Grocery Store Dataset, see README.md "Data"; default $GROCERY)
        [--scenarios 3] [--passes 40] [--first-seed 100] [--model M] [--work DIR] [--config lane.toml]

Seeds 100 and up are the recorded benchmark; tune on other seeds (docs/pipeline.md used 7-9).

Prints, over all scenarios together: precision and recall per alert type, how often a switch
alert names the seen SKU right, replay speed as a multiple of real time (640x480 at 15 fps), and
the lane-time delay from an item leaving the zone to its alert.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from retail_reid.cli import main as reid  # noqa: E402
from retail_reid.gallery import Gallery, GalleryError  # noqa: E402
from retail_reid.models.datasets import folder_set, split_file_set  # noqa: E402
from retail_reid.pipeline.config import load_config  # noqa: E402
from retail_reid.pipeline.replay import replay  # noqa: E402
from retail_reid.pipeline.score import read_events, read_truth, score  # noqa: E402
from retail_reid.pipeline.simulate import SimConfig, simulate  # noqa: E402
from retail_reid.pipeline.types import Zone  # noqa: E402

TARGETS = {"non_scan": (0.95, 0.90), "product_switch": (0.85, 0.90)}  # (recall, precision)
SPEED_TARGET = 10.0


def folder_view(split: Path, root: Path, dest: Path) -> Path:
    """FOLDER/<sku>/<photo> symlinks for a grocery split file (the gallery imports folders)."""
    images = split_file_set(split, root)
    for path, sku in zip(images.paths, images.labels, strict=True):
        link = dest / sku / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return dest


def build_gallery(work: Path, train: Path, model: str | None) -> Path:
    root = work / "gallery"
    if root.exists():
        try:
            Gallery.open(root, model=model)
            return root  # reused: built earlier with this same model
        except GalleryError as e:  # made with another model: start over
            print(f"rebuilding the gallery ({e})")
            shutil.rmtree(root)
    t = time.perf_counter()
    reid(["gallery", "init", str(root)] + (["--model", model] if model else []))
    reid(["gallery", "import-folder", str(root), str(train)])
    print(f"gallery: built from {train} in {time.perf_counter() - t:.0f} s")
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=os.environ.get("GROCERY"),
        required="GROCERY" not in os.environ,
        help="the Grocery Store Dataset folder with train.txt and val.txt (default: $GROCERY)",
    )
    ap.add_argument("--scenarios", type=int, default=3)
    ap.add_argument("--passes", type=int, default=40, help="item passes per scenario")
    ap.add_argument("--first-seed", type=int, default=100, help="scenario i is simulated with seed first-seed + i")
    ap.add_argument("--model", help="embedder (default: the shipped model)")
    ap.add_argument("--config", help="lane config TOML")
    ap.add_argument("--work", help="keep views, gallery, scenarios and runs here (default: a temporary folder)")
    a = ap.parse_args()
    data = Path(a.data)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_replay_"))
    work.mkdir(parents=True, exist_ok=True)
    train = folder_view(data / "train.txt", data, work / "train")
    val = folder_view(data / "val.txt", data, work / "val")
    gallery_dir = build_gallery(work, train, a.model)
    gallery = Gallery.open(gallery_dir, model=a.model)
    config = load_config(a.config)
    print(
        f"model: {gallery.embedder.path} ({gallery.embedder.fingerprint[:12]}, dim {gallery.embedder.dim}); "
        f"threads: REID_THREADS={os.environ.get('REID_THREADS', 'all')}"
    )

    totals = {k: [0, 0, 0] for k in ("non_scan", "product_switch", "scan_without_item")}  # truth, alerts, matched
    switch_right = switch_matched = 0
    speeds, delays, frame_ms, extra = [], [], [], {"unknown_item": 0}
    val_set = folder_set(val)
    for i in range(a.scenarios):
        sim = SimConfig(passes=a.passes, transactions=max(1, a.passes // 10), seed=a.first_seed + i)
        scen = work / f"scenario{a.first_seed + i}"
        if not (scen / "truth.json").exists():
            simulate(val_set, scen, sim)
        truth = read_truth(scen / "truth.json")
        out = work / f"run{a.first_seed + i}"
        cfg = dataclasses.replace(config, zone=Zone(*truth.zone))
        summary = replay(scen / truth.video, scen / "pos.jsonl", gallery, out, cfg, overwrite=True)
        result = score(truth, read_events(out / "events.jsonl"), 1.0)
        for t in result.types:
            totals[t.type][0] += t.truth
            totals[t.type][1] += t.alerts
            totals[t.type][2] += t.matched
        switch_matched += result.switches_matched
        switch_right += result.switches_sku_right
        extra["unknown_item"] += summary["counts"]["unknown_item"]
        speeds.append(summary["speed_x_realtime"])
        if summary["alert_delay_s"]:
            delays.append(summary["alert_delay_s"]["p95"])
        frame_ms.append(summary["frame_ms"]["max"])
        print(
            f"scenario {i}: {len(truth.passes)} passes, {summary['video_seconds']:.0f} s of video, "
            f"{summary['frames_processed']} frames at {summary['speed_x_realtime']}x real time; "
            f"alerts {json.dumps(summary['counts'])}"
        )

    print("\nalert type          truth  alerts  matched  recall  precision  target")
    for kind, (n_truth, n_alerts, n_matched) in totals.items():
        recall = n_matched / n_truth if n_truth else float("nan")
        precision = n_matched / n_alerts if n_alerts else float("nan")
        target = TARGETS.get(kind)
        verdict = (
            ""
            if target is None
            else ("met" if recall >= target[0] and precision >= target[1] else "NOT met")
            + f" (recall >= {target[0]}, precision >= {target[1]})"
        )
        print(f"{kind:18s} {n_truth:6d} {n_alerts:7d} {n_matched:8d}  {recall:6.3f}  {precision:9.3f}  {verdict}")
    print(f"unknown_item alerts (the simulation plants none): {extra['unknown_item']}")
    rate = switch_right / switch_matched if switch_matched else float("nan")
    print(f"product_switch: seen SKU named right in {switch_right} of {switch_matched} found ({rate:.2f})")
    print(
        f"speed: {min(speeds):.1f}x to {max(speeds):.1f}x real time (target >= {SPEED_TARGET}x); "
        f"alert delay p95 per scenario (lane time, item gone -> alert): {', '.join(f'{d:.2f} s' for d in delays)}; "
        f"slowest frame per scenario: {', '.join(f'{m:.0f} ms' for m in frame_ms)}"
    )
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
