"""The `reid` command line. Each package's own `cli` module adds its subcommands; torch is imported only
by the training-side commands, when they run, so `reid --help` stays fast on an edge box."""

from __future__ import annotations

import argparse
import sys

import retail_reid
from retail_reid.errors import ReidError
from retail_reid.gallery import cli as gallery_cli
from retail_reid.models import cli as models_cli
from retail_reid.pipeline import cli as pipeline_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid", description="Retail product re-identification for checkout loss prevention."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {retail_reid.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # in the order `reid --help` lists them: the embedder, the lane, the gallery
    for package_cli in (models_cli, pipeline_cli, gallery_cli):
        package_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `reid` command; a user's mistake is one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ReidError as e:
        print(f"reid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stdout = None  # nothing more can be written; stop Python flushing into the closed pipe
        return 141
