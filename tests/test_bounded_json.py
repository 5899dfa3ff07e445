"""`retail_reid.bounded_json`: whatever JSON from outside holds, the answer is a value or one
`JsonRejected` line saying why; never a ValueError, RecursionError or UnicodeDecodeError."""

from __future__ import annotations

import json

import pytest
from malformed_json import MALFORMED_POS_LINES

from retail_reid.bounded_json import MAX_DEPTH, JsonRejected, parse_json, parse_object
from retail_reid.errors import ReidError


@pytest.mark.parametrize("data, reason", MALFORMED_POS_LINES.values(), ids=MALFORMED_POS_LINES)
def test_every_malformed_line_is_one_rejection_with_its_reason(data, reason):
    with pytest.raises(JsonRejected) as e:
        parse_json(data, "pos.jsonl:7", max_bytes=1 << 20)
    assert str(e.value).startswith("pos.jsonl:7: ") and reason in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"[" + b"1" * 50_000 + b"]", "a number of 50000 characters"),
        (b'{"a": -Infinity}', "-Infinity is not a number JSON allows"),
        (b'{"a": Infinity}', "Infinity is not a number JSON allows"),
        (b'{"a": -1e999}', "beyond the range of a float"),
        (b'{"a": ' + b"1." + b"5" * 60 + b"}", "a number of 62 characters"),
        (b'{"a": "\\ud800"}', "lone surrogate U+D800"),
        (b'{"\\udfff": 1}', "lone surrogate U+DFFF"),
        (b"[1, 2]", "expected a JSON object, got a JSON list"),
        (b'"text"', "expected a JSON object, got a string"),
        (b"true", "expected a JSON object, got a boolean"),
        (b" \n ", "empty; expected a JSON object"),
        (b'{"a": 1,}', "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 9)"),
        (b"{}" + b" " * 100, "102 bytes, more than the limit of 100"),
        (json.dumps({"a": 1}).encode("utf-16"), "not UTF-8 text"),
    ],
)
def test_what_json_does_not_allow_is_rejected(data, reason):
    with pytest.raises(JsonRejected, match=r"^W: ") as e:
        parse_json(data, "W", max_bytes=100 if reason.startswith("102") else 1 << 20)
    assert reason in str(e.value)


def test_depth_is_counted_in_containers_and_bounded_below_the_recursion_limit():
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(nested, "W", max_bytes=1000, expect=list) == json.loads(nested)
    with pytest.raises(JsonRejected, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse_json("[" + nested + "]", "W", max_bytes=1000, expect=list)
    with pytest.raises(JsonRejected, match="nested more than 3 levels deep"):
        parse_json('{"a": {"b": [{"c": 1}]}}', "W", max_bytes=1000, max_depth=3)


def test_valid_json_comes_back_as_the_json_module_reads_it():
    text = '{"ts": 1767000000.25, "qty": -3, "big": 12345678901234567890, "e": 1.5e-300, "s": "Bänana 🍌", "l": [null]}'
    assert parse_object(("\ufeff" + text).encode(), "W", max_bytes=1000) == json.loads(text)
    assert parse_json("[1, 2]", "W", max_bytes=10, expect=(dict, list)) == [1, 2]


def test_the_callers_error_type_is_raised():
    class MyError(ReidError):
        pass

    with pytest.raises(MyError, match=r"^bundle: manifest\.json: a number of 50000 characters"):
        parse_object(b'{"n": ' + b"9" * 50_000 + b"}", "bundle: manifest.json", max_bytes=1 << 20, error=MyError)


def test_without_a_place_the_reason_stands_alone():
    with pytest.raises(JsonRejected) as e:
        parse_json("[NaN]", "", max_bytes=100, expect=list)
    assert str(e.value) == "NaN is not a number JSON allows"
