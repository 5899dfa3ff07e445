"""Frames in real time: a camera, a stream URL, or a video file played at its own frame rate.

`retail_reid.pipeline.sources` reads as fast as it can decode and gives file frames container time, which is
what a replay wants. Live, a file must be paced and stamped like a camera: frame at video position
p is shown at (clock origin + p) and stamped with that Unix time, so a test can post the
scenario's POS events shifted by the same origin; a frame decoded more than a frame interval late is
dropped (counted), as a camera's would be, so the stream stays real time; with `drop_frames = false`
a file drops nothing: a late frame is still shown, and a full queue makes the camera wait for the
lane, so a loaded machine runs late but the lane sees every frame, as a replay does (tests).
Streams are opened here with connect and read timeouts (a silent stream is noticed in seconds,
not OpenCV's default 30) and reopened with backoff when lost. Frames go to a bounded `FrameQueue`
that drops the oldest when the lane falls behind, so memory stays fixed and the lane works on
fresh frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator

import cv2
import numpy as np

from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.settings import CameraConfig
from retail_reid.pipeline.edge.worker import Worker
from retail_reid.pipeline.sources import SourceError, open_source
from retail_reid.pipeline.types import Frame

log = logging.getLogger("reid.edge.camera")

FPS_WINDOW_S = 2.0  # frames per second are counted over this much recent time
OUTAGES_KEPT = 32  # recent outages remembered, to tell which POS scans the camera could not see


class FrameQueue:
    """Hand-over from the camera thread to the lane thread, at most `size` frames deep."""

    def __init__(self, size: int, on_drop: Callable[[], None]):
        self._size = size
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._on_drop = on_drop

    def put(self, frame: Frame) -> None:
        """Queue a frame; when full, the oldest waiting frame is dropped (and counted)."""
        with self._cond:
            if len(self._items) >= self._size:
                self._items.popleft()
                self._on_drop()
            self._items.append(frame)
            self._cond.notify()

    def put_waiting(self, frame: Frame, stopping: Callable[[], bool]) -> None:
        """Queue a frame, waiting for the lane to make room rather than dropping one (until `stopping`)."""
        with self._cond:
            while len(self._items) >= self._size and not stopping():
                self._cond.wait(0.1)
        self.put(frame)

    def get(self, timeout: float) -> Frame | None:
        """The oldest waiting frame, or None after `timeout` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self._cond.notify_all()  # a camera waiting for room (put_waiting)
            return self._items.popleft()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class RateMeter:
    """Events per second over the last few seconds, in fixed memory."""

    def __init__(self, window_s: float = FPS_WINDOW_S, keep: int = 512):
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(time.monotonic())

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class CameraFeed(Worker):
    """The camera thread: opens the source, reads frames into the queue, reconnects when lost.

    Times are on the camera clock (Unix seconds). `was_blind(ts)` says whether the camera was
    down at `ts` (before it first delivered, during an outage, or since it ended), so the lane can
    leave the scans it could not have seen unjudged instead of calling them scans without item.
    """

    def __init__(
        self, config: CameraConfig, queue: FrameQueue, metrics: EdgeMetrics, clock: Callable[[], float] = time.time
    ):
        super().__init__("camera")
        self.config = config
        self.queue = queue
        self.metrics = metrics
        self.clock = clock
        self.meter = RateMeter()
        self._lock = threading.Lock()
        self._state = "connecting"  # connecting | connected | reconnecting | ended | stopped
        self._error: str | None = None
        self._down_since: float | None = clock()
        self._outages: deque[tuple[float, float]] = deque(maxlen=OUTAGES_KEPT)
        self._last_frame_ts: float | None = None
        self._last_frame_mono: float | None = None
        self._ever_connected = False
        self._index = 0
        self._origin: float | None = None  # files: the Unix time of video position 0 in the current pass
        self._next_origin: float | None = None
        self._loops = 0
        self.size: tuple[int, int] | None = None

    # --- control -------------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> bool:
        """Stop reading; waits for the thread (a blocked stream read ends within its read timeout)."""
        return super().stop(
            timeout if timeout is not None else self.config.read_timeout_s + self.config.open_timeout_s + 1.0
        )

    # --- what the lane and health ask ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._state == "connected"

    def blind_since(self) -> float | None:
        """Camera time since which no frames arrive, or None while they do."""
        with self._lock:
            return self._down_since

    def was_blind(self, ts: float) -> bool:
        with self._lock:
            if self._down_since is not None and ts >= self._down_since:
                return True
            return any(a < ts < b for a, b in self._outages)

    def status(self) -> dict:
        with self._lock:
            age = None if self._last_frame_mono is None else round(time.monotonic() - self._last_frame_mono, 3)
            out = {
                "source": self.config.source,
                "state": self._state,
                "connected": self._state == "connected",
                "fps": round(self.meter.rate(), 2),
                "last_frame_age_s": age,
                "frame_size": list(self.size) if self.size else None,
                "reconnects": int(self.metrics.camera_reconnects.value()),
                "error": self._error,
            }
            if not self.config.is_stream:
                out["clock_origin"] = self._origin
                out["loops"] = self._loops
            return out

    # --- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        backoff = self.config.reconnect_min_s
        while not self.stopping:
            try:
                delivered = self._pump(self._open())
            except SourceError as e:
                self._lost(str(e))
                log.warning("%s; retrying in %.1f s", e, backoff)
                delivered = 0
            except Exception as e:  # a decoder fault must not end the feed: treat it as a lost source
                log.exception("camera %s: reading failed", self.config.source)
                self._lost(f"camera {self.config.source}: reading failed ({type(e).__name__}: {e})")
                delivered = 0
            if self.stopping:
                break
            if delivered and not self.config.is_stream:
                if not self.config.loop:
                    self._lost(None, state="ended")
                    log.info("%s: played to its end", self.config.source)
                    return
                self._loops += 1
                continue
            if delivered:
                backoff = self.config.reconnect_min_s
                silence = f"no frame for {self.config.read_timeout_s:g} s, or it ended"
                self._lost(f"camera {self.config.source}: stream lost ({silence})")
                log.warning("camera %s: stream lost; reconnecting in %.1f s", self.config.source, backoff)
            self.wait(backoff)
            backoff = min(backoff * 2, self.config.reconnect_max_s)
        self._lost(None, state="stopped")

    def _lost(self, error: str | None, state: str | None = None) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = self._last_frame_ts if self._last_frame_ts is not None else self.clock()
            self._state = state or ("reconnecting" if self._ever_connected else "connecting")
            if error is not None:
                self._error = error

    def _pump(self, frames: Generator[tuple[np.ndarray, float], None, None]) -> int:
        count = 0
        try:
            for image, ts in frames:
                if count == 0:
                    self._connected(image, ts)
                frame = Frame(index=self._index, ts=ts, image=image)
                if self.config.drop_frames or self.config.is_stream:
                    self.queue.put(frame)
                else:
                    self.queue.put_waiting(frame, lambda: self.stopping)
                self._index += 1
                count += 1
                self.metrics.frames_read.inc()
                self.meter.tick()
                with self._lock:
                    self._last_frame_ts, self._last_frame_mono = ts, time.monotonic()
                if self.stopping:
                    break
        finally:
            frames.close()  # releases the capture or the file
        return count

    def _connected(self, image: np.ndarray, ts: float) -> None:
        with self._lock:
            if self._down_since is not None:
                self._outages.append((self._down_since, ts))
                self._down_since = None
            if self._ever_connected and self._state != "connected":  # back after a loss (a file's loop is none)
                self.metrics.camera_reconnects.inc()
                log.info("camera %s: reconnected", self.config.source)
            self._ever_connected = True
            self._state, self._error = "connected", None
            self.size = (image.shape[1], image.shape[0])

    def _open(self) -> Generator[tuple[np.ndarray, float], None, None]:
        if self.config.is_stream:
            return self._stream_frames(self._open_stream())
        return self._file_frames()

    def _open_stream(self) -> cv2.VideoCapture:
        src = self.config.source
        if src.isdigit():
            cap = cv2.VideoCapture(int(src))  # V4L2 and the like: an unplugged camera fails the read at once
        else:
            ms = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(self.config.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(self.config.read_timeout_s * 1000),
            ]
            cap = cv2.VideoCapture(src, cv2.CAP_FFMPEG, ms)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {src}: cannot be opened (no such device, or the stream is unreachable)")
        return cap

    def _stream_frames(self, cap: cv2.VideoCapture) -> Generator[tuple[np.ndarray, float], None, None]:
        try:
            while not self.stopping:
                ok, image = cap.read()
                if not ok or image is None:
                    return
                yield image, self.clock()
        finally:
            cap.release()

    def _file_frames(self) -> Generator[tuple[np.ndarray, float], None, None]:
        """The file's frames, each released at origin + its position and stamped with that time."""
        source = open_source(self.config.source, self.config.folder_fps)
        self._origin = self._next_origin if self._next_origin is not None else self.clock()

        def paced() -> Generator[tuple[np.ndarray, float], None, None]:
            origin, last = self._origin, 0.0
            assert origin is not None  # set above, and never unset
            try:
                for frame in source:
                    due = origin + frame.ts
                    delay = due - self.clock()
                    last = frame.ts
                    if delay < -1.0 / source.fps and self.config.drop_frames:  # a camera would have lost it too
                        self.metrics.frames_dropped.inc("decode_late")
                        continue
                    if delay > 0 and self.wait(delay):
                        return
                    yield frame.image, due
            finally:
                source.close()
                self._next_origin = origin + last + 1.0 / source.fps  # a loop goes on where the last pass ended

        return paced()
