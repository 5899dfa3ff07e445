"""The POS log reader: valid lines parsed and sorted, bad lines skipped with their line number,
unusable files refused with the file named."""

from __future__ import annotations

import json

import pytest

from retail_reid.pipeline.pos import PosError, PosEvent, parse_pos_event, read_pos_log


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
        ({"ts": 1, "type": "void", "sku": "A"}, "field 'type' is 'void'"),
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
