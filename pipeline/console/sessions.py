"""Console sign-ins kept server-side, so that they can end: the cookie holds a random token, and a
request is signed in only while `sessions.db` (in --data) has that token's row. Signing out deletes
the row, so a copy of the cookie taken before is worthless; a session also ends when it has been
idle for `idle_s`, after `MAX_AGE_S` in any case, and when its operator is removed or given a new
password (each row keeps a fingerprint of the password hash it was opened with).

Only a hash of each token is stored: a copy of the database does not sign anyone in. A session's
last use is written at most every `TOUCH_EVERY_S`, so idle expiry is that much coarse.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from retail_reid.pipeline.console.durable_db import open_durable_db

DB_NAME = "sessions.db"
MAX_AGE_S = 12 * 3600.0  # a session ends 12 hours after sign-in, used or not
TOUCH_EVERY_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    credential TEXT NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_operator ON sessions(operator);
"""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, path: Path, idle_s: float, max_age_s: float = MAX_AGE_S):
        self.idle_s, self.max_age_s = idle_s, max_age_s
        self._conn = open_durable_db(path, SCHEMA, "sessions")
        self._lock = threading.Lock()

    def start(self, operator: str, credential: str, now: float | None = None) -> str:
        """A new session of `operator` (signed in with the password whose fingerprint is
        `credential`); returns the token for the cookie. Expired sessions are removed meanwhile."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._conn.execute(
                "DELETE FROM sessions WHERE seen_at < ? OR started_at < ?", (now - self.idle_s, now - self.max_age_s)
            )
            self._conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", (_hash(token), operator, credential, now, now)
            )
        return token

    def operator(self, token: str, credential: Callable[[str], str | None], now: float | None = None) -> str | None:
        """The operator whose live session `token` is, or None (the session is then ended):
        unknown or signed out, idle too long, too old, or its operator removed or re-passworded
        (`credential(name)`: the fingerprint of the operator's current password, None if removed)."""
        now = time.time() if now is None else now
        key = _hash(token)
        with self._lock:
            row = self._conn.execute(
                "SELECT operator, credential, started_at, seen_at FROM sessions WHERE token_hash = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            name, fingerprint, started_at, seen_at = row
            if now - seen_at > self.idle_s or now - started_at > self.max_age_s or credential(name) != fingerprint:
                self._conn.execute("DELETE FROM sessions WHERE token_hash = ?", (key,))
                return None
            if now - seen_at >= TOUCH_EVERY_S:
                self._conn.execute("UPDATE sessions SET seen_at = ? WHERE token_hash = ?", (now, key))
        return name

    def end(self, token: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_hash(token),))
