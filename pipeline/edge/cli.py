"""`reid edge`: run one checkout lane live, and `reid edge dead-letters`: list or re-send the alerts
its webhook receiver refused for good (see docs/edge.md)."""

from __future__ import annotations

import argparse
import time

from retail_reid.pipeline.edge.log_format import LogFormat

CONFIG_HELP = "lane.toml: the lane's settings and its [edge] tables (example: deploy/lane.toml)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edge",
        help="run checkout lanes live (one, or several [[lane]]s in one process): camera and POS in, alerts out",
        description="Run the lane service: frames from a camera, a stream or a video file (played in real time), "
        "POS events over HTTP, MQTT and/or from a file, alerts to STATE/events.jsonl, GET /events, an optional "
        "webhook and MQTT broker. Stops cleanly on SIGTERM (see docs/edge.md).",
    )
    p.add_argument("--config", help=CONFIG_HELP + "; required")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--log-format",
        default=LogFormat.TEXT.value,
        choices=[f.value for f in LogFormat],
        help="text (default) or json: one JSON object per line (ts, time, level, logger, message, exception)",
    )
    p.set_defaults(func=cmd_edge)
    tasks = p.add_subparsers(dest="edge_task", metavar="TASK")
    d = tasks.add_parser(
        "dead-letters",
        help="list the alerts the webhook receiver refused for good, or re-send them",
        description="Alerts the webhook receiver refused for good (a 3xx, or a 4xx other than 408/429, "
        "dead_letter_after times) wait in STATE/webhook.dead-letters.jsonl. Without options: list them. "
        "--resend ID (repeatable) or --all: POST them again with the lane's webhook settings; each one the "
        "receiver takes leaves the list. Safe while the service runs. Exit 1 if any is refused again.",
    )
    d.add_argument("--config", required=True, help=CONFIG_HELP)
    d.add_argument("--lane", help="the lane's name, with several [[lane]] tables in the file")
    which = d.add_mutually_exclusive_group()
    which.add_argument("--resend", metavar="ID", action="append", help="re-send this alert id (repeatable)")
    which.add_argument("--all", action="store_true", help="re-send every dead letter, oldest first")
    d.set_defaults(func=cmd_dead_letters)


def cmd_edge(args: argparse.Namespace) -> int:
    from retail_reid.pipeline.edge.log_format import configure_logging
    from retail_reid.pipeline.edge.malloc_arenas import cap_malloc_arenas
    from retail_reid.pipeline.edge.service import EdgeService  # imported when used: `reid --help` stays fast
    from retail_reid.pipeline.edge.settings import EdgeError, load_edge_lanes

    if not args.config:
        raise EdgeError("--config is required: the lane's lane.toml (example: deploy/lane.toml)")
    configure_logging(args.log_level, LogFormat(args.log_format))
    cap_malloc_arenas()  # before the service's threads start: memory stays flat over weeks
    return EdgeService(load_edge_lanes(args.config)).run()


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from pathlib import Path

    from retail_reid.pipeline.edge.dead_letters import DeadLetters
    from retail_reid.pipeline.edge.outbox import dead_letters_path
    from retail_reid.pipeline.edge.settings import EdgeError, lane_named, load_edge_lanes
    from retail_reid.pipeline.edge.webhook import NAME, resend_dead_letters

    edge, _ = lane_named(load_edge_lanes(args.config), args.lane, args.config)
    state = Path(edge.state_dir)
    if not state.is_dir():
        raise EdgeError(f"{args.config}: edge.state_dir of lane {edge.lane}: {state} does not exist (never run here?)")
    if not (args.resend or args.all):
        letters = DeadLetters(dead_letters_path(state, NAME)).read()
        for letter in letters:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.at))
            kind = letter.record.get("type", "?")
            print(f"{letter.id}  {kind}  set aside {at} after {letter.attempts} attempts: {letter.error}")
        print(f"{len(letters)} dead letters in {dead_letters_path(state, NAME)}")
        return 0
    results = resend_dead_letters(edge.webhook, state, None if args.all else set(args.resend))
    for alert_id, error in results:
        print(f"{alert_id}: " + ("delivered" if error is None else f"refused again ({error}); kept"))
    failed = sum(error is not None for _, error in results)
    print(f"{len(results) - failed} of {len(results)} delivered")
    return 1 if failed else 0
