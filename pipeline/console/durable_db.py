"""The console's own SQLite databases (verdicts, lane-reference decisions): WAL and synchronous=FULL,
so a decision is on disk when the request that made it returns, and survives a crash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from retail_reid.pipeline.console.settings import ConsoleError


def open_durable_db(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A connection that the server's threads share (under the caller's lock), autocommit, with
    `schema` applied; `what` names the database in the one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(schema)
    except (OSError, sqlite3.Error) as e:
        raise ConsoleError(f"{path}: cannot open the {what} database ({e})") from None
    return conn
