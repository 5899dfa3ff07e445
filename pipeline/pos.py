"""The point-of-sale log: what the till says was scanned, and when.

One JSON object per line, e.g. `{"ts": 12.34, "type": "scan", "sku": "Granny-Smith", "txn": "T1"}`.
A scan may pay for several identical items (`qty`), be keyed or weighed instead of scanned
(`entry`, `weight_kg`), and a `void` cancels the latest matching scan of its transaction.
A real POS export is messy, so a bad line is skipped with a warning naming its line rather than
failing the whole shift's log; only a log with nothing usable in it is an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from retail_reid.bounded_json import parse_object
from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.userfiles import read_user_file


class PosEventType(StrEnum):
    """What a till event says: an item scanned, a scan cancelled, or a transaction opened or closed."""

    SCAN = "scan"
    VOID = "void"
    TXN_START = "txn_start"
    TXN_END = "txn_end"


class EntryMethod(StrEnum):
    """How the till learned the product: its barcode scanned, its code keyed, or keyed on the scale.
    Keying a cheaper code for what lies on the scale is the produce switch."""

    SCANNED = "scanned"
    KEYED = "keyed"
    WEIGHED = "weighed"


_TEXT_FIELDS = ("sku", "barcode", "txn")
_PRODUCT_TYPES = (PosEventType.SCAN, PosEventType.VOID)  # events that name a product
QTY_MAX = 999  # one line of a till pays for at most this many items
WEIGHT_MAX_KG = 100.0  # more than a checkout scale weighs
MAX_TEXT_CHARS = 256  # a longer SKU, barcode or transaction is garbage (or an attack), not a till's field
MAX_LINE_BYTES = 64 << 10  # a longer line of a POS log is garbage, not a POS event
# A lane's record of the POS events it received, in its state folder: written by `reid edge`
# (pipeline/edge/pos_record.py), read by the console; the older file is the one rotated out.
POS_RECORD_FILE = "pos.jsonl"
POS_RECORD_OLDER = "pos.1.jsonl"


class PosError(ReidError, ValueError):
    """A POS event or log that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True, kw_only=True)
class PosEvent:
    """One till event. `ts` is on the POS clock: video seconds when replaying, Unix seconds live."""

    ts: float
    type: PosEventType
    sku: str | None = None
    barcode: str | None = None
    txn: str | None = None
    qty: int = 1  # items this scan pays for
    entry: EntryMethod = EntryMethod.SCANNED
    weight_kg: float | None = None
    line: int = 0  # line number in the source file (0 when it came over HTTP)

    @property
    def where(self) -> str:
        """ "line N: " for an event read from a file (to lead a warning), else ""."""
        return f"line {self.line}: " if self.line else ""

    def to_json(self) -> str:
        """The event as one POS-log line (the inverse of `parse_pos_event`; `line` is not stored,
        nor `qty` 1 and `entry` "scanned", the defaults)."""
        obj: dict[str, object] = {"ts": self.ts, "type": self.type}
        obj.update({k: getattr(self, k) for k in _TEXT_FIELDS if getattr(self, k) is not None})
        if self.qty != 1:
            obj["qty"] = self.qty
        if self.entry is not EntryMethod.SCANNED:
            obj["entry"] = self.entry
        if self.weight_kg is not None:
            obj["weight_kg"] = self.weight_kg
        return json.dumps(obj)


def _text(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        hint = " (quote it, so leading zeros survive)" if key == "barcode" and isinstance(value, int) else ""
        raise PosError(f"{where}: field '{key}' must be a string, got {type(value).__name__}{hint}")
    if len(value) > MAX_TEXT_CHARS:
        raise PosError(f"{where}: field '{key}' has {len(value)} characters; at most {MAX_TEXT_CHARS} are accepted")
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise PosError(f"{where}: field '{key}' holds the control character U+{ord(control):04X}")
    value = value.strip()
    if not value:
        raise PosError(f"{where}: field '{key}' is empty")
    return value


def _qty(obj: dict, where: str) -> int:
    value = obj.get("qty")
    if value is None:
        return 1
    # 3.0 is 3, as JSON Schema's "integer" has it; 2.5, true and "3" are not quantities.
    whole = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not whole or value != int(value):
        raise PosError(f"{where}: field 'qty' must be a whole number of items, got {value!r}")
    if not 1 <= value <= QTY_MAX:
        raise PosError(f"{where}: field 'qty' must be between 1 and {QTY_MAX}, got {value!r}")
    return int(value)


def _entry(obj: dict, where: str) -> EntryMethod:
    value = obj.get("entry")
    if value is None:
        return EntryMethod.SCANNED
    if value not in EntryMethod.__members__.values():
        raise PosError(f"{where}: field 'entry' is {value!r}, expected one of {', '.join(EntryMethod)}")
    return EntryMethod(value)


def _weight(obj: dict, where: str) -> float | None:
    value = obj.get("weight_kg")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= WEIGHT_MAX_KG:
        raise PosError(
            f"{where}: field 'weight_kg' must be a number of kilograms in (0, {WEIGHT_MAX_KG:g}], got {value!r}"
        )
    return float(value)


def parse_pos_event(obj: dict, where: str) -> PosEvent:
    """Validate one decoded JSON object; `where` (e.g. "pos.jsonl:12" or "HTTP body") leads every error."""
    if not isinstance(obj, dict):
        raise PosError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "ts" not in obj:
        raise PosError(f"{where}: missing field 'ts'")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise PosError(f"{where}: field 'ts' must be a number of seconds, got {type(ts).__name__}")
    if not math.isfinite(ts):
        raise PosError(f"{where}: field 'ts' must be finite, got {ts}")
    kind = obj.get("type")
    if kind is None:
        raise PosError(f"{where}: missing field 'type'")
    if kind not in PosEventType.__members__.values():
        raise PosError(f"{where}: field 'type' is {kind!r}, expected one of {', '.join(PosEventType)}")
    kind = PosEventType(kind)
    sku, barcode, txn = (_text(obj, k, where) for k in _TEXT_FIELDS)
    if kind in _PRODUCT_TYPES and sku is None and barcode is None:
        raise PosError(f"{where}: a {kind} needs a 'sku' or a 'barcode'")
    if kind not in _PRODUCT_TYPES and txn is None:
        raise PosError(f"{where}: a {kind} needs a 'txn' (the transaction it opens or closes)")
    qty, entry, weight = _qty(obj, where), _entry(obj, where), _weight(obj, where)
    return PosEvent(ts=float(ts), type=kind, sku=sku, barcode=barcode, txn=txn, qty=qty, entry=entry, weight_kg=weight)


def parse_pos_line(raw: bytes, where: str) -> PosEvent:
    """One line of a POS log (a JSON object, bounded: `retail_reid.bounded_json`) as an event."""
    return parse_pos_event(parse_object(raw, where, max_bytes=MAX_LINE_BYTES, error=PosError), where)


def read_pos_log(path: str | Path) -> tuple[list[PosEvent], list[str]]:
    """All valid events sorted by `ts` (ties keep file order), and one "FILE:LINE: reason" warning
    per skipped line. A missing, unreadable or empty file, or one with no valid event, is a PosError."""
    p = Path(path)
    data = read_user_file(p, "POS log", PosError)
    if not data.strip():
        raise PosError(f"{p}: POS log is empty")
    events: list[PosEvent] = []
    warnings: list[str] = []
    for lineno, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        where = f"{p}:{lineno}"
        if not raw.strip():
            continue
        try:
            event = parse_pos_line(raw, where)
        except PosError as e:
            warnings.append(str(e))
            continue
        events.append(dataclasses.replace(event, line=lineno))
    if not events:
        first = f"; first problem: {warnings[0]}" if warnings else ""
        raise PosError(f"{p}: no valid POS event in {len(warnings)} non-blank lines{first}")
    events.sort(key=lambda e: e.ts)
    return events, warnings
