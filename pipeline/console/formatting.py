"""How the pages write times, alert types and file names (Jinja filters). Times are written in the
operator's time zone (`--time-zone`, UTC unless told), each with its UTC time on hover."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from pathlib import PurePath

from flask import Flask
from markupsafe import Markup

from retail_reid.pipeline.records import EventType

UTC_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime(UTC_FORMAT)


def utc_day(t: float) -> str:
    """The UTC day of a time: the precision page's charts count by it, whatever the operator's zone."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")


class Clock:
    """Times as the operator reads them: in their zone, the UTC time on hover."""

    def __init__(self, zone: tzinfo):
        self.zone = zone

    def stamp(self, t: float) -> Markup:
        local = datetime.fromtimestamp(t, self.zone)
        iso = datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
        return Markup('<time datetime="{}" title="{}">{}</time>').format(
            iso, utc(t), local.strftime("%Y-%m-%d %H:%M:%S %Z")
        )

    def day(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.zone).strftime("%Y-%m-%d")


def label(kind: str) -> str:
    """An event type's label ("non-scan"); anything else as it is."""
    return EventType(kind).label if kind in EventType.__members__.values() else kind


def basename(path: str) -> str:
    return PurePath(path).name


def install(app: Flask, zone: tzinfo) -> None:
    clock = Clock(zone)
    app.jinja_env.filters.update(stamp=clock.stamp, day=clock.day, utc=utc, label=label, basename=basename)
