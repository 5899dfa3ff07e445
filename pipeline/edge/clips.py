"""Clips of alert passes (`[edge.clips]`, off by default): the lane keeps its recent frames in a
bounded ring, JPEG-encoded (`ClipRing`), and when a pass raises an alert the frames from
`before_s` before the item entered to `after_s` after it left are written as a short H.264 MP4
beside the pass's crops (`ClipEvidenceWriter`), listed in the alert's `evidence` and served at
GET /evidence/... . H.264 in MP4 (`yuv420p`, the index at the front) is what every browser plays
in a `<video>` element, Chromium, Firefox and Safari alike; PyAV's wheel carries the encoder
(libx264, with FFmpeg), while OpenCV's carries none (only VP8/VP9, encoded 4x slower). Memory is
capped by `ring_s` and `ring_mb`; the clips on disk by `max_disk_mb`, the oldest clips (never
crops) removed to make room. A clip that cannot be written
(disk short, encoder failure) is skipped like a crop: the alert goes out without it.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from retail_reid.pipeline.edge.settings import ClipConfig
from retail_reid.pipeline.evidence import CLIP_SUFFIXES, EvidenceWriter, clip_name
from retail_reid.pipeline.types import Frame, ItemPass

log = logging.getLogger("reid.edge.clips")
CODEC = "libx264"
# fast to encode on an edge CPU (about 20 ms a 720p frame), small files; a keyframe every second,
# so a browser seeks within the clip without decoding it from the start
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "23", "g": "15"}
MAX_FPS = 120.0


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
                (
                    (p, p.stat().st_size)
                    for suffix in CLIP_SUFFIXES  # an older lane's AVI clips count too
                    for p in clips_root.glob(f"*/*{suffix}")
                    if p.is_file()
                ),
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
        fps = min((len(frames) - 1) / max(frames[-1][0] - frames[0][0], 1e-3), MAX_FPS)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_mp4(path, frames, fps)
        except av.FFmpegError as e:
            raise OSError(errno.EIO, f"the H.264 encoder failed ({e})") from None
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError(errno.EIO, "nothing was written")

    def _keep_under_cap(self) -> None:
        """Remove the oldest clips until those left fit in `max_disk_mb` (the newest always stays)."""
        cap = self.config.max_disk_mb * 1e6
        while len(self._clips) > 1 and self.clip_bytes > cap:
            old, _ = self._clips.popleft()
            old.unlink(missing_ok=True)
            log.info("%s: removed, clips over their %g MB cap", old, self.config.max_disk_mb)


def write_mp4(path: Path, frames: list[tuple[float, bytes]], fps: float) -> None:
    """JPEG frames as an H.264 MP4, each shown at its own time from the first (a frame the camera
    dropped leaves the previous one on screen). The first frame sets the size; a frame of another
    size is skipped; an odd last row or column is cut (yuv420p, what browsers play, needs even sides)."""
    first = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
    if first is None:
        raise OSError(errno.EIO, "a kept frame could not be decoded")
    shape = first.shape
    height, width = shape[0] - shape[0] % 2, shape[1] - shape[1] % 2
    ms = Fraction(1, 1000)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream(CODEC, rate=Fraction(round(fps * 1000), 1000), options=ENCODER_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = ms  # milliseconds: the frames' own times
        last = -1
        for ts, data in frames:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            pts = round((ts - frames[0][0]) * 1000)
            if image is None or image.shape != shape or pts <= last:
                continue
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image[:height, :width], dtype=np.uint8), format="bgr24"
            )
            frame.pts, frame.time_base, last = pts, ms, pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
