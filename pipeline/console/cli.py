"""`reid console`: serve the operator console (docs/console.md), or add an operator to its users file."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from retail_reid.pipeline.console.settings import (
    MAX_UPLOAD_MB,
    SESSION_IDLE_MINUTES,
    Bind,
    ConsoleError,
    ConsoleSettings,
)
from retail_reid.pipeline.setting_types import limit_text

log = logging.getLogger("reid.console")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="web console: review alerts, curate the gallery (needs the [console] extra)",
        description="Serve the operator console over lanes' state folders and replay outputs and one gallery "
        "(see docs/console.md). Listens on localhost only unless --allow-remote.",
    )
    p.add_argument(
        "--state", action="append", default=[], metavar="LANE_DIR", help="a `reid edge` state folder (repeat)"
    )
    p.add_argument(
        "--replay", action="append", default=[], metavar="OUT_DIR", help="a `reid replay` output folder (repeat)"
    )
    p.add_argument("--gallery", help="the gallery folder the lanes use (required to serve)")
    p.add_argument(
        "--lane-references",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of lane references (`reid replay --lane-references`; a --state folder's own is read "
        "without this) (repeat)",
    )
    p.add_argument("--users", required=True, help="operators file (TOML of scrypt hashes; see --add-user)")
    p.add_argument(
        "--data", default="console-data", help="the console's own folder: verdicts, session key (default: %(default)s)"
    )
    p.add_argument("--bind", default="127.0.0.1:8600", help="HOST:PORT to listen on (default: %(default)s)")
    p.add_argument("--allow-remote", action="store_true", help="allow a --bind address other machines can reach")
    p.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (when served over HTTPS by a proxy)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=MAX_UPLOAD_MB,
        help=f"largest request body, {limit_text(ConsoleSettings, 'max_upload_mb')} (default: %(default)g)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=4,
        help=f"requests served at once, {limit_text(ConsoleSettings, 'threads')} (default: %(default)s)",
    )
    p.add_argument(
        "--session-idle-minutes",
        type=float,
        default=SESSION_IDLE_MINUTES,
        help=f"a signed-in session unused this long ends, {limit_text(ConsoleSettings, 'session_idle_minutes')} "
        "(default: %(default)g; every session ends 12 h after sign-in)",
    )
    p.add_argument(
        "--time-zone",
        default="UTC",
        metavar="ZONE",
        help="the time zone the pages write times in, an IANA name such as Europe/Paris (UTC is shown on hover) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--add-user",
        metavar="NAME",
        help="add or replace an operator in --users (password read from the terminal or stdin) and exit",
    )
    p.add_argument(
        "--remove-user",
        metavar="NAME",
        help="remove an operator from --users and exit (a running console ends their sessions at once)",
    )
    p.set_defaults(func=run)


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ConsoleError("the two passwords differ; nothing changed")
        return first
    return sys.stdin.readline().rstrip("\n")


def lane_reference_folders(states: list[str], extra: list[str]) -> tuple[Path, ...]:
    """Each lane's STATE/lane-references that exists, and the folders given."""
    from retail_reid.gallery.lane_suggestions import FOLDER

    found = [Path(s) / FOLDER for s in states if (Path(s) / FOLDER).is_dir()]
    return tuple(dict.fromkeys([*found, *map(Path, extra)]))


def run(args: argparse.Namespace) -> int:
    if args.add_user:
        from retail_reid.pipeline.console.users import add_operator

        add_operator(Path(args.users), args.add_user, _password())
        print(f"{args.users}: operator {args.add_user} saved")
        return 0
    if args.remove_user:
        from retail_reid.pipeline.console.users import remove_operator

        remove_operator(Path(args.users), args.remove_user)
        print(f"{args.users}: operator {args.remove_user} removed")
        return 0
    if not args.gallery:
        raise ConsoleError("--gallery is required: the gallery folder the lanes use")
    bind = Bind.parse(args.bind)
    settings = ConsoleSettings(
        lanes=tuple(Path(p) for p in args.state),
        replays=tuple(Path(p) for p in args.replay),
        gallery=Path(args.gallery),
        users=Path(args.users),
        references=lane_reference_folders(args.state, args.lane_references),
        data=Path(args.data),
        max_upload_mb=args.max_upload_mb,
        threads=args.threads,
        secure_cookies=args.secure_cookies,
        session_idle_minutes=args.session_idle_minutes,
        time_zone=args.time_zone,
    )
    if not bind.loopback and not args.allow_remote:
        raise ConsoleError(
            f"--bind {args.bind}: other machines could reach the console there; it listens on localhost only "
            "unless you add --allow-remote (then serve it over HTTPS, see docs/console.md)"
        )
    try:
        from retail_reid.pipeline.console.app import create_app
        from retail_reid.pipeline.console.server import make_server
    except ImportError as e:
        raise ConsoleError(f"the console needs the [console] extra: pip install 'retail-reid[console]' ({e})") from None
    app = create_app(settings)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = make_server(app, settings, bind)
    where = "localhost only" if bind.loopback else "reachable from other machines"
    log.info("reid console on http://%s:%s/ (%s)", bind.host, server.effective_port, where)
    server.run()
    return 0
