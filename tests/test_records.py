"""The event vocabulary in one place (pipeline/records.py): every reader of events.jsonl gets back
the lines the writers wrote, byte for byte; bad lines are refused naming the line and the field; and
a new event type touches only the records module, the builder and the schema, because the schema,
the console, the report, scoring and the dashboard take their types from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edge_fixtures import alert
from monitoring_files import DASHBOARD

from retail_reid.pipeline.console.alerts import ALERT_FAMILIES
from retail_reid.pipeline.console.formatting import label
from retail_reid.pipeline.contract import SchemaName, load_schema
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.records import (
    ALERT_TYPES,
    PASS_ALERT_TYPES,
    BasketEvent,
    EventFamily,
    EventType,
    RecordError,
    Verdict,
    read_events,
    read_passes,
)
from retail_reid.pipeline.report import TIMELINE_COLOURS

TILL_LANE = Path(__file__).resolve().parent / "data" / "till_lane"  # a lane with every till case, as pinned


def assert_lines_come_back(events: Path, passes: Path | None = None) -> None:
    """`read_events` (and `read_passes`) give back every line of the files, byte for byte, as
    `json.dumps` of each record's `to_dict()`, the writers' own way."""
    assert "".join(json.dumps(e.to_dict()) + "\n" for e in read_events(events)) == events.read_text()
    if passes is not None:
        assert "".join(json.dumps(p.to_dict()) + "\n" for p in read_passes(passes)) == passes.read_text()


def test_a_replays_events_and_passes_come_back_to_the_byte():
    assert_lines_come_back(TILL_LANE / "events.jsonl", TILL_LANE / "passes.jsonl")
    kinds = {e.type for e in read_events(TILL_LANE / "events.jsonl")}
    assert kinds == set(EventType) - {EventType.UNKNOWN_ITEM}


def test_a_recordings_identity_and_a_lane_services_stamps_come_back(tmp_path):
    recording = {"store": "S1", "lane": "L3", "start": "2026-11-30T08:00:00+01:00"}
    with_identity = tmp_path / "replay.jsonl"
    lines = (TILL_LANE / "events.jsonl").read_text().splitlines()
    with_identity.write_text("".join(json.dumps({**json.loads(line), "recording": recording}) + "\n" for line in lines))
    assert_lines_come_back(with_identity)
    assert {e.recording.lane for e in read_events(with_identity) if e.recording is not None} == {"L3"}
    log = AlertLog(tmp_path / "events.jsonl", "lane-1", "lane-1-run")
    basket = BasketEvent(txn="T1", seen={"A": 1}, scanned={"A": 1}, jaccard=1, dice=1, overlap=1, tversky=1)
    for event in (alert(1), basket, alert(2)):
        log.append(event, gallery_version=4)
    log.close()
    assert_lines_come_back(tmp_path / "events.jsonl")
    stamps = [e.logged for e in read_events(tmp_path / "events.jsonl")]
    assert [(s.seq, s.id, s.gallery_version) for s in stamps if s is not None] == [
        (1, "lane-1-run-1", 4),
        (2, "lane-1-run-2", 4),
        (3, "lane-1-run-3", 4),
    ]


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"type": "theft"}, "events.jsonl:1: field 'type' is 'theft', expected one of non_scan, product_switch"),
        ({"type": None}, "events.jsonl:1: missing or empty field 'type'"),
        ({"t_start": "3"}, "events.jsonl:1: field 't_start' must be a finite number, got '3'"),
        ({"t_end": 0.5}, "events.jsonl:1: t_end 0.5 is before t_start"),
        ({"track_id": -2}, "events.jsonl:1: field 'track_id' must be an integer >= 0, got -2"),
        ({"seen_sku": ""}, "events.jsonl:1: field 'seen_sku' must be a non-empty string, got ''"),
        ({"entry": "typed"}, "events.jsonl:1: field 'entry' is 'typed', expected one of scanned, keyed, weighed"),
        ({"evidence": "crop.jpg"}, "events.jsonl:1: field 'evidence' must be a list of file paths"),
        ({"recording": {"store": "S1"}}, "events.jsonl:1: 'recording' has no 'lane'"),
        ({"seq": 1, "id": "x-1"}, "events.jsonl:1: missing field 'lane'"),
    ],
)
def test_a_bad_line_is_refused_in_one_line_naming_its_field(tmp_path, change, needle):
    line = {**json.loads((TILL_LANE / "events.jsonl").read_text().splitlines()[0]), **change}
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(RecordError, match=needle.replace("(", r"\(")) as e:
        read_events(path)
    assert "\n" not in str(e.value)


def test_a_bad_pass_line_names_its_field(tmp_path):
    line = {**json.loads((TILL_LANE / "passes.jsonl").read_text().splitlines()[0]), "verdict": "maybe"}
    path = tmp_path / "passes.jsonl"
    path.write_text("\n" + json.dumps(line) + "\n")
    with pytest.raises(RecordError, match=r"passes.jsonl:2: field 'verdict' is 'maybe', expected one of ok, "):
        read_passes(path)


# --- one vocabulary ------------------------------------------------------------------------------


def test_every_event_type_has_a_family_label_headline_and_colour():
    for t in EventType:
        assert t.family in EventFamily and t.label and t.headline and t.colour.startswith("#"), t
    assert [t for t in EventType if t.loss] == [
        EventType.NON_SCAN,
        EventType.PRODUCT_SWITCH,
        EventType.UNKNOWN_ITEM,
        EventType.SCAN_WITHOUT_ITEM,
    ]
    assert EventType.DOUBLE_SCAN.family is EventFamily.SERVICE and not EventType.BASKET.alert
    assert all(v.colour.startswith("#") for v in Verdict)
    assert all(v.alert is None or v.colour == v.alert.colour for v in Verdict)
    assert PASS_ALERT_TYPES == (EventType.NON_SCAN, EventType.PRODUCT_SWITCH, EventType.UNKNOWN_ITEM)


def test_the_schema_lists_the_records_types():
    schema = load_schema(SchemaName.EVENT)
    alert_types = schema["$defs"]["alert"]["properties"]["type"]["enum"]
    assert alert_types == [str(t) for t in ALERT_TYPES]
    assert schema["$defs"]["basket"]["properties"]["type"]["const"] == EventType.BASKET


def test_the_readers_take_their_types_from_the_records():
    assert ALERT_FAMILIES == (EventFamily.LOSS, EventFamily.SERVICE)  # the console's kinds of alert
    assert [label(t) for t in EventType] == [t.label for t in EventType]
    assert set(TIMELINE_COLOURS) == {str(v) for v in Verdict} | {str(t) for t in ALERT_TYPES}


def test_the_dashboard_describes_every_event_type():
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == "Events per hour by type")
    named = [t for t in EventType if t.value in panel["description"]]
    assert named == list(EventType), f"{DASHBOARD}: the panel's description lacks {set(EventType) - set(named)}"


def test_the_records_import_neither_opencv_nor_numpy():
    code = "import sys, retail_reid.pipeline.records; print(sorted({'cv2', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
