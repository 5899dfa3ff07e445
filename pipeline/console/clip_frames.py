"""An alert's clip (`[edge.clips]`): an H.264 MP4 the page plays in a `<video>` element, or an
older lane's MJPEG AVI, which browsers do not play, shown as a sequence of still frames (up to
`FRAMES_SHOWN` spread over the clip, each served as a JPEG, with the AVI to download). The clip is
the lane's own file, read only when it lies in its folder (`safe_files.inside`), and only up to
`MAX_CLIP_BYTES` (served or decoded) and `MAX_FRAMES`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2

from retail_reid.pipeline.evidence import CLIP_SUFFIX

FRAMES_SHOWN = 12
MAX_CLIP_BYTES = 512 * 2**20  # a larger file is not a clip the lane wrote (its cap is per lane, 500 MB by default)
MAX_FRAMES = 100_000
FRAME_QUALITY = 85


@dataclass(frozen=True)
class ClipInfo:
    frames: int
    fps: float

    def shown(self) -> list[tuple[int, float]]:
        """The frames the page shows, spread evenly over the clip: (index, seconds from its start)."""
        n = min(self.frames, FRAMES_SHOWN)
        if n < 2:
            return [(0, 0.0)] if n else []
        picks = sorted({round(i * (self.frames - 1) / (n - 1)) for i in range(n)})
        return [(i, i / self.fps if self.fps > 0 else 0.0) for i in picks]


def playable(path: Path) -> bool:
    """A clip the browser plays itself (the edge's MP4), not too large to serve."""
    return path.suffix.lower() == CLIP_SUFFIX and within_bounds(path)


def within_bounds(path: Path) -> bool:
    """Not larger than any clip a lane writes."""
    return path.stat().st_size <= MAX_CLIP_BYTES


def _open(path: Path) -> cv2.VideoCapture | None:
    if not within_bounds(path):
        return None
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def clip_info(path: Path) -> ClipInfo | None:
    """Its frame count and rate, or None if it is not a clip that can be read."""
    capture = _open(path)
    if capture is None:
        return None
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    return ClipInfo(frames, fps) if 0 < frames <= MAX_FRAMES else None


def clip_frame(path: Path, index: int) -> bytes | None:
    """Frame `index` of the clip as a JPEG, or None if the clip has no such frame."""
    info = clip_info(path)
    if info is None or not 0 <= index < info.frames:
        return None
    capture = _open(path)
    if capture is None:
        return None
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
    finally:
        capture.release()
    if not ok or image is None:
        return None
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, FRAME_QUALITY])
    return jpeg.tobytes() if ok else None
