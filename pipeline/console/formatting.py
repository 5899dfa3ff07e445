"""How the pages write times, alert types and file names (Jinja filters)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import PurePath

from flask import Flask

TYPE_LABELS = {
    "non_scan": "non-scan",
    "product_switch": "product switch",
    "unknown_item": "unknown item",
    "scan_without_item": "scan without item",
    "double_scan": "double scan",
}


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")


def label(kind: str) -> str:
    return TYPE_LABELS.get(kind, kind)


def basename(path: str) -> str:
    return PurePath(path).name


def install(app: Flask) -> None:
    app.jinja_env.filters.update(stamp=stamp, day=day, label=label, basename=basename)
