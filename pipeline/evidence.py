"""Evidence of an alert pass: the JPEG crops of the item, and one frame of the whole lane from the
middle of the pass (downscaled), written under ROOT/FOLDER and named by track
(`FOLDER/track00012_0.jpg`, `FOLDER/track00012_lane.jpg`), with paths relative to ROOT as the
alert's `evidence`. `evidence_kind` tells them apart (and from a clip, `FOLDER/track00012.mp4`,
which the edge's `ClipEvidenceWriter` adds; lanes before 8 Dec 2026 wrote `.avi` clips).

The lane frame comes from `LaneView`, a small ring of recent frames that the lane feeds
(`EvidenceWriter.see`, every frame; one kept every `LANE_VIEW_EVERY_S`), since a pass is only
decided after it ended and its middle frame is gone by then.

One writer for the replay (ROOT the output folder, FOLDER "crops") and the edge service (ROOT the
state folder, FOLDER a folder per service start, since track ids start again at 1). They differ in
what a failed write means. The replay passes no `on_failure`: a file that cannot be written is an
EvidenceError, as the run's outputs would be incomplete. The edge passes one: pictures are the
first thing to give up when the disk fills (below `min_free_bytes` free, or on any write error), so
the alert goes out without them, `on_failure` counts the miss, and `error` says why in health.
"""

from __future__ import annotations

import errno
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.pipeline.types import ItemPass

JPEG_QUALITY = 90
LANE_FRAME_QUALITY = 80
LANE_FRAME_MAX_SIDE = 640  # pixels: a lane frame's longer side at most (a 1080p camera's is downscaled)
LANE_VIEW_EVERY_S = 0.5  # a frame of the lane kept this often (lane time): the middle within 0.25 s ...
LANE_VIEW_KEEP_S = 60.0  # ... for this long: a pass of up to about a minute keeps its middle frame
LANE_VIEW_MAX_BYTES = 16_000_000  # ... and at most this many bytes of them in memory
LANE_SUFFIX = "_lane.jpg"
CLIP_SUFFIX = ".mp4"  # H.264: what the edge writes and browsers play
OLD_CLIP_SUFFIX = ".avi"  # MJPEG: what lanes wrote before; the console shows its frames as stills
CLIP_SUFFIXES = (CLIP_SUFFIX, OLD_CLIP_SUFFIX)


class EvidenceError(ReidError, OSError):
    """An evidence file that cannot be written; the message names the folder."""


class EvidenceKind(StrEnum):
    CROP = "crop"  # the item, cut from one frame
    LANE = "lane"  # the whole lane, from the middle of the pass
    CLIP = "clip"  # the pass as a short H.264 MP4 (or an older lane's MJPEG AVI; the edge's [edge.clips])


def crop_name(folder: str, track_id: int, index: int) -> str:
    return f"{folder}/track{track_id:05d}_{index}.jpg"


def lane_frame_name(folder: str, track_id: int) -> str:
    return f"{folder}/track{track_id:05d}{LANE_SUFFIX}"


def clip_name(folder: str, track_id: int) -> str:
    return f"{folder}/track{track_id:05d}{CLIP_SUFFIX}"


def evidence_kind(path: str) -> EvidenceKind:
    """What an `evidence` path holds, from its name."""
    if path.endswith(CLIP_SUFFIXES):
        return EvidenceKind.CLIP
    return EvidenceKind.LANE if path.endswith(LANE_SUFFIX) else EvidenceKind.CROP


class LaneView:
    """Recent frames of the whole lane, downscaled to `max_side` and JPEG-encoded: one every
    `every_s` seconds, for `keep_s` seconds, at most `max_bytes` in all (the newest always stays;
    times on the lane's clock)."""

    def __init__(
        self,
        max_side: int = LANE_FRAME_MAX_SIDE,
        every_s: float = LANE_VIEW_EVERY_S,
        keep_s: float = LANE_VIEW_KEEP_S,
        max_bytes: int = LANE_VIEW_MAX_BYTES,
    ):
        self.max_side = max_side
        self.every_s = every_s
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self._frames: deque[tuple[float, bytes]] = deque()  # (lane time, JPEG)
        self._bytes = 0

    def add(self, ts: float, image: np.ndarray) -> None:
        if self._frames and ts - self._frames[-1][0] < self.every_s:
            return
        h, w = image.shape[:2]
        scale = self.max_side / max(h, w)
        if scale < 1:
            image = cv2.resize(
                image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, LANE_FRAME_QUALITY])
        if not ok:
            return
        data = jpeg.tobytes()
        self._frames.append((ts, data))
        self._bytes += len(data)
        while len(self._frames) > 1 and (self._frames[0][0] < ts - self.keep_s or self._bytes > self.max_bytes):
            self._bytes -= len(self._frames.popleft()[1])

    def middle(self, t_start: float, t_end: float) -> bytes | None:
        """The kept frame nearest the middle of [t_start, t_end], or None if none lies within it
        (give or take `every_s`)."""
        mid = (t_start + t_end) / 2
        near = [
            (abs(ts - mid), data) for ts, data in self._frames if t_start - self.every_s <= ts <= t_end + self.every_s
        ]
        return min(near, key=lambda entry: entry[0])[1] if near else None

    @property
    def nbytes(self) -> int:
        return self._bytes


class EvidenceWriter:
    """Writes a pass's crops and its lane frame; called with the `ItemPass`, returns the paths
    written, relative to `root`. The lane gives it every frame first (`see`)."""

    def __init__(
        self,
        root: Path,
        folder: str,
        min_free_bytes: int = 0,
        on_failure: Callable[[str], None] | None = None,
        lane_view: LaneView | None = None,
    ):
        self.root = root
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self.on_failure = on_failure
        self.lane_view = lane_view if lane_view is not None else LaneView()
        self.error: str | None = None  # why the latest pass's evidence was not saved; None once it is again

    def see(self, ts: float, image: np.ndarray) -> None:
        """A frame of the lane at lane time `ts` (the POS clock, as passes are)."""
        self.lane_view.add(ts, image)

    def __call__(self, item: ItemPass) -> tuple[str, ...]:
        written: list[Path] = []
        try:
            target = self.root / self.folder
            target.mkdir(parents=True, exist_ok=True)
            if self.min_free_bytes > 0:
                free = shutil.disk_usage(target).free
                if free < self.min_free_bytes:
                    raise OSError(
                        errno.ENOSPC,
                        f"only {free / 1e6:.0f} MB free, under the {self.min_free_bytes / 1e6:.0f} MB kept for alerts",
                    )
            files = []
            for i, crop in enumerate(item.crops):
                ok, jpeg = cv2.imencode(".jpg", crop.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise OSError(errno.EIO, "the crop could not be encoded as JPEG")
                files.append((crop_name(self.folder, item.track_id, i), jpeg.tobytes()))
            lane = self.lane_view.middle(item.t_start, item.t_end)
            if lane is not None:
                files.append((lane_frame_name(self.folder, item.track_id), lane))
            for name, data in files:
                path = self.root / name
                written.append(path)
                path.write_bytes(data)
        except OSError as e:
            for path in written:
                path.unlink(missing_ok=True)
            reason = f"{self.root / self.folder}: evidence crops not saved ({e.strerror or e})"
            if self.on_failure is None:
                raise EvidenceError(reason) from None
            self.on_failure(reason)
            self.error = reason
            return ()
        self.error = None
        return tuple(name for name, _ in files)
