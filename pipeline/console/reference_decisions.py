"""Operators' decisions on lane references, kept in the console's data folder (SQLite, WAL,
synchronous=FULL): a crop accepted or rejected is never suggested again, and who decided is kept.
The lanes' folders stay read-only to the console."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from retail_reid.compat import StrEnum
from retail_reid.pipeline.console.durable_db import open_durable_db

DB_NAME = "lane-references.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    sha256 TEXT PRIMARY KEY,   -- the crop's content address
    sku TEXT NOT NULL,
    decision TEXT NOT NULL,    -- accepted | rejected
    operator TEXT NOT NULL,
    decided_at REAL NOT NULL
);
"""


class Decision(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ReferenceDecisions:
    """The decisions database; one connection shared by the server's threads under a lock."""

    def __init__(self, path: Path):
        self._conn = open_durable_db(path, SCHEMA, "lane-references")
        self._lock = threading.Lock()

    def record(self, sku: str, hashes: list[str], decision: Decision, operator: str) -> None:
        """Store the decisions of one bulk action in one transaction (durable when this returns)."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO decisions (sha256, sku, decision, operator, decided_at) VALUES (?, ?, ?, ?, ?)",
                [(h, sku, decision.value, operator, now) for h in hashes],
            )
            self._conn.execute("COMMIT")

    def decided(self) -> dict[str, Decision]:
        with self._lock:
            rows = self._conn.execute("SELECT sha256, decision FROM decisions").fetchall()
        return {h: Decision(d) for h, d in rows}
