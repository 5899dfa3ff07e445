"""The POS lines an alert page shows: a replay's POS log (named by its summary.json), or a lane's
own record of the POS events it received (STATE/pos.jsonl and the rotated pos.1.jsonl, written by
`reid edge`, pipeline/edge/pos_record.py). A file is read again only when it changed, and when it
only grew (a running lane appending) only its new whole lines are read. Each line is parsed as the
lane parses it (`parse_pos_line`); a line that is not a POS event is skipped, never shown raw."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from retail_reid.pipeline.pos import PosError, PosEvent, parse_pos_line

MAX_POS_BYTES = 256 * 2**20  # a POS file larger than this is not read


@dataclass
class _Read:
    file: tuple[int, int] = (-1, -1)  # (device, inode)
    mtime_ns: int = -1
    offset: int = 0  # bytes of whole lines read
    events: list[PosEvent] = field(default_factory=list)
    bad: int = 0  # lines that are not POS events


class PosLines:
    """One POS file's events, as it is now; `what` names it in the reasons shown instead. A
    `growing` file (a lane's record) may be missing or end in a line still being written; any
    other (a replay's POS log) is complete, and its absence is a reason."""

    def __init__(self, path: Path, what: str, growing: bool):
        self.path = path
        self.what = what
        self.growing = growing
        self._read = _Read()
        self._lock = threading.Lock()

    def events(self) -> tuple[list[PosEvent], str | None]:
        """The events, and why there are none when the file cannot be used (None when it holds
        events, is empty, or is a growing file not made yet)."""
        try:
            st = self.path.stat()
        except OSError as e:
            if self.growing and isinstance(e, FileNotFoundError):
                return [], None
            return [], f"{self.what} {self.path} cannot be read ({e.strerror or e})"
        if st.st_size > MAX_POS_BYTES:
            return [], f"{self.what} {self.path} is over {MAX_POS_BYTES // 2**20} MiB; not shown"
        with self._lock:
            done = self._read
            if (st.st_mtime_ns, st.st_size) != (done.mtime_ns, done.offset):
                grown = (st.st_dev, st.st_ino) == done.file and st.st_size >= done.offset
                try:
                    start = done if grown else _Read(file=(st.st_dev, st.st_ino))
                    self._read = _more(self.path, start, st.st_mtime_ns, self.growing)
                except OSError as e:
                    return [], f"{self.what} {self.path} cannot be read ({e.strerror or e})"
            read = self._read
        if read.bad and not read.events:
            return [], f"{self.what} {self.path} holds no valid POS event"
        return read.events, None


def _more(path: Path, read: _Read, mtime_ns: int, growing: bool) -> _Read:
    """`read` with the whole lines after its offset added (in a growing file, a last line without
    its newline waits for it)."""
    events, bad, offset = list(read.events), read.bad, read.offset
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            if growing and not raw.endswith(b"\n"):
                break
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                events.append(parse_pos_line(raw, str(path)))
            except PosError:  # not JSON, not UTF-8, or not a POS event
                bad += 1
    return _Read(read.file, mtime_ns, offset, events, bad)
