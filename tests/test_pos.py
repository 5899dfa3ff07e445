"""The POS log reader: valid lines parsed and sorted, bad lines skipped with their line number,
unusable files refused with the file named."""

from __future__ import annotations

import json

import pytest
from malformed_json import MALFORMED_POS_LINES

from retail_reid.pipeline.pos import EntryMethod, PosError, PosEvent, PosEventType, parse_pos_event, read_pos_log


def write(tmp_path, text: str | bytes, name: str = "pos.jsonl"):
    p = tmp_path / name
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def test_parse_scan_with_all_fields():
    e = parse_pos_event({"ts": 12.34, "type": "scan", "sku": " Granny-Smith ", "barcode": "0731", "txn": "T1"}, "w")
    assert e == PosEvent(ts=12.34, type="scan", sku="Granny-Smith", barcode="0731", txn="T1", line=0)


def test_parse_accepts_integer_ts_and_barcode_only_scan():
    e = parse_pos_event({"ts": 3, "type": "scan", "barcode": "7310865004703"}, "w")
    assert e.ts == 3.0 and isinstance(e.ts, float) and e.sku is None and e.barcode == "7310865004703"


@pytest.mark.parametrize(
    "obj, needle",
    [
        ([1, 2], "expected a JSON object, got list"),
        ({"type": "scan", "sku": "A"}, "missing field 'ts'"),
        ({"ts": "12", "type": "scan", "sku": "A"}, "field 'ts' must be a number"),
        ({"ts": True, "type": "scan", "sku": "A"}, "field 'ts' must be a number"),
        ({"ts": float("nan"), "type": "scan", "sku": "A"}, "field 'ts' must be finite"),
        ({"ts": 1, "sku": "A"}, "missing field 'type'"),
        ({"ts": 1, "type": "refund", "sku": "A"}, "field 'type' is 'refund'"),
        ({"ts": 1, "type": "void", "txn": "T1"}, "a void needs a 'sku' or a 'barcode'"),
        ({"ts": 1, "type": "scan", "sku": "A", "qty": 0}, "field 'qty' must be between 1 and 999"),
        ({"ts": 1, "type": "scan", "sku": "A", "qty": -2}, "field 'qty' must be between 1 and 999"),
        ({"ts": 1, "type": "scan", "sku": "A", "qty": 1000}, "field 'qty' must be between 1 and 999"),
        ({"ts": 1, "type": "scan", "sku": "A", "qty": 2.5}, "field 'qty' must be a whole number"),
        ({"ts": 1, "type": "scan", "sku": "A", "qty": "3"}, "field 'qty' must be a whole number"),
        ({"ts": 1, "type": "scan", "sku": "A", "qty": True}, "field 'qty' must be a whole number"),
        ({"ts": 1, "type": "scan", "sku": "A", "entry": "typed"}, "field 'entry' is 'typed', expected one of"),
        ({"ts": 1, "type": "scan", "sku": "A", "weight_kg": 0}, "field 'weight_kg' must be a number of kilograms"),
        ({"ts": 1, "type": "scan", "sku": "A", "weight_kg": "0.5"}, "field 'weight_kg' must be a number"),
        ({"ts": 1, "type": "scan"}, "needs a 'sku' or a 'barcode'"),
        ({"ts": 1, "type": "scan", "sku": "  "}, "field 'sku' is empty"),
        ({"ts": 1, "type": "scan", "sku": 5}, "field 'sku' must be a string"),
        ({"ts": 1, "type": "scan", "barcode": 731}, "quote it"),
        ({"ts": 1, "type": "txn_start"}, "needs a 'txn'"),
    ],
)
def test_parse_errors_name_where_and_field(obj, needle):
    with pytest.raises(PosError) as info:
        parse_pos_event(obj, "pos.jsonl:7")
    assert str(info.value).startswith("pos.jsonl:7: ") and needle in str(info.value)


def test_parse_quantity_entry_weight_and_void():
    e = parse_pos_event(
        {"ts": 2, "type": "scan", "sku": "Lime", "qty": 3.0, "entry": "weighed", "weight_kg": 0.52}, "w"
    )
    assert (e.qty, e.entry, e.weight_kg) == (3, EntryMethod.WEIGHED, 0.52) and isinstance(e.qty, int)
    plain = parse_pos_event({"ts": 2, "type": "scan", "sku": "Lime", "qty": None, "entry": None}, "w")
    assert (plain.qty, plain.entry, plain.weight_kg) == (1, EntryMethod.SCANNED, None)
    void = parse_pos_event({"ts": 3, "type": "void", "barcode": "0042"}, "w")
    assert void.type is PosEventType.VOID and void.barcode == "0042" and void.txn is None


def test_to_json_round_trips_quantity_and_entry():
    e = PosEvent(ts=4.0, type=PosEventType.SCAN, sku="Lime", txn="T1", qty=4, entry=EntryMethod.KEYED, weight_kg=0.3)
    assert parse_pos_event(json.loads(e.to_json()), "w") == e
    assert json.loads(e.to_json())["entry"] == "keyed"


def test_bad_quantity_is_a_warning_naming_the_line(tmp_path):
    p = write(tmp_path, '{"ts": 1, "type": "scan", "sku": "A"}\n{"ts": 2, "type": "scan", "sku": "B", "qty": -1}\n')
    events, warnings = read_pos_log(p)
    assert [e.sku for e in events] == ["A"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{p}:2: field 'qty'")


def test_to_json_round_trips():
    e = PosEvent(ts=1.5, type="scan", sku="Kiwi", txn="T2")
    assert parse_pos_event(json.loads(e.to_json()), "w") == e
    assert "line" not in json.loads(e.to_json()) and "barcode" not in json.loads(e.to_json())


def test_read_sorts_by_time_and_keeps_line_numbers(tmp_path):
    p = write(
        tmp_path,
        "\n".join(
            [
                '{"ts": 0.5, "type": "txn_start", "txn": "T1"}',
                '{"ts": 9.0, "type": "scan", "sku": "Lime", "txn": "T1"}',
                "",
                '{"ts": 4.0, "type": "scan", "sku": "Kiwi", "txn": "T1"}',
                '{"ts": 9.0, "type": "txn_end", "txn": "T1"}',
            ]
        )
        + "\n",
    )
    events, warnings = read_pos_log(p)
    assert warnings == []
    assert [(e.ts, e.type, e.line) for e in events] == [
        (0.5, "txn_start", 1),
        (4.0, "scan", 4),
        (9.0, "scan", 2),
        (9.0, "txn_end", 5),
    ]


def test_read_skips_malformed_lines_with_their_numbers(tmp_path):
    p = write(
        tmp_path,
        b"\xef\xbb\xbf"
        + b"\n".join(
            [
                b'{"ts": 1, "type": "scan", "sku": "Lime"}',
                b'{"ts": 2, "type": "scan", "sku": ',  # cut short
                b'{"ts": 3, "type": "scan"}',  # no sku or barcode
                b"\xff\xfe garbage",  # not UTF-8
                b"[1, 2]",
                b'{"ts": 6, "type": "scan", "barcode": "42"}',
            ]
        ),
    )
    events, warnings = read_pos_log(p)
    assert [e.line for e in events] == [1, 6]
    assert [w.split(": ", 1)[0] for w in warnings] == [f"{p}:{n}" for n in (2, 3, 4, 5)]
    assert "not valid JSON" in warnings[0] and "sku" in warnings[1]
    assert "not UTF-8" in warnings[2] and "JSON object" in warnings[3]


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "POS log is empty"),
        ("\n  \n", "POS log is empty"),
        ("hello\nworld\n", "no valid POS event in 2 non-blank lines; first problem"),
        (b"\x00\x01\x02\xff", "no valid POS event"),
    ],
)
def test_read_refuses_unusable_files(tmp_path, content, needle):
    p = write(tmp_path, content)
    with pytest.raises(PosError, match=needle) as info:
        read_pos_log(p)
    assert str(p) in str(info.value)


def test_read_refuses_missing_file_and_directory(tmp_path):
    with pytest.raises(PosError, match="POS log not found"):
        read_pos_log(tmp_path / "nope.jsonl")
    with pytest.raises(PosError, match="is a directory"):
        read_pos_log(tmp_path)


def test_a_replay_pos_log_skips_each_malformed_number_or_nesting_naming_its_line(tmp_path):
    """A 5000-digit number used to raise a bare ValueError out of the reader (`reid replay`: a
    traceback); NaN and 1e400 read as numbers. Each is now a warning naming file, line and reason."""
    lines = [data for data, _ in MALFORMED_POS_LINES.values()]
    p = write(tmp_path, b"\n".join([*lines, b'{"ts": 9, "type": "scan", "sku": "Lime"}']) + b"\n")
    events, warnings = read_pos_log(p)
    assert [(e.sku, e.line) for e in events] == [("Lime", len(lines) + 1)]
    assert len(warnings) == len(lines)
    for n, (warning, (_, reason)) in enumerate(zip(warnings, MALFORMED_POS_LINES.values(), strict=True), start=1):
        assert warning.startswith(f"{p}:{n}: ") and reason in warning and "\n" not in warning
