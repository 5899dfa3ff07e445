"""`retail_reid.pipeline.edge.pos_intake`: POS events over HTTP (one or a list, garbage refused with
the reason, wrong clocks, a full inbox) and from the file the till appends to."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from edge_fixtures import metrics, wait_until
from malformed_json import MALFORMED_POS_LINES

from retail_reid.pipeline.edge.pos_intake import InboxFull, PosFileTailer, PosInbox, parse_pos_body
from retail_reid.pipeline.pos import PosError, PosEvent, PosEventType


def inbox(capacity: int = 100) -> PosInbox:
    return PosInbox(capacity, metrics(), clock_offset_s=0.0, max_skew_s=300.0)


def test_pos_bodies_one_event_or_a_list():
    now = time.time()
    [one] = parse_pos_body(json.dumps({"ts": now, "type": "scan", "sku": "Banana", "txn": "T1"}).encode(), 10)
    assert one == PosEvent(ts=now, type=PosEventType.SCAN, sku="Banana", txn="T1")
    many = parse_pos_body(
        json.dumps(
            [{"ts": now, "type": "txn_start", "txn": "T2"}, {"ts": now + 1, "type": "scan", "barcode": "0123"}]
        ).encode(),
        10,
    )
    assert [e.type for e in many] == ["txn_start", "scan"] and many[1].barcode == "0123"


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"", "HTTP body: empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"ts": 1,', "not valid JSON"),
        (b"42", "expected a JSON object or a JSON list, got an integer"),
        (b"[]", "an empty list"),
        (b"[" * 100000 + b"]" * 100000, "nested more than 64 levels deep"),
        *MALFORMED_POS_LINES.values(),
        (b'{"type": "scan", "sku": "A"}', "HTTP body: missing field 'ts'"),
        (
            b'[{"ts": 1.0, "type": "scan", "sku": "A"}, {"ts": 2.0, "type": "refund", "sku": "A"}]',
            "HTTP body[1]: field 'type' is 'refund'",
        ),
        (b'{"ts": 1.0, "type": "scan", "barcode": 123}', "field 'barcode' must be a string"),
        (
            json.dumps([{"ts": 1.0, "type": "txn_start", "txn": "T"}] * 11).encode(),
            "11 events in one request, at most 10",
        ),
    ],
)
def test_garbage_pos_bodies_are_refused_naming_the_event_and_field(body, needle):
    with pytest.raises(PosError) as e:
        parse_pos_body(body, 10)
    assert needle in str(e.value), str(e.value)


def test_events_with_a_wrong_clock_are_refused_and_a_full_inbox_takes_nothing():
    box = inbox(capacity=3)
    stale = json.dumps(
        [{"ts": time.time(), "type": "txn_start", "txn": "T"}, {"ts": 12.5, "type": "scan", "sku": "A"}]
    ).encode()
    with pytest.raises(PosError, match=r"HTTP body\[1\]: field 'ts' is 12.500, .* check the POS clock"):
        parse_pos_body(stale, 10, box.check)
    events = [PosEvent(ts=time.time(), type=PosEventType.SCAN, sku="A") for _ in range(2)]
    box.put(events, "http")
    with pytest.raises(InboxFull):
        box.put(events, "http")
    assert len(box) == 2 and box.last()["source"] == "http" and box.take() == events and len(box) == 0


def _line(ts: float, sku: str) -> str:
    return json.dumps({"ts": ts, "type": "scan", "sku": sku}) + "\n"


def test_pos_file_new_lines_are_read_bad_ones_skipped_and_a_restart_resumes(tmp_path):
    pos, state = tmp_path / "pos.jsonl", tmp_path / "offset.json"
    now = time.time()
    pos.write_text(_line(now, "Old"))  # there before the service: not read (from_start is off)
    m = metrics()
    box = PosInbox(100, m, 0.0, 300.0)
    tailer = PosFileTailer(pos, box, state, poll_s=0.02, from_start=False, metrics=m)
    tailer.start()
    with open(pos, "a") as f:
        f.write(_line(now + 1, "A") + "not json\n" + _line(now + 2, "B")[:20])
        f.flush()
        assert wait_until(lambda: len(box) == 1)
        f.write(_line(now + 2, "B")[20:] + '{"ts": 1, "type": "scan", "sku": "Skewed"}\n')
    assert wait_until(lambda: len(box) == 2 and m.pos_rejected.value("file") == 2)
    tailer.stop()
    got = box.take()
    assert [(e.sku, e.line) for e in got] == [("A", 2), ("B", 4)]
    with open(pos, "a") as f:
        f.write(_line(now + 3, "C"))
    again = PosFileTailer(pos, box, state, poll_s=0.02, from_start=False, metrics=m)
    again.start()
    again.stop()  # stopping reads what was appended first
    assert [(e.sku, e.line) for e in box.take()] == [("C", 6)]


def test_pos_file_replaced_is_read_from_its_start(tmp_path):
    pos, state = tmp_path / "pos.jsonl", tmp_path / "offset.json"
    now = time.time()
    pos.write_text(_line(now, "A") + _line(now, "B"))
    box = inbox()
    tailer = PosFileTailer(pos, box, state, poll_s=0.02, from_start=True, metrics=metrics())
    tailer.start()
    assert wait_until(lambda: len(box) == 2)
    rotated = tmp_path / "pos.new"
    rotated.write_text(_line(now, "C"))
    os.replace(rotated, pos)
    assert wait_until(lambda: len(box) == 3)
    tailer.stop()
    assert [e.sku for e in box.take()] == ["A", "B", "C"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("Ban\x00ana", "control character U+0000"),
        ("Ban\nana", "control character U+000A"),
        ("\x7fBanana", "control character U+007F"),
        ("B" * 60000, "at most 256 are accepted"),
        (" " * 300 + "Banana", "at most 256 are accepted"),
    ],
)
def test_pos_text_fields_with_control_characters_or_too_long_are_refused(value, needle):
    for field in ("sku", "barcode", "txn"):
        body = json.dumps({"ts": time.time(), "type": "scan", "sku": "A", field: value}).encode()
        with pytest.raises(PosError, match=f"HTTP body: field .{field}. .*{re.escape(needle)}"):
            parse_pos_body(body, 10, lambda e, w: None)
    ok = json.dumps({"ts": time.time(), "type": "scan", "sku": " Bänana ", "txn": "T" * 256}).encode()
    assert parse_pos_body(ok, 10, lambda e, w: None)[0].sku == "Bänana"


def test_pos_file_reader_survives_malformed_numbers_and_nesting_and_reads_on(tmp_path):
    """The reader thread used to die on a 5000-digit integer (a ValueError nothing caught): every
    later scan was lost while /health said ok. Each malformed line is now counted and logged, and the
    lines after it are read."""
    pos, state = tmp_path / "pos.jsonl", tmp_path / "offset.json"
    m = metrics()
    box = PosInbox(100, m, 0.0, 300.0)
    tailer = PosFileTailer(pos, box, state, poll_s=0.02, from_start=True, metrics=m)
    tailer.start()
    try:
        for n, (data, _) in enumerate(MALFORMED_POS_LINES.values(), start=1):
            with open(pos, "ab") as f:
                f.write(data + b"\n" + _line(time.time(), f"After{n}").encode())
            assert wait_until(lambda n=n: m.pos_rejected.value("file") == n and len(box) == n)
        assert tailer.alive and tailer.failure is None and tailer.error is None
    finally:
        tailer.stop()
    assert [(e.sku, e.line) for e in box.take()] == [(f"After{n}", 2 * n) for n in range(1, 6)]
