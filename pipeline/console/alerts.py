"""The alerts the console shows, read from the folders it was given: a lane's state folder
(`reid edge`: events.jsonl with `seq`, `id`, `lane`, evidence under evidence/, the POS events it
received in pos.jsonl and pos.1.jsonl) or a replay's output folder (`reid replay`: events.jsonl,
summary.json naming the POS log, crops/). Loss alerts and double scans (customer service) are
alerts; basket lines are not. Files are read only, re-read when they change, and a line that is
not an alert is skipped (a torn or foreign line never stops the console)."""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from retail_reid.bounded_json import JsonRejected, parse_object
from retail_reid.compat import StrEnum
from retail_reid.pipeline.console.pos_lines import PosLines
from retail_reid.pipeline.evidence import EvidenceKind, evidence_kind
from retail_reid.pipeline.pos import POS_RECORD_FILE, POS_RECORD_OLDER, PosEvent
from retail_reid.pipeline.recording import RecordingError, RecordingIdentity
from retail_reid.pipeline.records import (
    ALERT_TYPES,
    MAX_EVENT_LINE_BYTES,
    Event,
    EventFamily,
    EventType,
    RecordError,
    event_from_dict,
)

log = logging.getLogger("reid.console")
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
MAX_SUMMARY_BYTES = 16 << 20  # a replay's summary.json is a few KB
KEY = re.compile(r"[A-Za-z0-9._-]{1,128}")  # what an alert's key may look like in a URL
POS_AROUND_S = 20.0  # POS lines shown on each side of an alert


class SourceKind(StrEnum):
    LANE = "lane"  # a `reid edge` state folder
    REPLAY = "replay"  # a `reid replay` output folder


ALERT_FAMILIES = tuple(dict.fromkeys(t.family for t in ALERT_TYPES))  # loss, then customer service


def family_of(kind: str) -> EventFamily:
    """The family of an alert type as stored with a verdict (one this version does not know: loss)."""
    return EventType(kind).family if kind in ALERT_TYPES else EventFamily.LOSS


@dataclass(frozen=True)
class Alert:
    source: str  # the folder's name in the console
    key: str  # unique within the source: the edge's `id`, or the replay's line number
    lane: str
    type: EventType  # an alert's: never a basket
    # Unix seconds: the alert's time on a lane or in a recording whose start is known
    # (`reid replay --start`); otherwise the replay's run time (events.jsonl's mtime)
    when: float
    t_start: float  # on the POS clock (Unix seconds live, video seconds in a replay)
    t_end: float
    record: dict  # the whole line, for the alert page
    store: str = ""  # a replay's recording's store, when the replay was told it

    @property
    def evidence(self) -> list[str]:
        ev = self.record.get("evidence")
        return [p for p in ev if isinstance(p, str)] if isinstance(ev, list) else []

    @property
    def crops(self) -> list[str]:
        """The crops of the item among the evidence (not the lane frame, nor the clip)."""
        return [p for p in self.evidence if evidence_kind(p) is EvidenceKind.CROP]


@dataclass
class _Cache:
    file: tuple[int, int] = (-1, -1)  # (device, inode) of events.jsonl when read
    mtime_ns: int = -1
    offset: int = 0  # bytes of whole lines read
    lines: int = 0  # whole lines read
    alerts: tuple[Alert, ...] = ()
    bad_lines: int = 0


class AlertFolder:
    """One lane's or one replay's alerts, with the files they refer to."""

    def __init__(self, name: str, kind: SourceKind, root: Path):
        self.name = name
        self.kind = kind
        self.root = root
        self.recording: RecordingIdentity | None = None  # a replay's store, lane and start, when given
        self._cache = _Cache()
        if kind is SourceKind.LANE:  # the older file first: events come out in the order received
            what = "the lane's POS record"
            self.pos_files = [PosLines(root / name, what, growing=True) for name in (POS_RECORD_OLDER, POS_RECORD_FILE)]
            self.pos_missing = f"the lane has recorded no POS events ({root / POS_RECORD_FILE})"
        else:
            summary, self.pos_missing = _replay_summary(root)
            pos_log, self.recording = summary
            self.pos_files = [] if pos_log is None else [PosLines(pos_log, "the replay's POS log", growing=False)]
            if self.pos_missing:
                log.warning("%s", self.pos_missing)
        self._lock = threading.Lock()

    def alerts(self) -> tuple[Alert, ...]:
        """All alerts, oldest first. A lane's file only grows: only the lines added since the last
        look are read. A file replaced or cut shorter (a torn line moved aside), or a replay's
        (whose alerts are dated by the file), is read again whole."""
        path = self.root / EVENTS
        try:
            st = path.stat()
        except OSError:
            return ()
        with self._lock:
            cache = self._cache
            if (st.st_mtime_ns, st.st_size) == (cache.mtime_ns, cache.offset):
                return cache.alerts
            grown = self.kind is SourceKind.LANE and (st.st_dev, st.st_ino) == cache.file and st.st_size >= cache.offset
            self._cache = self._read(path, cache if grown else _Cache(file=(st.st_dev, st.st_ino)), st)
            return self._cache.alerts

    @property
    def bad_lines(self) -> int:
        return self._cache.bad_lines

    def alert(self, key: str) -> Alert | None:
        return next((a for a in self.alerts() if a.key == key), None)

    def _read(self, path: Path, cache: _Cache, st: os.stat_result) -> _Cache:
        """`cache` with the whole lines after its offset added."""
        alerts, bad, offset, lineno = list(cache.alerts), cache.bad_lines, cache.offset, cache.lines
        with open(path, "rb") as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):  # a line being written (or torn): not yet an alert
                    break
                offset += len(raw)
                lineno += 1
                if not raw.strip():
                    continue
                try:
                    record = parse_object(raw, "", max_bytes=MAX_EVENT_LINE_BYTES)
                    event = event_from_dict(record, f"line {lineno}")
                except (JsonRejected, RecordError):  # not a line the lane wrote: counted as unreadable
                    bad += 1
                    continue
                if isinstance(event, Event):  # a basket is a comparison, nothing to review
                    alerts.append(self._alert(event, record, lineno, st.st_mtime))
        return _Cache(cache.file, st.st_mtime_ns, offset, lineno, tuple(alerts), bad)

    def _alert(self, event: Event, record: dict, lineno: int, mtime: float) -> Alert:
        t0, t1 = float(event.t_start), float(event.t_end)
        if self.kind is SourceKind.LANE:
            key, lane, when = record.get("id"), record.get("lane"), t0
            if not isinstance(key, str) or not KEY.fullmatch(key):
                key = f"line{lineno}"
            lane = lane if isinstance(lane, str) and lane else self.name
        elif self.recording is not None:
            key, lane, when = str(lineno), self.recording.lane, self.recording.time_of(t0)
        else:
            key, lane, when = str(lineno), self.name, mtime
        store = self.recording.store if self.recording is not None else ""
        return Alert(self.name, key, lane, event.type, when, t0, t1, record, store)

    def pos_around(self, alert: Alert) -> tuple[list[PosEvent], str | None]:
        """The POS lines within POS_AROUND_S of the alert, by time, and why there are none when
        they cannot be read."""
        lo, hi = alert.t_start - POS_AROUND_S, alert.t_end + POS_AROUND_S
        found: list[PosEvent] = []
        reasons: list[str] = []
        for pos in self.pos_files:
            events, why = pos.events()
            found += [e for e in events if lo <= e.ts <= hi]
            reasons += [why] if why else []
        if not any(pos.path.exists() for pos in self.pos_files):
            reasons = reasons or [self.pos_missing]
        return sorted(found, key=lambda e: e.ts), "; ".join(reasons) or None


def _replay_summary(root: Path) -> tuple[tuple[Path | None, RecordingIdentity | None], str]:
    """The POS log a replay ran with and its recording's store, lane and start, as its summary.json
    names them when the console starts (the operator's own input file; no request can point the
    console at another file), and why the POS lines cannot be shown. A relative POS path (a replay
    before 8 Dec 2026 kept it as typed) is taken from the replay's folder."""
    where = root / SUMMARY
    try:
        summary = parse_object(where.read_bytes(), "", max_bytes=MAX_SUMMARY_BYTES)
    except (OSError, JsonRejected) as e:
        return (None, None), f"{where} names no POS log ({e})"
    recording = None
    if "recording" in summary:
        try:
            recording = RecordingIdentity.from_dict(summary["recording"], str(where))
        except RecordingError as e:
            log.warning("%s; its alerts are dated by the replay's run", e)
    pos = summary.get("pos")
    if not isinstance(pos, str) or not pos:
        return (None, recording), f"{where} names no POS log ('pos' is not a path)"
    path = Path(pos).expanduser()
    path = path if path.is_absolute() else root / path
    missing = "" if path.is_file() else f"{where}: the POS log it names, {path}, is missing"
    return (path, recording), missing


def open_folders(lanes: tuple[Path, ...], replays: tuple[Path, ...]) -> dict[str, AlertFolder]:
    """The folders by a short unique name (the folder's own name, numbered when two share it)."""
    folders: dict[str, AlertFolder] = {}
    for kind, roots in ((SourceKind.LANE, lanes), (SourceKind.REPLAY, replays)):
        for root in roots:
            base = re.sub(r"[^A-Za-z0-9._-]", "_", root.resolve().name) or kind.value
            name, n = base, 2
            while name in folders:
                name, n = f"{base}-{n}", n + 1
            folders[name] = AlertFolder(name, kind, root.resolve())
    return folders
