"""The lane's alert log, STATE/events.jsonl: every alert and basket line, in the order decided,
each appended and fsynced once. It is the service's outbox too: the webhook sender delivers from
it, `GET /events?since=` reads it, and a restart carries on from it.

Each line is the replay's event (`Event.to_dict()` / `BasketEvent.to_dict()`) with its
`records.LogStamp` in front: `seq` (1, 2, ... continuing across restarts), `id` (unique to this lane and state folder:
the webhook's idempotency key), `lane`, `written_at` (Unix seconds) and `gallery_version`.

A write that fails (disk full) is cut back to the last whole line and kept in memory, in order,
to be written again; a line torn by a crash is moved aside at start, never parsed as an alert.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from retail_reid.durable import append_lines
from retail_reid.pipeline.records import BasketEvent, Event, LogStamp

log = logging.getLogger("reid.edge.alerts")

MAX_UNWRITTEN = 10000  # alerts held in memory while the disk refuses them
SCAN_BLOCK = 4096  # below this many bytes, a search reads lines one by one


class AlertLog:
    def __init__(self, path: Path, lane: str, id_prefix: str):
        self.path = path
        self.lane = lane
        self.id_prefix = id_prefix
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._unwritten: deque[tuple[int, Event | BasketEvent, int]] = deque()  # (seq, event, gallery version)
        self.lost = 0  # alerts dropped because the disk refused more than MAX_UNWRITTEN
        self.error: str | None = None
        self.last_seq, self._size = self._recover()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def close(self) -> None:
        with self._lock:
            self._write_unwritten()
            os.close(self._fd)

    # --- writing -------------------------------------------------------------------------------

    def append(self, event: Event | BasketEvent, gallery_version: int) -> int:
        """Give the event the next sequence number and write it; returns the number. If the disk
        refuses, the event waits in memory (in order) and is written by a later append or `retry`."""
        with self._lock:
            self.last_seq += 1
            if len(self._unwritten) >= MAX_UNWRITTEN:
                self.lost += 1
                log.error(
                    "alert %d lost: %d alerts already wait for the disk (%s)", self.last_seq, MAX_UNWRITTEN, self.error
                )
                return self.last_seq
            self._unwritten.append((self.last_seq, event, gallery_version))
            self._write_unwritten()
            return self.last_seq

    def retry(self) -> None:
        """Write alerts that earlier failed to be written (the disk may have room again)."""
        with self._lock:
            if self._unwritten:
                self._write_unwritten()

    @property
    def unwritten(self) -> int:
        with self._lock:
            return len(self._unwritten)

    def _write_unwritten(self) -> None:
        while self._unwritten:
            seq, event, version = self._unwritten[0]
            stamp = LogStamp(
                seq=seq,
                id=f"{self.id_prefix}-{seq}",
                lane=self.lane,
                written_at=round(time.time(), 3),
                gallery_version=version,
            )
            data = (json.dumps(replace(event, logged=stamp).to_dict()) + "\n").encode()
            try:
                append_lines(self._fd, data, self._size, self.path)
            except OSError as e:
                if self.error is None:
                    log.error(
                        "%s: cannot write alerts (%s); %d kept in memory until it can",
                        self.path,
                        e.strerror or e,
                        len(self._unwritten),
                    )
                self.error = (
                    f"{self.path}: cannot write ({e.strerror or e}); {len(self._unwritten)} alerts wait in memory"
                )
                return
            self._size += len(data)
            self._unwritten.popleft()
            self.error = None
            self._appended.notify_all()

    # --- reading -------------------------------------------------------------------------------

    def wait(self, after_seq: int, timeout: float) -> None:
        """Block until an alert past `after_seq` is on disk, or `timeout` seconds."""
        with self._appended:
            if self._written_seq() <= after_seq:
                self._appended.wait(timeout)

    def _written_seq(self) -> int:
        return self._unwritten[0][0] - 1 if self._unwritten else self.last_seq

    def read_after(self, seq: int, limit: int) -> list[dict]:
        """Up to `limit` records with sequence numbers above `seq`, oldest first (on disk only)."""
        with self._lock:
            size = self._size
        out: list[dict] = []
        if size == 0 or limit < 1:
            return out
        with open(self.path, "rb") as f:
            f.seek(self._first_after(f, seq, size))
            while f.tell() < size and len(out) < limit:
                record = _record(f.readline())
                if record is not None and record["seq"] > seq:
                    out.append(record)
        return out

    def _first_after(self, f: BinaryIO, seq: int, size: int) -> int:
        """A line start at or before the first record above `seq` (sequence numbers rise along the file)."""
        lo, hi = 0, size
        while hi - lo > SCAN_BLOCK:
            mid = (lo + hi) // 2
            f.seek(mid - 1)
            f.readline()
            start = f.tell()
            if start >= hi:
                break
            record = _record(f.readline())
            if record is not None and record["seq"] > seq:
                hi = start
            else:
                lo = start
        return lo

    # --- start ---------------------------------------------------------------------------------

    def _recover(self) -> tuple[int, int]:
        """The last sequence number and the size of the whole lines; a torn last line is moved aside."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0, 0
        end = data.rfind(b"\n") + 1
        if end < len(data):
            aside = self.path.with_name(f"{self.path.name}.torn-{int(time.time())}")
            aside.write_bytes(data[end:])
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
            log.warning(
                "%s: the last line was torn (a crash while writing); its %d bytes are in %s",
                self.path,
                len(data) - end,
                aside,
            )
        last, bad = 0, 0
        for line in data[:end].splitlines(keepends=True):
            record = _record(line)
            if record is None:
                bad += 1
            else:
                last = max(last, record["seq"])
        if bad:
            log.warning("%s: %d lines are not alerts of this service; they are left alone", self.path, bad)
        return last, end


def _record(line: bytes) -> dict | None:
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record
