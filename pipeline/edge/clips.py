"""Clips of alert passes (`[edge.clips]`, off by default): the lane keeps its recent frames in a
bounded ring, JPEG-encoded (`ClipRing`), and when a pass raises an alert the frames from
`before_s` before the item entered to `after_s` after it left are written as a short MJPEG AVI
beside the pass's crops (`ClipEvidenceWriter`), listed in the alert's `evidence` and served at
GET /evidence/... . Memory is capped by `ring_s` and `ring_mb`; the clips on disk by
`max_disk_mb`, the oldest clips (never crops) removed to make room. A clip that cannot be written
(disk short, encoder failure) is skipped like a crop: the alert goes out without it.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from retail_reid.pipeline.edge.settings import ClipConfig
from retail_reid.pipeline.evidence import CLIP_SUFFIX, EvidenceWriter, clip_name
from retail_reid.pipeline.types import Frame, ItemPass

log = logging.getLogger("reid.edge.clips")


class ClipRing:
    """The lane's most recent frames as JPEG bytes, at most `ring_s` seconds and `ring_mb` MB of them."""

    def __init__(self, config: ClipConfig):
        self.config = config
        self._frames: deque[tuple[float, bytes]] = deque()  # (camera time, JPEG)
        self._bytes = 0

    def add(self, frame: Frame) -> None:
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.config.quality])
        if not ok:
            return
        data = jpeg.tobytes()
        self._frames.append((frame.ts, data))
        self._bytes += len(data)
        oldest = frame.ts - self.config.ring_s
        while self._frames and (self._frames[0][0] < oldest or self._bytes > self.config.ring_mb * 1e6):
            self._bytes -= len(self._frames.popleft()[1])

    def between(self, t0: float, t1: float) -> list[tuple[float, bytes]]:
        """The frames with camera time in [t0, t1], oldest first."""
        return [(ts, data) for ts, data in self._frames if t0 <= ts <= t1]

    @property
    def nbytes(self) -> int:
        return self._bytes


class ClipEvidenceWriter(EvidenceWriter):
    """The crops and the lane frame, as `EvidenceWriter` writes them, and the clip of the pass from `ring`."""

    def __init__(
        self,
        root: Path,
        folder: str,
        ring: ClipRing,
        offset_s: float,
        min_free_bytes: int = 0,
        on_failure: Callable[[str], None] | None = None,
    ):
        super().__init__(root, folder, min_free_bytes, on_failure)
        self.ring = ring
        self.config = ring.config
        self.offset_s = offset_s  # POS clock minus camera clock: passes are on the POS clock, frames not
        clips_root = (root / folder).parent  # every start's folder: the cap is on all clips of the lane
        self._clips: deque[tuple[Path, int]] = deque(
            sorted(
                ((p, p.stat().st_size) for p in clips_root.glob(f"*/*{CLIP_SUFFIX}") if p.is_file()),
                key=lambda entry: entry[0].stat().st_mtime,
            )
        )

    @property
    def clip_bytes(self) -> int:
        """Bytes of clips on disk now."""
        return sum(size for _, size in self._clips)

    def __call__(self, item: ItemPass) -> tuple[str, ...]:
        names = super().__call__(item)
        clip = self._clip(item)
        return (*names, clip) if clip is not None else names

    def _clip(self, item: ItemPass) -> str | None:
        start = item.t_start - self.offset_s - self.config.before_s
        frames = self.ring.between(start, item.t_end - self.offset_s + self.config.after_s)
        if len(frames) < 2:
            return None
        name = clip_name(self.folder, item.track_id)
        path = self.root / name
        try:
            self._write(path, frames)
        except OSError as e:
            path.unlink(missing_ok=True)
            reason = f"{path}: clip not saved ({e.strerror or e})"
            if self.on_failure is not None:
                self.on_failure(reason)
            self.error = reason
            return None
        self._clips.append((path, path.stat().st_size))
        self._keep_under_cap()
        return name

    def _write(self, path: Path, frames: list[tuple[float, bytes]]) -> None:
        first = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
        if first is None:
            raise OSError(errno.EIO, "a kept frame could not be decoded")
        fps = (len(frames) - 1) / max(frames[-1][0] - frames[0][0], 1e-3)
        size = (first.shape[1], first.shape[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), min(fps, 120.0), size)
        if not writer.isOpened():
            raise OSError(errno.EIO, "the MJPEG writer could not be opened")
        try:
            for _, data in frames:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if image is not None and (image.shape[1], image.shape[0]) == size:
                    writer.write(image)
        finally:
            writer.release()
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError(errno.EIO, "nothing was written")

    def _keep_under_cap(self) -> None:
        """Remove the oldest clips until those left fit in `max_disk_mb` (the newest always stays)."""
        cap = self.config.max_disk_mb * 1e6
        while len(self._clips) > 1 and self.clip_bytes > cap:
            old, _ = self._clips.popleft()
            old.unlink(missing_ok=True)
            log.info("%s: removed, clips over their %g MB cap", old, self.config.max_disk_mb)
