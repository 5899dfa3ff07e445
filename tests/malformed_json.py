"""POS lines that once killed a reader (a 5000-digit integer raised a ValueError nothing caught) or
slipped through Python's json as numbers (NaN, 1e400), each with the reason it must be refused with.
Every input path is fed all of them, then a valid line that must still be taken."""

from __future__ import annotations

DEPTH = 5000  # past Python's recursion limit: json.loads raises RecursionError

MALFORMED_POS_LINES = {
    "5000-digit number": (b'{"ts": 1' + b"0" * 4999 + b', "type": "scan", "sku": "A"}', "a number of 5000 characters"),
    "deep nesting": (
        b'{"ts": 1, "type": "scan", "sku": "A", "x": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
        "nested more than 64 levels deep",
    ),
    "NaN": (b'{"ts": NaN, "type": "scan", "sku": "A"}', "NaN is not a number JSON allows"),
    "1e400": (b'{"ts": 1e400, "type": "scan", "sku": "A"}', "the number 1e400 is beyond the range of a float"),
    "invalid UTF-8": (b'{"ts": 1, "type": "scan", "sku": "\xff\xfe"}', "not UTF-8 text (invalid start byte"),
}
