"""The lane's commands: `reid simulate | score | events | replay | edge | schema`. Make checkout-lane scenarios with
known anomalies, replay a recorded lane against its POS log, read and score its alerts, run a lane live."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from pathlib import Path

from retail_reid.errors import ReidError
from retail_reid.models.datasets import image_set
from retail_reid.pipeline.batch import cli as batch_cli
from retail_reid.pipeline.config import load_config
from retail_reid.pipeline.console import cli as console_cli
from retail_reid.pipeline.contract import SchemaName, load_schema, schema_text
from retail_reid.pipeline.edge import cli as edge_cli
from retail_reid.pipeline.harness.score import (
    DEFAULT_TOL,
    Alert,
    check_same_recording,
    format_score,
    read_events,
    read_truth,
    score,
)
from retail_reid.pipeline.harness.simulate import (
    HARD_SETTINGS,
    Difficulty,
    SimConfig,
    find_coarse_classes,
    read_coarse_classes,
    simulate,
)
from retail_reid.pipeline.harness.simulate_pos import TillRates
from retail_reid.pipeline.recording import RecordingError, RecordingIdentity, parse_start
from retail_reid.pipeline.types import Zone

WARNINGS_SHOWN = 10  # replay warnings printed; the rest are in summary.json


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    return w, h


def _min_max(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, e.g. 80-130, got {text!r}") from None
    return lo, hi


def cmd_simulate(a: argparse.Namespace) -> int:
    camera = {k: getattr(a, k) for k in HARD_SETTINGS if getattr(a, k) is not None}
    cfg = SimConfig.preset(
        a.difficulty,
        **camera,
        passes=a.passes,
        transactions=a.transactions,
        non_scan_rate=a.non_scan_rate,
        switch_rate=a.switch_rate,
        scan_without_item_rate=a.scan_without_item_rate,
        pause_rate=a.pause_rate,
        till=TillRates(**{f.name: getattr(a, f"{f.name}_rate") for f in dataclasses.fields(TillRates)}),
        fps=a.fps,
        width=a.size[0],
        height=a.size[1],
        seed=a.seed,
    )
    cfg.check()  # before the photos are listed: a typo in a setting should not wait on a big folder
    if not Path(a.images).exists():
        raise ReidError(f"{a.images}: no such folder or split file")
    classes = a.classes or find_coarse_classes(a.images, a.root)
    coarse = read_coarse_classes(classes) if classes and cfg.lookalike_rate > 0 else None
    result = simulate(
        image_set(a.images, a.root), a.out, cfg, overwrite=a.overwrite, progress=not a.quiet, coarse=coarse
    )
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
    if truth.pos_cases:
        cases = Counter(c.case for c in truth.pos_cases)
        print("till cases: " + ", ".join(f"{n} {k}" for k, n in cases.items()))
    print(f"zone: --zone {','.join(str(v) for v in truth.zone)}")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    truth, events = read_truth(a.truth), read_events(a.events)
    check_same_recording(a.truth, truth, events)
    result = score(truth, events, a.tol)
    print(json.dumps(result.to_dict(), indent=1) if a.json else format_score(result))
    return 0


def _clock(seconds: float) -> str:
    minutes, s = divmod(seconds, 60)
    return f"{int(minutes)}:{s:04.1f}"


def _span(start: float, end: float) -> str:
    return _clock(start) if round(start, 1) == round(end, 1) else f"{_clock(start)}-{_clock(end)}"


def format_alerts(alerts: tuple[Alert, ...]) -> str:
    """The alerts as a table an analyst reads: when, what, the SKU seen, the SKU scanned, how sure."""
    rows = [f"{'time':<15} {'type':<18} {'seen':<26} {'scanned':<26} {'confidence':>10}"]
    for x in sorted(alerts, key=lambda x: x.t_start):
        conf = "-" if x.confidence is None else f"{x.confidence:.2f}"
        rows.append(
            f"{_span(x.t_start, x.t_end):<15} {x.type.replace('_', ' '):<18} "
            f"{x.seen_sku or '-':<26} {x.scanned_sku or '-':<26} {conf:>10}"
        )
    rows.append(f"{len(alerts)} alert{'' if len(alerts) == 1 else 's'}")
    return "\n".join(rows)


def cmd_events(a: argparse.Namespace) -> int:
    print(format_alerts(read_events(a.events).alerts))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from retail_reid.gallery import Gallery  # imported when used: `reid --help` stays fast
    from retail_reid.pipeline.replay import replay

    recording = _recording(args)  # before any work: a typo stops it at once
    config = load_config(args.config)
    if args.zone:
        config = dataclasses.replace(config, zone=Zone.parse(args.zone, "--zone"))
    # The replay observes frames (decode, detect, track) on a thread of its own, so the embedder
    # takes the other cores: on 2 cores one inference thread ran 12-16x real time, two 10-11x.
    threads = None if os.environ.get("REID_THREADS") else max(1, (os.cpu_count() or 2) - 1)
    gallery = Gallery.open(args.gallery, model=args.model, threads=threads)
    shown = 0

    def warn(warning: str) -> None:  # on stderr as soon as known, most before the run starts
        nonlocal shown
        shown += 1
        if shown <= WARNINGS_SHOWN:
            print(f"warning: {warning}", file=sys.stderr)

    sampler = None
    if args.lane_references:
        from retail_reid.pipeline.lane_references import open_sampler

        sampler = open_sampler(Path(args.lane_references), config.lane_references, gallery, Path(args.video).stem)
    summary = replay(
        args.video,
        args.pos,
        gallery,
        args.out,
        config,
        overwrite=args.overwrite,
        progress=True,
        on_warning=warn,
        references=sampler,
        labels=None if sampler is None else sampler.labels,
        recording=recording,
    )
    if shown > WARNINGS_SHOWN:
        print(f"... and {shown - WARNINGS_SHOWN} more warnings in summary.json", file=sys.stderr)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    print(f"{summary['passes']} item passes, {summary['scans']} scans; events: {counts}")
    print(
        f"{summary['frames_processed']} frames ({summary['frames_dropped']} dropped) "
        f"at {summary['speed_x_realtime']}x real time"
    )
    print(f"wrote {Path(args.out) / 'events.jsonl'}, summary.json, report.html")
    if sampler is not None:
        print(
            f"kept {sampler.kept} lane reference crops in {args.lane_references}"
            + (f" ({sampler.error})" if sampler.error else "")
        )
    return 0


def _recording(args: argparse.Namespace) -> RecordingIdentity | None:
    """`--store`, `--lane` and `--start` together, or none of them."""
    given = {"--store": args.store, "--lane": args.lane, "--start": args.start}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ReidError(f"{', '.join(missing)}: needed with {', '.join(n for n in given if n not in missing)}")
    start = parse_start(args.start, "--start")  # a RecordingError naming --start
    try:
        return RecordingIdentity(store=args.store, lane=args.lane, start=start)
    except RecordingError as e:  # a blank --store or --lane
        raise RecordingError(f"--{e}") from None


def cmd_schema(a: argparse.Namespace) -> int:
    if a.out is not None:
        out = Path(a.out)
        for name in SchemaName:
            try:
                out.mkdir(parents=True, exist_ok=True)
                (out / name.file_name).write_text(schema_text(name), encoding="utf-8")
            except OSError as e:
                raise ReidError(f"{out / name.file_name}: cannot write ({e.strerror or e})") from None
            print(f"wrote {out / name.file_name}")
        return 0
    if a.name is None:
        for name in SchemaName:
            doc = load_schema(name)
            print(f"{name.value:<12} {name.file_name:<26} {doc.get('title') or doc['info']['title']}")
        return 0
    print(schema_text(SchemaName(a.name)), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the lane's subcommands to the `reid` parser, in the order `reid --help` lists them."""
    for add in (
        _add_simulate,
        _add_score,
        _add_events,
        _add_replay,
        batch_cli.register,
        console_cli.register,
        _add_schema,
        edge_cli.register,
    ):
        add(sub)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
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
        "--pair-rate", type=float, help=f"chance that an item is followed closely by a second ({d.pair_rate})"
    )
    p.add_argument(
        "--pause-rate", type=float, default=d.pause_rate, help="share of items that rest on the scanner a moment"
    )
    _add_till_flags(p)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--size", type=_size, default=(d.width, d.height), help="frame size WIDTHxHEIGHT")
    p.add_argument("--noise", type=float, help=f"sensor noise, standard deviation in grey levels ({d.noise:g})")
    p.add_argument("--lighting", type=float, help=f"peak relative brightness drift ({d.lighting:g})")
    p.add_argument(
        "--difficulty",
        type=Difficulty,
        choices=list(Difficulty),
        default=Difficulty.EASY,
        help="hard: small, blurred, hand-covered items close behind each other, JPEG blocks, look-alike switches "
        "(the flags below override it)",
    )
    p.add_argument("--item-size", dest="item_px", type=_min_max, help="items' long side MIN-MAX in pixels")
    p.add_argument(
        "--shutter", type=float, help=f"share of the frame time the shutter is open: motion blur ({d.shutter:g})"
    )
    p.add_argument("--jpeg-quality", type=int, help="JPEG quality each frame goes through first (0: none)")
    p.add_argument("--hand-cover", type=float, help="the most of an item the holding hand hides (0 to 0.5)")
    p.add_argument("--pair-gap", type=_min_max, help="pixels MIN-MAX between an item and the one close behind it")
    p.add_argument("--lookalike-rate", type=float, help="share of switches scanned as a SKU of the same coarse class")
    p.add_argument("--classes", help="classes.csv giving each SKU's coarse class (default: found next to --images)")
    p.add_argument("--overwrite", action="store_true", help="replace scenario files already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_simulate)


def _add_till_flags(p: argparse.ArgumentParser) -> None:
    """What the simulated till does besides one scan per item (docs/scenarios.md), as shares of passes."""
    helps = {
        "quantity": "passes paid by one quantity scan (qty N) for 2-3 identical items",
        "void": "legitimate voids: re-scanned, scanned with no item kept, or a double scan voided",
        "void_kept": "scans voided and not scanned again, the item kept: unpaid (a non-scan)",
        "double_scan": "items scanned twice: the customer is overcharged (a customer-service event)",
        "keyed": "produce keyed or weighed with its own code",
        "keyed_switch": "produce keyed as another product (a product switch)",
    }
    for key, text in helps.items():
        p.add_argument(f"--{key.replace('_', '-')}-rate", type=float, default=0.0, help=f"share of passes: {text}")


def _add_score(sub: argparse._SubParsersAction) -> None:
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


def _add_events(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="a run's alerts as a table: time, type, SKU seen, SKU scanned, confidence")
    p.add_argument("events", help="events.jsonl written by a replay or the lane service")
    p.set_defaults(func=cmd_events)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="find non-scans and product switches in a recorded checkout video",
        description="Replay a recorded checkout lane against its POS log; writes OUT/events.jsonl, "
        "OUT/summary.json, OUT/report.html and the evidence crops (see docs/pipeline.md).",
    )
    p.add_argument("video", help="video file (or a folder of frame images, played at 15 fps)")
    p.add_argument(
        "--pos", required=True, help="POS log, JSON lines; timestamps in seconds from the start of the video"
    )
    p.add_argument("--gallery", required=True, help="gallery folder (reid gallery init / import-folder)")
    p.add_argument("--zone", help="scan zone X1,Y1,X2,Y2 in frame pixels (overrides the config's zone)")
    p.add_argument("--out", required=True, help="folder for the results; must not exist or be empty unless --overwrite")
    p.add_argument("--model", help="embedder model file (default: the one the gallery was built with)")
    p.add_argument("--config", help="lane settings, TOML (see docs/pipeline.md)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier replay in OUT")
    p.add_argument(
        "--lane-references",
        metavar="DIR",
        help="keep crops of confidently verified passes in DIR as suggested gallery references "
        "(rules: the config's [lane_references] table; docs/console.md)",
    )
    p.add_argument("--store", help="the store the recording was made in (with --lane and --start)")
    p.add_argument("--lane", help="the recording's lane (with --store and --start)")
    p.add_argument(
        "--start",
        metavar="ISO8601",
        help="wall-clock time of the video's first frame, e.g. 2026-11-30T09:00:00+01:00 (UTC without an offset); "
        "the console dates the alerts by it",
    )
    p.set_defaults(func=cmd_replay)


def _add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schemas of events, POS lines, health and lane.toml, and the edge's OpenAPI document",
        description="Without NAME, list the documents; with NAME, print it; with --out, write them all "
        "to a folder (they refer to each other by file name). docs/edge.md, 'The contract'.",
    )
    p.add_argument("name", nargs="?", choices=[n.value for n in SchemaName], metavar="NAME", help="one of: %(choices)s")
    p.add_argument("--out", metavar="DIR", help="write every document to this folder")
    p.set_defaults(func=cmd_schema)
