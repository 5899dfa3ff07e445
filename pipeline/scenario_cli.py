"""`reid simulate | score`: make checkout-lane scenarios with known anomalies, and score a run's
alerts against them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retail_reid.models.datasets import image_set
from retail_reid.pipeline.score import DEFAULT_TOL, format_score, read_events, read_truth, score
from retail_reid.pipeline.simulate import SimConfig, simulate

from retail_reid.errors import ReidError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    return w, h


def cmd_simulate(a: argparse.Namespace) -> int:
    cfg = SimConfig(
        passes=a.passes,
        transactions=a.transactions,
        non_scan_rate=a.non_scan_rate,
        switch_rate=a.switch_rate,
        scan_without_item_rate=a.scan_without_item_rate,
        pair_rate=a.pair_rate,
        pause_rate=a.pause_rate,
        fps=a.fps,
        width=a.size[0],
        height=a.size[1],
        noise=a.noise,
        lighting=a.lighting,
        seed=a.seed,
    )
    cfg.check()  # before the photos are listed: a typo in a setting should not wait on a big folder
    if not Path(a.images).exists():
        raise ReidError(f"{a.images}: no such folder or split file")
    result = simulate(image_set(a.images, a.root), a.out, cfg, overwrite=a.overwrite, progress=not a.quiet)
    truth = result.truth
    kinds = {k: sum(x.type == k for x in truth.anomalies) for k in ("non_scan", "product_switch", "scan_without_item")}
    scans = sum(e.type == "scan" for e in result.pos)
    print(
        f"wrote {result.video} ({result.frames} frames, {result.frames / cfg.fps:.1f} s at {cfg.fps:g} fps, "
        f"{cfg.width}x{cfg.height})"
    )
    print(f"wrote {result.pos_path} ({len(result.pos)} events, {scans} scans)")
    print(
        f"wrote {result.truth_path} ({len(truth.passes)} passes; anomalies: "
        + ", ".join(f"{n} {k}" for k, n in kinds.items())
        + ")"
    )
    print(f"zone: --zone {','.join(str(v) for v in truth.zone)}")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    result = score(read_truth(a.truth), read_events(a.events), a.tol)
    print(json.dumps(result.to_dict(), indent=1) if a.json else format_score(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = SimConfig()
    p = sub.add_parser("simulate", help="make a checkout-lane video, its POS log and truth.json from product photos")
    p.add_argument("out", help="folder to write video.mp4 (or .avi), pos.jsonl and truth.json into")
    p.add_argument("--images", required=True, help="folder-per-SKU tree (FOLDER/<sku>/*.jpg) or a split file (val.txt)")
    p.add_argument("--root", help="folder that relative paths in a split file start from")
    p.add_argument("--seed", type=int, default=d.seed, help="the same seed writes the same files, byte for byte")
    p.add_argument("--passes", type=int, default=d.passes, help="items crossing the lane")
    p.add_argument(
        "--transactions", type=int, default=d.transactions, help="customers; passes are shared out among them"
    )
    p.add_argument("--non-scan-rate", type=float, default=d.non_scan_rate, help="share of passes never scanned")
    p.add_argument("--switch-rate", type=float, default=d.switch_rate, help="share of passes scanned as another SKU")
    p.add_argument(
        "--scan-without-item-rate",
        type=float,
        default=d.scan_without_item_rate,
        help="scans with no item in the lane, as a share of passes",
    )
    p.add_argument(
        "--pair-rate", type=float, default=d.pair_rate, help="chance that an item is followed closely by a second"
    )
    p.add_argument(
        "--pause-rate", type=float, default=d.pause_rate, help="share of items that rest on the scanner a moment"
    )
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--size", type=_size, default=(d.width, d.height), help="frame size WIDTHxHEIGHT")
    p.add_argument("--noise", type=float, default=d.noise, help="sensor noise, standard deviation in grey levels")
    p.add_argument("--lighting", type=float, default=d.lighting, help="peak relative brightness drift")
    p.add_argument("--overwrite", action="store_true", help="replace scenario files already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("score", help="precision and recall of a run's alerts against a scenario's truth.json")
    p.add_argument("truth", help="truth.json (from reid simulate, or labelled by hand)")
    p.add_argument("events", help="events.jsonl written by a replay")
    p.add_argument(
        "--tol",
        type=float,
        default=DEFAULT_TOL,
        help=f"seconds by which an alert's span may miss the true span and still match (default {DEFAULT_TOL:g})",
    )
    p.add_argument("--json", action="store_true", help="print the score as JSON")
    p.set_defaults(func=cmd_score)
