"""`reid schema [NAME] [--out DIR]`: print or save the published JSON Schemas and the OpenAPI
document (`retail_reid.pipeline.contract`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retail_reid.pipeline.contract import SchemaName, load_schema, schema_text

from retail_reid.errors import ReidError


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
    p = sub.add_parser(
        "schema",
        help="print the JSON Schemas of events, POS lines and health, and the edge's OpenAPI document",
        description="Without NAME, list the documents; with NAME, print it; with --out, write them all "
        "to a folder (they refer to each other by file name). docs/edge.md, 'The contract'.",
    )
    p.add_argument("name", nargs="?", choices=[n.value for n in SchemaName], metavar="NAME", help="one of: %(choices)s")
    p.add_argument("--out", metavar="DIR", help="write every document to this folder")
    p.set_defaults(func=cmd_schema)
