"""The lane's record of the POS events it received, STATE/pos.jsonl: each event as one POS-log
line (`PosEvent.to_json`, so the file is itself a POS log `reid replay --pos` reads), appended and
fsynced as the lane takes it, from HTTP, MQTT or the POS file alike. It is what the console shows
as "the POS lines around" a lane's alert.

Bounded: past `max_bytes` the file is moved to pos.1.jsonl (the previous one dropped) and a new one
begun, so the two hold the latest `max_bytes` to twice that. A line torn by a crash is cut off at
the next start; a write the disk refuses is cut back to the last whole line and the events are not
recorded (the lane still decides on them: the record is for review, not for the lane).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from retail_reid.durable import append_lines, fsync_dir
from retail_reid.pipeline.pos import POS_RECORD_FILE, POS_RECORD_OLDER, PosEvent

log = logging.getLogger("reid.edge.pos")

POS_RECORD_MAX_BYTES = 8_000_000  # about 80 000 events: weeks of a busy lane


class PosRecord:
    def __init__(self, state: Path, max_bytes: int = POS_RECORD_MAX_BYTES):
        self.path = state / POS_RECORD_FILE
        self.older = state / POS_RECORD_OLDER
        self.max_bytes = max_bytes
        self.error: str | None = None  # why the latest events were not recorded; None once they are again
        self._size = self._recover()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def append(self, events: list[PosEvent]) -> None:
        """Record `events` (one write and one fsync for all of them); never raises on a disk error."""
        if not events:
            return
        data = "".join(e.to_json() + "\n" for e in events).encode()
        try:
            if self._size > 0 and self._size + len(data) > self.max_bytes:
                self._rotate()
            append_lines(self._fd, data, self._size, self.path)
        except OSError as e:
            reason = f"{self.path}: {len(events)} POS events not recorded ({e.strerror or e})"
            if self.error is None:
                log.warning("%s; the lane still decides on them", reason)
            self.error = reason
            return
        self._size += len(data)
        self.error = None

    def close(self) -> None:
        os.close(self._fd)

    def _rotate(self) -> None:
        os.replace(self.path, self.older)
        fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = 0

    def _recover(self) -> int:
        """The size of the whole lines (the file is at most about `max_bytes`); a line torn by a crash is cut off."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
            log.warning(
                "%s: the last line was torn (a crash while writing); its %d bytes cut off", self.path, len(data) - end
            )
        return end
