"""report.html: the timeline's tooltips say what happened in words (never `None`) and every time
label lies inside the picture; the till cases are shown: voided passes, keyed and weighed entries,
quantities and voids on the timeline, and double scans apart from the loss alerts."""

from __future__ import annotations

import re
from pathlib import Path

from retail_reid.pipeline.pos import EntryMethod, PosEvent, PosEventType
from retail_reid.pipeline.records import Event, EventType, PassRecord, Verdict
from retail_reid.pipeline.report import _timeline, write_report


def timeline() -> str:
    records = [
        PassRecord(track_id=1, t_start=1.0, t_end=2.0, verdict=Verdict.NON_SCAN, seen_sku="Kiwi", seen_score=0.8),
        PassRecord(track_id=2, t_start=3.0, t_end=4.0, verdict=Verdict.UNKNOWN_ITEM, seen_sku=None, seen_score=0.1),
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


class NoPhotos:
    def display_name(self, sku: str) -> str:
        return sku.replace("-", " ")

    def reference_image(self, sku: str) -> Path | None:
        return None


def test_the_report_shows_voids_entries_quantities_and_double_scans_apart(tmp_path):
    pos = [
        PosEvent(ts=1.5, type=PosEventType.SCAN, sku="Lime", txn="T1", entry=EntryMethod.WEIGHED, weight_kg=0.52),
        PosEvent(ts=4.5, type=PosEventType.SCAN, sku="Milk", txn="T1", qty=3),
        PosEvent(ts=9.5, type=PosEventType.SCAN, sku="Kiwi", txn="T1"),
        PosEvent(ts=11.0, type=PosEventType.VOID, sku="Kiwi", txn="T1"),
    ]
    said = dict(seen_score=0.9, seen_confidence=0.9, txn="T1")
    events = [
        Event(
            type=EventType.PRODUCT_SWITCH,
            t_start=1.0,
            t_end=2.0,
            track_id=1,
            seen_sku="Granny-Smith",
            scanned_sku="Lime",
            scan_ts=1.5,
            entry=EntryMethod.WEIGHED,
            weight_kg=0.52,
            **said,
        ),
        Event(
            type=EventType.DOUBLE_SCAN,
            t_start=4.9,
            t_end=4.9,
            track_id=2,
            seen_sku="Milk",
            scanned_sku="Milk",
            scan_ts=4.9,
            entry=EntryMethod.SCANNED,
            **said,
        ),
        Event(
            type=EventType.NON_SCAN,
            t_start=9.0,
            t_end=10.0,
            track_id=3,
            seen_sku="Kiwi",
            voided_sku="Kiwi",
            void_ts=11.0,
            **said,
        ),
    ]
    records = [
        PassRecord(track_id=3, t_start=9.0, t_end=10.0, verdict=Verdict.NON_SCAN, seen_sku="Kiwi", seen_score=0.9)
    ]
    counts = {t: sum(e.type is t for e in events) for t in EventType}
    summary = {
        "counts": counts,
        "video": "v.mp4",
        "pos": "pos.jsonl",
        "frames_processed": 10,
        "frames_dropped": 0,
        "video_seconds": 12.0,
        "speed_x_realtime": 20.0,
        "passes": 3,
        "scans": 3,
        "warnings": [],
        "model": {"path": "m.onnx", "fingerprint": "0123456789abcdef"},
    }
    path = tmp_path / "report.html"
    write_report(path, tmp_path, events, records, pos, NoPhotos(), summary)
    page = path.read_text()
    alerts, service = page.split("<h2>Alerts (2)</h2>")[1].split("<h2>Customer service (1)</h2>")
    assert "Scanned SKU does not match the item" in alerts and "scan at 1.50s, weighed, 0.52 kg on the scale" in alerts
    assert "Item passed; its only scan was voided" in alerts and "was voided at 11.00s" in alerts
    assert "overcharged" in service and "overcharged" not in alerts
    assert "scan Milk ×3 at 4.50s" in page and "void Kiwi at 11.00s" in page and "scan Lime, weighed 0.52 kg" in page
    assert "<th>loss alerts</th><td>non_scan: 1, product_switch: 1, unknown_item: 0, scan_without_item: 0" in page
    assert "<th>customer service</th><td>double scans: 1</td>" in page
