"""Reviewers' verdicts on alerts, kept in the console's SQLite database (WAL, synchronous=FULL: a
verdict the page confirmed is on disk and survives a crash or a power cut). Every verdict is a new
row, attributed to its reviewer; the latest row of an alert is its verdict, the older ones its history.

Precision of an alert type = confirmed / (confirmed + dismissed) over the alerts reviewed, per lane
and ISO week of the alert.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from retail_reid.compat import StrEnum
from retail_reid.pipeline.console.durable_db import open_durable_db
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.records import EventFamily

DB_NAME = "verdicts.db"
MAX_NOTE = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    lane TEXT NOT NULL,
    alert_type TEXT NOT NULL,
    alert_time REAL NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT,
    note TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    decided_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_alert ON verdicts(source, alert_key, id);
"""


class Decision(StrEnum):
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


class Reason(StrEnum):
    """Why an alert was dismissed."""

    WRONG_PRODUCT = "wrong_product"
    NOT_A_PRODUCT = "not_a_product"
    SCAN_MISSED_BY_POS = "scan_missed_by_pos"
    TWO_ITEMS = "two_items"  # a double scan: two such items were really there, both scans right
    OTHER = "other"


REASON_LABELS = {
    Reason.WRONG_PRODUCT: "wrong product recognised",
    Reason.NOT_A_PRODUCT: "item not a product",
    Reason.SCAN_MISSED_BY_POS: "scan missed by the POS log",
    Reason.TWO_ITEMS: "two items really bought",
    Reason.OTHER: "other",
}
REASONS = {  # the reasons a dismissal of each family of alert may give, as the page offers them
    EventFamily.LOSS: (Reason.WRONG_PRODUCT, Reason.NOT_A_PRODUCT, Reason.SCAN_MISSED_BY_POS, Reason.OTHER),
    EventFamily.SERVICE: (Reason.TWO_ITEMS, Reason.WRONG_PRODUCT, Reason.OTHER),
}


@dataclass(frozen=True)
class Verdict:
    source: str
    alert_key: str
    lane: str
    alert_type: str
    alert_time: float
    decision: Decision
    reason: Reason | None
    note: str
    reviewer: str
    decided_at: float


@dataclass(frozen=True)
class PrecisionRow:
    lane: str
    alert_type: str
    week: str  # ISO week of the alerts, e.g. 2026-W48
    confirmed: int
    dismissed: int

    @property
    def precision(self) -> float:
        return self.confirmed / (self.confirmed + self.dismissed)


def check_verdict(
    decision: str, reason: str, note: str, family: EventFamily = EventFamily.LOSS
) -> tuple[Decision, Reason | None, str]:
    """A form's fields as a verdict on an alert of `family`, or a ConsoleError naming the field."""
    try:
        dec = Decision(decision)
    except ValueError:
        raise ConsoleError(f"decision: expected one of {', '.join(Decision)}, got {decision!r}") from None
    rsn: Reason | None = None
    if reason:
        allowed = REASONS[family]
        if reason not in allowed:
            raise ConsoleError(f"reason: expected one of {', '.join(allowed)}, got {reason!r}")
        rsn = Reason(reason)
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ConsoleError(f"note: at most {MAX_NOTE} characters, got {len(note)}")
    if dec is Decision.DISMISSED and rsn is None:
        raise ConsoleError("reason: a dismissed alert needs a reason")
    if dec is Decision.CONFIRMED and rsn is not None:
        raise ConsoleError("reason: only a dismissed alert takes a reason (a note can explain a confirmation)")
    if rsn is Reason.OTHER and not note:
        raise ConsoleError("note: the reason 'other' needs a note saying what it was")
    return dec, rsn, note


def iso_week(t: float) -> str:
    year, week, _ = datetime.fromtimestamp(t, timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


class VerdictStore:
    """The verdicts database; one connection shared by the server's threads under a lock."""

    def __init__(self, path: Path):
        self.path = path
        self._conn = open_durable_db(path, SCHEMA, "verdicts")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def record(self, *verdicts: Verdict) -> None:
        """Store verdicts durably, all or none (one transaction, committed and fsynced before this
        returns): a bulk verdict is one row per alert, as if each had been given alone."""
        rows = [
            (
                v.source,
                v.alert_key,
                v.lane,
                v.alert_type,
                v.alert_time,
                v.decision.value,
                v.reason.value if v.reason else None,
                v.note,
                v.reviewer,
                v.decided_at,
            )
            for v in verdicts
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO verdicts (source, alert_key, lane, alert_type, alert_time, decision, reason, note, "
                    "reviewer, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> Iterator[Verdict]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        for source, alert_key, lane, alert_type, alert_time, decision, reason, note, reviewer, decided_at in rows:
            yield Verdict(
                source,
                alert_key,
                lane,
                alert_type,
                alert_time,
                Decision(decision),
                Reason(reason) if reason else None,
                note,
                reviewer,
                decided_at,
            )

    _COLUMNS = "source, alert_key, lane, alert_type, alert_time, decision, reason, note, reviewer, decided_at"
    _LATEST = f"SELECT {_COLUMNS} FROM verdicts WHERE id IN (SELECT MAX(id) FROM verdicts GROUP BY source, alert_key)"

    def latest(self) -> dict[tuple[str, str], Verdict]:
        """Each reviewed alert's current verdict, by (source, alert key)."""
        return {(v.source, v.alert_key): v for v in self._rows(self._LATEST)}

    def history(self, source: str, alert_key: str) -> list[Verdict]:
        """An alert's verdicts, newest first."""
        return list(
            self._rows(
                f"SELECT {self._COLUMNS} FROM verdicts WHERE source = ? AND alert_key = ? ORDER BY id DESC",
                (source, alert_key),
            )
        )

    def all(self) -> list[Verdict]:
        """Every verdict ever given, oldest first (the export: the audit trail, not only the latest)."""
        return list(self._rows(f"SELECT {self._COLUMNS} FROM verdicts ORDER BY id"))

    def precision(self) -> list[PrecisionRow]:
        counts: dict[tuple[str, str, str], list[int]] = {}
        for v in self._rows(self._LATEST):
            c = counts.setdefault((v.lane, v.alert_type, iso_week(v.alert_time)), [0, 0])
            c[v.decision is Decision.DISMISSED] += 1
        return [PrecisionRow(lane, kind, week, c[0], c[1]) for (lane, kind, week), c in sorted(counts.items())]


def _export_dict(v: Verdict) -> dict:
    d = asdict(v)
    d["decision"] = v.decision.value
    d["reason"] = v.reason.value if v.reason else None
    d["alert_time_utc"] = datetime.fromtimestamp(v.alert_time, timezone.utc).isoformat(timespec="seconds")
    d["decided_at_utc"] = datetime.fromtimestamp(v.decided_at, timezone.utc).isoformat(timespec="seconds")
    return d


def to_jsonl(verdicts: list[Verdict]) -> str:
    return "".join(json.dumps(_export_dict(v)) + "\n" for v in verdicts)


def _cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run as a formula (a note may start with '=')."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(verdicts: list[Verdict]) -> str:
    out = io.StringIO()
    fields = [*Verdict.__dataclass_fields__, "alert_time_utc", "decided_at_utc"]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for v in verdicts:
        writer.writerow({k: _cell(x) for k, x in _export_dict(v).items()})
    return out.getvalue()
