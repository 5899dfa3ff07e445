"""`reid edge`: run one checkout lane live (see docs/edge.md)."""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edge",
        help="run one checkout lane live: camera and POS in, alerts out",
        description="Run the lane service: frames from a camera, a stream or a video file (played in real time), POS events "
        "over HTTP and/or from a file, alerts to STATE/events.jsonl, GET /events and an optional webhook. "
        "Stops cleanly on SIGTERM (see docs/edge.md).",
    )
    p.add_argument(
        "--config",
        required=True,
        help="lane.toml: the lane's settings and its [edge] tables (example: deploy/lane.toml)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retail_reid.pipeline.edge.service import EdgeService  # imported when used: `reid --help` stays fast
    from retail_reid.pipeline.edge.settings import load_edge_config

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    edge, lane = load_edge_config(args.config)
    return EdgeService(edge, lane).run()
