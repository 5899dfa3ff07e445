"""The `reid` command line. Each package registers its own subcommands; torch is imported only
by the training-side commands, when they run."""

from __future__ import annotations

import argparse
import importlib
import sys

from retail_reid.errors import ReidError

# Modules whose `register(subparsers)` adds their subcommands, in the order `reid --help` lists them.
COMMAND_MODULES = (
    "retail_reid.models.cli",
    "retail_reid.pipeline.scenario_cli",
    "retail_reid.pipeline.replay_cli",
    "retail_reid.pipeline.edge_cli",
    "retail_reid.pipeline.console.cli",
    "retail_reid.gallery.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid", description="Retail product re-identification for checkout loss prevention."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
