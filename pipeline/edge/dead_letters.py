"""Alerts a receiver refused for good (a 3xx, or a 4xx other than 408 and 429), set aside so the
alerts after them go on: STATE/<sender>.dead-letters.jsonl, one JSON object per line with the
alert itself (`record`), why it was refused, the attempts made and when it was set aside.

The running service appends to the file and `reid edge dead-letters` lists it and re-sends from
it (removing what a receiver then accepts), possibly at the same time: every read-modify-write
holds an exclusive flock on the file's `.lock` companion, and removals rewrite the file atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from retail_reid.durable import replace_atomically
from retail_reid.pipeline.edge.settings import EdgeError


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One alert set aside: the alert's line, the receiver's last refusal, attempts made, Unix time set aside."""

    record: dict
    error: str
    attempts: int
    at: float

    @property
    def id(self) -> str:
        return str(self.record["id"])

    def to_json(self) -> str:
        return json.dumps({"record": self.record, "error": self.error, "attempts": self.attempts, "at": self.at})


class DeadLetters:
    """The dead-letter file of one sender (webhook or MQTT)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add(self, letter: DeadLetter) -> None:
        """Append one alert (fsynced: the cursor moves past it only after this returns)."""
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, (letter.to_json() + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def count(self) -> int:
        """Alerts set aside now (the file is read: `reid edge dead-letters` may have re-sent some)."""
        try:
            with self.path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def read(self) -> list[DeadLetter]:
        with self._locked():
            return self._read()

    def _read(self) -> list[DeadLetter]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise EdgeError(f"{self.path}: cannot read the dead letters ({e.strerror or e})") from None
        letters = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                letters.append(
                    DeadLetter(record=obj["record"], error=obj["error"], attempts=obj["attempts"], at=obj["at"])
                )
            except (ValueError, KeyError, TypeError) as e:
                raise EdgeError(f"{self.path}:{n}: not a dead-letter line ({e})") from None
        return letters

    def resend(self, ids: set[str] | None, send: Callable[[dict], str | None]) -> list[tuple[str, str | None]]:
        """Send the dead letters named by `ids` (None: all) again, in order, with `send` (None if
        accepted, else why not); the accepted ones are removed. Returns (id, error or None) for each
        one tried. An id that is not in the file is a user error."""
        with self._locked():
            letters = self._read()
            known = {letter.id for letter in letters}
            missing = sorted((ids or set()) - known)
            if missing:
                listed = ", ".join(sorted(known)) or "none"
                raise EdgeError(f"{self.path}: no dead letter with id {', '.join(missing)} (listed: {listed})")
            results, kept = [], []
            for letter in letters:
                if ids is not None and letter.id not in ids:
                    kept.append(letter)
                    continue
                error = send(letter.record)
                results.append((letter.id, error))
                if error is not None:
                    kept.append(letter)
            data = "".join(letter.to_json() + "\n" for letter in kept).encode()
            replace_atomically(self.path, data, "edge-dead-letters")
            return results
