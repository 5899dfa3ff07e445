"""The event vocabulary, in one place: what a line of events.jsonl (and of passes.jsonl) may say,
and the one reader of those files.

- `EventType`: the `type` of an events.jsonl line, with its family (`EventFamily`: a loss alert, a
  customer-service event, or a transaction's basket), its label and headline for people and its
  colour; `Verdict`: what was decided about one item pass, with its colour. "Is it a loss?" is
  `EventType.loss`, answered here and nowhere else.
- The records: `Event` (an alert or a customer-service event), `BasketEvent` and `PassRecord`,
  each with `to_dict` (what the writers write) and `from_dict` (a clear one-line error naming the
  field on bad input).
- `read_events` and `read_passes`: the files back as records; each record's `to_dict()` gives its
  line back exactly (`json.dumps` of it, as the replay and the lane service write it).

A new event type touches this module, the event builder (pipeline/events.py) and the schema
(pipeline/schemas/event.schema.json); the console, the report, scoring, the batch and the
dashboard's check take it from here. No OpenCV, no numpy: any reader may import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from retail_reid.bounded_json import parse_object
from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.pipeline.pos import EntryMethod
from retail_reid.pipeline.recording import RecordingError, RecordingIdentity
from retail_reid.userfiles import read_user_file

MAX_EVENT_LINE_BYTES = 1 << 20  # an events.jsonl line (an alert, a basket) is a few KB; a longer one is garbage


class RecordError(ReidError, ValueError):
    """An events.jsonl or passes.jsonl line that is not a record; the message names the file, line and field."""


class EventFamily(StrEnum):
    """Who reads an event: loss prevention (the store may be losing goods), customer service (the
    customer may be overcharged), or nobody in particular (a basket: a comparison, nothing to review).
    The values are stored with the console's verdicts."""

    LOSS = "loss"
    SERVICE = "service"
    BASKET = "basket"

    @property
    def label(self) -> str:
        return _FAMILY_LABELS[self]


_FAMILY_LABELS = {
    EventFamily.LOSS: "loss alerts",
    EventFamily.SERVICE: "customer service (double scans)",
    EventFamily.BASKET: "baskets",
}


class EventType(StrEnum):
    """The `type` of an events.jsonl line: one of the loss alerts, a customer-service event (a
    double scan overcharges the customer), or a transaction's basket."""

    NON_SCAN = "non_scan"
    PRODUCT_SWITCH = "product_switch"
    UNKNOWN_ITEM = "unknown_item"
    SCAN_WITHOUT_ITEM = "scan_without_item"
    DOUBLE_SCAN = "double_scan"
    BASKET = "basket"

    @property
    def family(self) -> EventFamily:
        return _KINDS[self].family

    @property
    def loss(self) -> bool:
        """Whether this is a loss alert (what loss prevention reads), not a customer-service event or a basket."""
        return self.family is EventFamily.LOSS

    @property
    def alert(self) -> bool:
        """Whether someone reviews it (a loss alert or a customer-service event), unlike a basket."""
        return self.family is not EventFamily.BASKET

    @property
    def label(self) -> str:
        """A few words for a table or a filter: "non-scan"."""
        return _KINDS[self].label

    @property
    def headline(self) -> str:
        """A sentence for the head of an alert's card (not `title`: that is `str.title`)."""
        return _KINDS[self].headline

    @property
    def colour(self) -> str:
        """Its colour on the report's cards and timeline (CSS)."""
        return _KINDS[self].colour


class _Kind(NamedTuple):
    family: EventFamily
    label: str
    headline: str
    colour: str


_KINDS = {
    EventType.NON_SCAN: _Kind(EventFamily.LOSS, "non-scan", "Item passed without a scan", "#d64545"),
    EventType.PRODUCT_SWITCH: _Kind(
        EventFamily.LOSS, "product switch", "Scanned SKU does not match the item", "#e08a1e"
    ),
    EventType.UNKNOWN_ITEM: _Kind(EventFamily.LOSS, "unknown item", "Item not recognised", "#8a5cc2"),
    EventType.SCAN_WITHOUT_ITEM: _Kind(EventFamily.LOSS, "scan without item", "Scan with no item seen", "#1f7ae0"),
    EventType.DOUBLE_SCAN: _Kind(
        EventFamily.SERVICE, "double scan", "Scanned twice for one item (the customer was overcharged)", "#2a9d8f"
    ),
    EventType.BASKET: _Kind(
        EventFamily.BASKET, "basket", "What the camera saw against what the till scanned", "#5b6773"
    ),
}
ALERT_TYPES = tuple(t for t in EventType if t.alert)  # what the console lists and scoring matches
LOSS_TYPES = tuple(t for t in EventType if t.loss)


class Verdict(StrEnum):
    """What was decided about one item pass: an alert type; or OK (the item looks like its scan);
    UNCONFIRMED (it does not quite, but no other SKU clearly does either); UNVERIFIED (the camera
    cannot check the scan: another SKU looks likelier but the views are too poor or disagree too
    much to accuse, or the scanned SKU has no references in the gallery, or its barcode is unknown)."""

    OK = "ok"
    UNCONFIRMED = "unconfirmed"
    UNVERIFIED = "unverified"
    NON_SCAN = "non_scan"
    PRODUCT_SWITCH = "product_switch"
    UNKNOWN_ITEM = "unknown_item"

    @property
    def alert(self) -> EventType | None:
        """The alert this verdict raises, if any."""
        return EventType(self.value) if self.value in EventType.__members__.values() else None

    @property
    def colour(self) -> str:
        """Its bar's colour on the report's timeline: its alert's, or a grey for a pass that raised none."""
        alert = self.alert
        return alert.colour if alert is not None else _QUIET_COLOURS[self]


_QUIET_COLOURS = {Verdict.OK: "#9aa5b1", Verdict.UNCONFIRMED: "#b6c2cf", Verdict.UNVERIFIED: "#c8cdd3"}
PASS_ALERT_TYPES = tuple(a for v in Verdict if (a := v.alert) is not None)  # the alerts about an item pass


# --- the records ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LogStamp:
    """What the lane service's alert log (STATE/events.jsonl) puts in front of each event: `seq`
    (1, 2, ... across restarts), `id` (the webhook's idempotency key), `lane`, `written_at` (Unix
    seconds) and the `gallery_version` that decided it."""

    seq: int
    id: str
    lane: str
    written_at: float
    gallery_version: int

    def to_dict(self) -> dict:
        return {
            "seq": self.seq,
            "id": self.id,
            "lane": self.lane,
            "written_at": self.written_at,
            "gallery_version": self.gallery_version,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], where: str) -> LogStamp | None:
        """The stamp of an alert log's line; None for a replay's line (no `seq`)."""
        if "seq" not in obj:
            return None
        f = _Fields(obj, where)
        return cls(
            seq=f.integer("seq", minimum=1),
            id=f.text("id"),
            lane=f.text("lane"),
            written_at=f.number("written_at"),
            gallery_version=f.integer("gallery_version", minimum=0),
        )


@dataclass(frozen=True, kw_only=True)
class _Framed:
    """An events.jsonl line's frame around its event: a replay's `recording` (store, lane, start)
    goes after the event's fields, a lane service's `logged` stamp before them."""

    recording: RecordingIdentity | None = None
    logged: LogStamp | None = None

    def to_dict(self) -> dict:
        front = {} if self.logged is None else self.logged.to_dict()
        back = {} if self.recording is None else {"recording": self.recording.to_dict()}
        return {**front, **self._fields(), **back}

    def _fields(self) -> dict:
        raise NotImplementedError

    @staticmethod
    def _frame(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The frame's fields of a line, as keyword arguments."""
        recording = None
        if "recording" in obj:
            try:
                recording = RecordingIdentity.from_dict(obj["recording"], where)
            except RecordingError as e:
                raise RecordError(str(e)) from None
        return {"recording": recording, "logged": LogStamp.from_dict(obj, where)}


@dataclass(frozen=True, kw_only=True)
class Event(_Framed):
    """One alert or customer-service line of events.jsonl. Times are on the POS clock; scores are
    cosine similarities. `entry` and `weight_kg` are the scan's; `voided_sku` and `void_ts` name the
    void that left a pass unpaid."""

    type: EventType  # never BASKET
    t_start: float
    t_end: float
    track_id: int | None = None
    seen_sku: str | None = None
    seen_score: float | None = None
    seen_confidence: float | None = None
    scanned_sku: str | None = None
    scanned_score: float | None = None
    scanned_confidence: float | None = None
    scan_ts: float | None = None
    txn: str | None = None
    evidence: tuple[str, ...] = ()
    entry: EntryMethod | None = None
    weight_kg: float | None = None
    voided_sku: str | None = None
    void_ts: float | None = None

    def _fields(self) -> dict:
        return {
            "type": self.type,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "track_id": self.track_id,
            "seen_sku": self.seen_sku,
            "seen_score": _round(self.seen_score),
            "seen_confidence": _round(self.seen_confidence),
            "scanned_sku": self.scanned_sku,
            "scanned_score": _round(self.scanned_score),
            "scanned_confidence": _round(self.scanned_confidence),
            "scan_ts": _round(self.scan_ts),
            "txn": self.txn,
            "evidence": list(self.evidence),
            "entry": self.entry,
            "weight_kg": self.weight_kg,
            "voided_sku": self.voided_sku,
            "void_ts": _round(self.void_ts),
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], where: str) -> Event:
        """An alert line back. Fields added in later versions (`entry`, `weight_kg`, the void's)
        may be missing, as in older files; a field present must be well-formed."""
        f = _Fields(obj, where)
        kind = f.choice("type", ALERT_TYPES)
        start, end = f.number("t_start"), f.number("t_end")
        if end < start:
            raise RecordError(f"{where}: t_end {float(end)} is before t_start {float(start)}")
        entry = f.optional(f.choice, "entry", tuple(EntryMethod))
        return cls(
            type=EventType(kind),
            t_start=start,
            t_end=end,
            track_id=f.optional(f.integer, "track_id", minimum=0),
            seen_sku=f.optional(f.text, "seen_sku"),
            seen_score=f.optional(f.number, "seen_score"),
            seen_confidence=f.optional(f.number, "seen_confidence"),
            scanned_sku=f.optional(f.text, "scanned_sku"),
            scanned_score=f.optional(f.number, "scanned_score"),
            scanned_confidence=f.optional(f.number, "scanned_confidence"),
            scan_ts=f.optional(f.number, "scan_ts"),
            txn=f.optional(f.string, "txn"),
            evidence=f.paths("evidence"),
            entry=None if entry is None else EntryMethod(entry),
            weight_kg=f.optional(f.number, "weight_kg"),
            voided_sku=f.optional(f.text, "voided_sku"),
            void_ts=f.optional(f.number, "void_ts"),
            **cls._frame(obj, where),
        )


@dataclass(frozen=True, kw_only=True)
class BasketEvent(_Framed):
    """Per transaction: the basket the camera saw against the basket the till scanned."""

    txn: str | None
    seen: dict[str, int]
    scanned: dict[str, int]
    jaccard: float
    dice: float
    overlap: float
    tversky: float
    type: EventType = field(default=EventType.BASKET, init=False)

    def _fields(self) -> dict:
        return {
            "type": self.type,
            "txn": self.txn,
            "seen": dict(sorted(self.seen.items())),
            "scanned": dict(sorted(self.scanned.items())),
            "jaccard": round(self.jaccard, 4),
            "dice": round(self.dice, 4),
            "overlap": round(self.overlap, 4),
            "tversky": round(self.tversky, 4),
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], where: str) -> BasketEvent:
        f = _Fields(obj, where)
        f.choice("type", (EventType.BASKET,))
        return cls(
            txn=f.optional(f.string, "txn"),
            seen=f.counts("seen"),
            scanned=f.counts("scanned"),
            jaccard=f.number("jaccard"),
            dice=f.number("dice"),
            overlap=f.number("overlap"),
            tversky=f.number("tversky"),
            **cls._frame(obj, where),
        )


@dataclass(frozen=True, kw_only=True)
class PassRecord:
    """What was decided about one item pass, alert or not: a line of passes.jsonl and a bar on
    the report's timeline."""

    track_id: int
    t_start: float  # POS clock
    t_end: float
    verdict: Verdict
    seen_sku: str | None
    seen_score: float
    scanned_sku: str | None = None  # the SKU, or "barcode:CODE" when the catalogue does not know it
    scanned_score: float | None = None
    scan_ts: float | None = None
    txn: str | None = None
    # The quality score of each of its crops (pipeline.view_quality, in [0, 1]), best first: the
    # order of an alert's evidence crops; a crop's weight in the pass's embedding grows with it.
    view_quality: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "verdict": self.verdict,
            "seen_sku": self.seen_sku,
            "seen_score": _round(self.seen_score),
            "scanned_sku": self.scanned_sku,
            "scanned_score": _round(self.scanned_score),
            "scan_ts": _round(self.scan_ts),
            "txn": self.txn,
            "view_quality": [round(float(q), 4) for q in self.view_quality],
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], where: str) -> PassRecord:
        f = _Fields(obj, where)
        qualities = f.get("view_quality", [])
        if not isinstance(qualities, list) or not all(_is_number(q) for q in qualities):
            raise RecordError(f"{where}: field 'view_quality' must be a list of numbers, got {qualities!r}")
        return cls(
            track_id=f.integer("track_id", minimum=0),
            t_start=f.number("t_start"),
            t_end=f.number("t_end"),
            verdict=Verdict(f.choice("verdict", tuple(Verdict))),
            seen_sku=f.optional(f.text, "seen_sku"),
            seen_score=f.number("seen_score"),
            scanned_sku=f.optional(f.text, "scanned_sku"),
            scanned_score=f.optional(f.number, "scanned_score"),
            scan_ts=f.optional(f.number, "scan_ts"),
            txn=f.optional(f.string, "txn"),
            view_quality=tuple(qualities),
        )


def event_from_dict(obj: Mapping[str, Any], where: str) -> Event | BasketEvent:
    """An events.jsonl line, parsed: an `Event` or a `BasketEvent` by its `type`."""
    if obj.get("type") == EventType.BASKET:
        return BasketEvent.from_dict(obj, where)
    return Event.from_dict(obj, where)


def parse_event_line(data: bytes | str, where: str) -> Event | BasketEvent:
    """One line of events.jsonl as its record; RecordError names `where` and what is wrong."""
    return event_from_dict(parse_object(data, where, max_bytes=MAX_EVENT_LINE_BYTES, error=RecordError), where)


def read_events(path: str | Path) -> list[Event | BasketEvent]:
    """Every line of an events.jsonl (a replay's, or a lane service's with its stamps), in order.
    A malformed line is an error naming its line: a reader that skipped it would miscount."""
    return [parse_event_line(data, where) for where, data in _lines(path, "events file")]


def read_passes(path: str | Path) -> list[PassRecord]:
    """Every line of a replay's passes.jsonl, in order."""
    return [
        PassRecord.from_dict(parse_object(data, where, max_bytes=MAX_EVENT_LINE_BYTES, error=RecordError), where)
        for where, data in _lines(path, "passes file")
    ]


def _lines(path: str | Path, what: str) -> list[tuple[str, bytes]]:
    """The file's non-blank lines, each with "PATH:LINE"."""
    raw = read_user_file(path, what, RecordError).removeprefix(b"\xef\xbb\xbf")
    return [(f"{path}:{n}", data) for n, data in enumerate(raw.splitlines(), start=1) if data.strip()]


# --- fields --------------------------------------------------------------------------------------


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Fields:
    """A line's fields, each checked as it is taken; errors name the line and the field."""

    def __init__(self, obj: Mapping[str, Any], where: str):
        self.obj, self.where = obj, where

    def get(self, key: str, default: object = None) -> Any:
        return self.obj.get(key, default)

    def _required(self, key: str) -> Any:
        if key not in self.obj:
            raise RecordError(f"{self.where}: missing field '{key}'")
        return self.obj[key]

    def _bad(self, key: str, expected: str) -> RecordError:
        return RecordError(f"{self.where}: field '{key}' must be {expected}, got {self.obj.get(key)!r}")

    def optional(self, take: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        """`take(key, ...)`, or None when the field is missing or null."""
        return None if self.obj.get(key) is None else take(key, *args, **kwargs)

    def number(self, key: str) -> float:
        v = self._required(key)
        if not _is_number(v):
            raise self._bad(key, "a finite number")
        return v

    def integer(self, key: str, minimum: int) -> int:
        v = self._required(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return v

    def string(self, key: str) -> str:
        v = self._required(key)
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def text(self, key: str) -> str:
        v = self._required(key)
        if not isinstance(v, str) or not v:
            raise self._bad(key, "a non-empty string")
        return v

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        v = self.obj.get(key)
        if v is None or v == "":
            raise RecordError(f"{self.where}: missing or empty field '{key}'")
        if v not in allowed:
            raise RecordError(f"{self.where}: field '{key}' is {v!r}, expected one of {', '.join(allowed)}")
        return v

    def paths(self, key: str) -> tuple[str, ...]:
        v = self.obj.get(key, [])
        if not isinstance(v, list) or not all(isinstance(p, str) and p for p in v):
            raise self._bad(key, "a list of file paths")
        return tuple(v)

    def counts(self, key: str) -> dict[str, int]:
        v = self._required(key)
        if not isinstance(v, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v.values()
        ):
            raise self._bad(key, "an object of SKU: count (counts >= 0)")
        return v
