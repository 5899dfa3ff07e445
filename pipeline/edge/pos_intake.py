"""POS events arriving live: over HTTP (`POST /pos`, one event or a list) and from a JSON-lines
file the POS appends to. Both validate with the replay's own `parse_pos_event`, so a field means
the same everywhere; `ts` is Unix seconds on the POS clock.

An HTTP request is all or nothing: one bad event refuses the request (400, naming the event and
the field), so the POS can resend it corrected without duplicating the good ones. A bad line in
the file is skipped with a warning naming the line, as `read_pos_log` does. The file's read
position is kept on disk, so a restart neither re-reads old scans (they would come back as scans
without item) nor misses the ones appended meanwhile.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from retail_reid.bounded_json import parse_json
from retail_reid.durable import replace_atomically
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.worker import Worker
from retail_reid.pipeline.pos import MAX_LINE_BYTES, PosError, PosEvent, parse_pos_event, parse_pos_line
from retail_reid.pipeline.types import ScanWarning, Unverifiable

log = logging.getLogger("reid.edge.pos")

MAX_READ_BYTES = 1 << 20  # read at most this much of the file per poll: memory stays bounded
WHERE_HTTP = "HTTP body"
MAX_BODY_BYTES = 16 << 20  # the most `[edge.http] max_body_bytes` allows


class InboxFull(Exception):
    """The lane is not taking POS events as fast as they come; the sender should retry later."""


class PosInbox:
    """POS events received and not yet taken by the lane, at most `capacity` of them."""

    def __init__(
        self,
        capacity: int,
        metrics: EdgeMetrics,
        clock_offset_s: float,
        max_skew_s: float,
        clock: Callable[[], float] = time.time,
        verify: Callable[[PosEvent], ScanWarning | None] = lambda event: None,
    ):
        """`verify`: why the camera cannot check an event (`lane.scan_warning` against the gallery)."""
        self.capacity = capacity
        self.metrics = metrics
        self.clock_offset_s = clock_offset_s
        self.max_skew_s = max_skew_s
        self.clock = clock
        self.verify = verify
        self._items: deque[PosEvent] = deque()
        self._lock = threading.Lock()
        self._last: dict | None = None
        self._last_unverifiable: dict | None = None

    def check(self, event: PosEvent, where: str) -> None:
        """Refuse an event whose time is implausibly far from now: the POS clock (or the lane's
        clock_offset_s) is wrong, and matching it against the camera would only raise false alerts."""
        now = self.clock() + self.clock_offset_s
        if abs(event.ts - now) > self.max_skew_s:
            raise PosError(
                f"{where}: field 'ts' is {event.ts:.3f}, {event.ts - now:+.1f} s from now on the POS clock "
                f"(more than {self.max_skew_s:g} s); 'ts' must be Unix seconds, check the POS clock"
            )

    def put(self, events: list[PosEvent], source: str) -> list[tuple[int, ScanWarning]]:
        """Accept all of `events` or none (InboxFull). Returns the scans among them that the camera
        cannot check (their index in `events`, and why), each also counted and logged (`unverifiable`)."""
        if not events:
            return []
        with self._lock:
            if len(self._items) + len(events) > self.capacity:
                raise InboxFull(f"{len(self._items)} POS events are waiting for the lane (at most {self.capacity})")
            self._items.extend(events)
            last = max(events, key=lambda e: e.ts)
            self._last = {
                "ts": last.ts,
                "type": last.type,
                "sku": last.sku,
                "barcode": last.barcode,
                "txn": last.txn,
                "source": source,
                "received_at": round(self.clock(), 3),
            }
        self.metrics.pos_received.inc(source, amount=len(events))
        found = [(i, w) for i, e in enumerate(events) if (w := self.verify(e)) is not None]
        for i, warning in found:
            self.unverifiable(events[i], warning, source)
        return found

    def unverifiable(self, event: PosEvent, warning: ScanWarning, source: str | None) -> None:
        """Count, log and keep (for /health) a scan the camera cannot check; `source` None: found
        by the lane (the camera was down). The log line is `POS scan unverifiable (REASON): DETAIL`."""
        self.metrics.pos_unverifiable.inc(warning.reason)
        log.warning("POS scan unverifiable (%s): %s", warning.reason, warning)
        with self._lock:
            self._last_unverifiable = {
                "ts": event.ts,
                "sku": event.sku,
                "barcode": event.barcode,
                "txn": event.txn,
                "reason": warning.reason,
                "detail": warning.text,
                "source": source,
                "received_at": round(self.clock(), 3),
            }

    def unverifiable_status(self) -> dict:
        """For /health: the scans the camera could not check, by reason, and the latest of them."""
        with self._lock:
            last = None if self._last_unverifiable is None else dict(self._last_unverifiable)
        return {"by_reason": {r: int(self.metrics.pos_unverifiable.value(r)) for r in Unverifiable}, "last": last}

    def take(self) -> list[PosEvent]:
        """Everything waiting, in arrival order."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def last(self) -> dict | None:
        """The latest event received (by its time), with where and when it came."""
        with self._lock:
            return None if self._last is None else dict(self._last)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def parse_pos_body(
    body: bytes,
    max_events: int,
    check: Callable[[PosEvent, str], None] = lambda event, where: None,
    where: str = WHERE_HTTP,
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> list[PosEvent]:
    """The events of one `POST /pos` body or MQTT message (a JSON object, or a list of them, at most
    `max_bytes` long), each also passed to `check`; PosError naming the event (`HTTP body[3]`) and
    field otherwise."""
    obj = parse_json(body, where, max_bytes=max_bytes, expect=(dict, list), error=PosError)
    if isinstance(obj, dict):
        obj, places = [obj], [where]
    else:
        assert isinstance(obj, list)  # parse_json checked it
        places = [f"{where}[{i}]" for i in range(len(obj))]
    if not obj:
        raise PosError(f"{where}: an empty list; send at least one event")
    if len(obj) > max_events:
        raise PosError(f"{where}: {len(obj)} events in one request, at most {max_events}; split it")
    events = []
    for item, place in zip(obj, places, strict=True):
        event = parse_pos_event(item, place)
        check(event, place)
        events.append(event)
    return events


class PosFileTailer(Worker):
    """Follows a JSON-lines file the POS appends to, from where it last stopped (kept in
    `state_path`). A file replaced (new inode) or cut shorter is read again from its start.
    On `stop` it reads what has been appended so far and saves the position."""

    def __init__(
        self, path: str | Path, inbox: PosInbox, state_path: Path, poll_s: float, from_start: bool, metrics: EdgeMetrics
    ):
        super().__init__("pos-file")
        self.path = Path(path)
        self.inbox = inbox
        self.state_path = state_path
        self.poll_s = poll_s
        self.from_start = from_start
        self.metrics = metrics
        self._file_id: tuple[int, int] | None = None
        self._offset = 0  # bytes consumed, the partial line included
        self._line = 0  # complete lines consumed
        self._partial = b""  # the last line, still without its newline
        self._skipping = False  # inside an over-long line: drop bytes up to its newline
        self._saved: tuple | None = None
        self.error: str | None = None
        self._load_state()

    def status(self) -> dict:
        return {"file": str(self.path), "line": self._line, "error": self.error}

    def run(self) -> None:
        while True:
            stopping = self.stopping
            try:
                while self._poll():
                    pass
            except InboxFull as e:
                self.error = f"{e}; reading paused"
            except OSError as e:
                self.error = f"{self.path}: cannot read ({e.strerror or e})"
            if stopping:
                return
            self.wait(self.poll_s)

    def _load_state(self) -> None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if state.get("file") != str(self.path):
                log.info("%s: saved for %s; following %s from its end", self.state_path, state.get("file"), self.path)
                self._start_here()
                return
            self._file_id = (int(state["device"]), int(state["inode"]))
            self._offset, self._line = int(state["offset"]), int(state["line"])
            self._saved = (self._file_id, self._offset, self._line)
        except FileNotFoundError:
            self._start_here()
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s); following %s from its end", self.state_path, e, self.path)
            self._start_here()

    def _start_here(self) -> None:
        """No saved position: begin after what the file holds now (all of it with from_start); a
        line being written at this moment was begun before us and is skipped too."""
        if self.from_start:
            return
        try:
            st = os.stat(self.path)
            self._offset, self._line = st.st_size, self._count_lines(st.st_size)
            self._skipping = st.st_size > 0 and not self._ends_with_newline(st.st_size)
        except FileNotFoundError:
            return
        self._file_id = (st.st_dev, st.st_ino)

    def _save_state(self) -> None:
        offset = self._offset - len(self._partial)  # a restart reads the unfinished line again, whole
        key = (self._file_id, offset, self._line)
        if key == self._saved or self._file_id is None:
            return
        data = {
            "file": str(self.path),
            "device": self._file_id[0],
            "inode": self._file_id[1],
            "offset": offset,
            "line": self._line,
        }
        try:
            replace_atomically(self.state_path, (json.dumps(data) + "\n").encode(), "edge-pos-offset")
        except OSError as e:  # the position is saved again with the next line read
            log.warning("%s: cannot save the POS file position (%s)", self.state_path, e.strerror or e)
            return
        self._saved = key

    def _poll(self) -> bool:
        """Read one chunk of new lines; True if there may be more."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.error = f"{self.path}: no such file (yet)"
            return False
        file_id = (st.st_dev, st.st_ino)
        if self._file_id is None:  # a file that appeared after the service started: all of it is new
            self._file_id = file_id
        elif file_id != self._file_id or st.st_size < self._offset - len(self._partial):
            log.info("%s: replaced or truncated; reading it from the start", self.path)
            self._file_id, self._offset, self._line, self._partial, self._skipping = file_id, 0, 0, b"", False
        self.error = None
        if st.st_size <= self._offset:
            self._save_state()
            return False
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(min(st.st_size - self._offset, MAX_READ_BYTES))
        self._consume(data)
        self._save_state()
        return self._offset < st.st_size

    def _consume(self, data: bytes) -> None:
        pieces = (self._partial + data).split(b"\n")
        partial = pieces.pop()
        skipping, line = self._skipping, self._line
        events: list[PosEvent] = []
        problems: list[str] = []
        for raw in pieces:
            line += 1
            if skipping:
                skipping = False
                continue
            event = self._parse(raw, line, problems)
            if event is not None:
                events.append(event)
        if len(partial) > MAX_LINE_BYTES:
            problems.append(f"{self.path}:{line + 1}: line longer than {MAX_LINE_BYTES} bytes; skipped")
            partial, skipping = b"", True
        self.inbox.put(events, "file")  # InboxFull: nothing above is committed, the chunk is read again
        self._offset += len(data)
        self._partial, self._skipping, self._line = partial, skipping, line
        for p in problems:
            log.warning("%s", p)
        if problems:
            self.metrics.pos_rejected.inc("file", amount=len(problems))

    def _parse(self, raw: bytes, line: int, problems: list[str]) -> PosEvent | None:
        where = f"{self.path}:{line}"
        if not raw.strip():
            return None
        try:
            event = parse_pos_line(raw, where)
            self.inbox.check(event, where)
            return dataclasses.replace(event, line=line)
        except PosError as e:
            problems.append(str(e))
        return None

    def _ends_with_newline(self, size: int) -> bool:
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"

    def _count_lines(self, size: int) -> int:
        count = 0
        with open(self.path, "rb") as f:
            while f.tell() < size:
                count += f.read(min(MAX_READ_BYTES, size - f.tell())).count(b"\n")
        return count
