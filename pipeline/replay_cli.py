"""`reid replay`: run the lane over a recorded video and its POS log."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from retail_reid.pipeline.config import load_config
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.types import Zone

WARNINGS_SHOWN = 10  # the rest are in summary.json


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retail_reid.gallery import Gallery  # imported when used: `reid --help` stays fast

    config = load_config(args.config)
    if args.zone:
        config = dataclasses.replace(config, zone=Zone.parse(args.zone, "--zone"))
    gallery = Gallery.open(args.gallery, model=args.model)
    shown = 0

    def warn(warning: str) -> None:  # on stderr as soon as known, most before the run starts
        nonlocal shown
        shown += 1
        if shown <= WARNINGS_SHOWN:
            print(f"warning: {warning}", file=sys.stderr)

    summary = replay(
        args.video, args.pos, gallery, args.out, config, overwrite=args.overwrite, progress=True, on_warning=warn
    )
    if shown > WARNINGS_SHOWN:
        print(f"... and {shown - WARNINGS_SHOWN} more warnings in summary.json", file=sys.stderr)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    print(f"{summary['passes']} item passes, {summary['scans']} scans; events: {counts}")
    print(
        f"{summary['frames_processed']} frames ({summary['frames_dropped']} dropped) at {summary['speed_x_realtime']}x real time"
    )
    print(f"wrote {Path(args.out) / 'events.jsonl'}, summary.json, report.html")
    return 0
