"""Where frames come from: a video file, a folder of images, a camera index or a stream URL.

Every source yields `Frame`s with a timestamp, and keeps count of what it could not decode so a
damaged recording is processed as far as it goes and the loss is reported, not hidden.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from retail_reid.errors import ReidError
from retail_reid.images import IMAGE_SUFFIXES, ImageError, read_image
from retail_reid.pipeline.types import Frame

# After a failed read inside a file, try this many more before deciding the rest is unreadable:
# FFmpeg can resume after a corrupt packet, but a truncated file fails every read at once.
MAX_READ_RETRIES = 25


class SourceError(ReidError, ValueError):
    """A frame source that cannot be opened or yields nothing; the message names it."""


class FrameSource:
    """Base of all sources: iterate for frames; `problems` says what could not be read."""

    name: str
    fps: float
    size: tuple[int, int]  # (width, height)
    frame_count: int | None  # frames the container lists, None for live sources

    def __init__(self) -> None:
        self.decoded = 0
        self.dropped = 0
        self.problems: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; iteration ends."""


class _CaptureSource(FrameSource):
    """Shared reading loop over an OpenCV VideoCapture."""

    def __init__(self, name: str, cap: cv2.VideoCapture, live: bool):
        super().__init__()
        self.name = name
        self._cap = cap
        self._live = live
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if np.isfinite(fps) and 0 < fps < 1000 else 15.0
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(f"{name}: no frame could be decoded (empty, corrupt or unsupported video)")
        self._first: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
        self.frame_count = count if count > 0 else None

    def _timestamp(self, index: int, previous: float | None) -> float:
        if self._live:
            return time.time()
        ts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        # Some containers carry no timestamps (0 or repeats): fall back to the nominal rate.
        if not np.isfinite(ts) or (previous is not None and ts <= previous) or (index > 0 and ts == 0.0):
            ts = index / self.fps if previous is None else max(previous + 1.0 / self.fps, index / self.fps)
        return ts

    def __iter__(self) -> Iterator[Frame]:
        index, previous = 0, None
        image = self._first
        self._first = None
        while image is not None:
            ts = self._timestamp(index, previous)
            yield Frame(index=index, ts=ts, image=image)
            self.decoded += 1
            previous, index = ts, index + 1
            image = self._read_next()
        self._report_shortfall()

    def _read_next(self) -> np.ndarray | None:
        if not self._cap.isOpened():
            return None
        ok, image = self._cap.read()
        if ok:
            return image
        if self._live or self.frame_count is None:
            return None
        for _ in range(MAX_READ_RETRIES):
            if self.decoded + self.dropped >= self.frame_count:
                return None
            self.dropped += 1
            ok, image = self._cap.read()
            if ok:
                return image
        return None

    def _report_shortfall(self) -> None:
        if self.frame_count is not None and self.decoded < self.frame_count:
            self.dropped = self.frame_count - self.decoded
            self.problems.append(
                f"{self.name}: decoded {self.decoded} of the {self.frame_count} frames the container lists; "
                f"{self.dropped} could not be read (truncated or corrupt file)"
            )

    def close(self) -> None:
        self._cap.release()


class VideoFileSource(_CaptureSource):
    """A recorded video; timestamps come from the container."""

    def __init__(self, path: str | Path):
        p = Path(path)
        if not p.exists():
            raise SourceError(f"{p}: video file not found")
        if p.is_dir():
            raise SourceError(f"{p}: is a directory (use an image folder source for frames as images)")
        if p.stat().st_size == 0:
            raise SourceError(f"{p}: video file is empty (0 bytes)")
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError(f"{p}: not a readable video (corrupt, truncated or unsupported format)")
        super().__init__(str(p), cap, live=False)


class LiveSource(_CaptureSource):
    """A camera (by index) or a stream URL (RTSP/HTTP); timestamps are Unix seconds at capture."""

    def __init__(self, spec: int | str):
        cap = cv2.VideoCapture(spec)
        if not cap.isOpened():
            raise SourceError(f"camera {spec!r}: cannot be opened (no such device, or the stream is unreachable)")
        super().__init__(f"camera {spec}", cap, live=True)


class ImageFolderSource(FrameSource):
    """A folder of frame images in name order, played at `fps`; unreadable or odd-sized images are skipped."""

    def __init__(self, folder: str | Path, fps: float = 15.0):
        super().__init__()
        self.name = str(folder)
        if fps <= 0:
            raise SourceError(f"{folder}: frame rate must be positive, got {fps}")
        self.fps = float(fps)
        if not Path(folder).is_dir():
            raise SourceError(f"{folder}: no such folder")
        self._paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._paths:
            raise SourceError(f"{folder}: no image files in the folder")
        self.frame_count = len(self._paths)
        self._first: np.ndarray | None = None
        for p in self._paths:
            try:
                self._first = read_image(p)
                break
            except ImageError as e:
                self.problems.append(str(e))
        if self._first is None:
            raise SourceError(f"{folder}: none of the {len(self._paths)} images could be read ({self.problems[0]})")
        self.size = (self._first.shape[1], self._first.shape[0])
        self.problems.clear()

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self._paths):
            try:
                image = read_image(p)
            except ImageError as e:
                self.dropped += 1
                self.problems.append(str(e))
                continue
            if (image.shape[1], image.shape[0]) != self.size:
                self.dropped += 1
                self.problems.append(
                    f"{p}: frame is {image.shape[1]}x{image.shape[0]}, "
                    f"the others {self.size[0]}x{self.size[1]}; skipped"
                )
                continue
            self.decoded += 1
            yield Frame(index=i, ts=i / self.fps, image=image)


def open_source(spec: str, fps: float = 15.0) -> FrameSource:
    """A source from a command-line spec: a camera index ("0"), a URL ("rtsp://..."), a folder of
    images (played at `fps`) or a video file."""
    if spec.isdigit():
        return LiveSource(int(spec))
    if "://" in spec:
        return LiveSource(spec)
    if Path(spec).is_dir():
        return ImageFolderSource(spec, fps)
    return VideoFileSource(spec)
