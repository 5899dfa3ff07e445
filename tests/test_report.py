"""The report's timeline: tooltips say what happened in words (never `None`), and every time label
lies inside the picture."""

from __future__ import annotations

import re

from retail_reid.pipeline.pos import PosEvent
from retail_reid.pipeline.report import _timeline
from retail_reid.pipeline.types import PassRecord


def timeline() -> str:
    records = [
        PassRecord(track_id=1, t_start=1.0, t_end=2.0, verdict="non_scan", seen_sku="Kiwi", seen_score=0.8),
        PassRecord(track_id=2, t_start=3.0, t_end=4.0, verdict="unknown_item", seen_sku=None, seen_score=0.1),
    ]
    pos = [
        PosEvent(ts=0.5, type="txn_start", txn="T1"),
        PosEvent(ts=5.0, type="scan", barcode="4011", txn="T1"),
        PosEvent(ts=6.0, type="scan", sku="Lime", txn="T1"),
        PosEvent(ts=97.3, type="txn_end", txn="T1"),
    ]
    return _timeline(records, pos, [])


def test_tooltips_never_say_none():
    tips = re.findall(r"<title>(.*?)</title>", timeline())
    assert len(tips) == 4 and not any("None" in t for t in tips)
    assert "track 1: non_scan, seen Kiwi, not scanned, 1.00–2.00s" in tips
    assert "track 2: unknown_item, no known SKU seen, not scanned, 3.00–4.00s" in tips
    assert "scan of barcode 4011 at 5.00s" in tips and "scan Lime at 6.00s" in tips


def test_time_axis_shows_its_last_label_inside_the_picture():
    svg = timeline()
    width = float(re.search(r'<svg width="(\d+)"', svg).group(1))
    labels = re.findall(r'<text x="([\d.]+)" y="146" fill="#5b6773" text-anchor="(\w+)">([\d.]+)s</text>', svg)
    assert labels[-1][2] == "97.3" and labels[-1][1] == "end" and float(labels[-1][0]) <= width
    assert labels[0][2] == "0.5" and labels[0][1] == "start"
