"""The lane thread: the replay's `LaneProcessor`, fed live.

It alone touches the lane. Frames come from the camera's queue; POS events from the inbox wait in
a heap and are fed as the lane's clock (the frame times, plus clock_offset_s) reaches them, just
as `replay` feeds them, so live and replay decide alike. Every event decided is written to the
alert log at once.

Two things differ from a replay. A scan made while the camera was down is not fed: no item pass
could have been seen for it, and it would come back as a false "scan without item"; it is
counted instead. And while no frames arrive, the lane's decisions still move on with the wall
clock, so a pass that ended before the camera went away is still reported in time.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import threading
import time

from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.camera import CameraFeed, FrameQueue, RateMeter
from retail_reid.pipeline.edge.evidence import EvidenceWriter
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.lane import LaneProcessor, resolve_zone
from retail_reid.pipeline.matching import GalleryLike
from retail_reid.pipeline.pos import PosEvent
from retail_reid.pipeline.types import BasketEvent, Event, Frame, PassRecord

log = logging.getLogger("reid.edge.lane")

TICK_S = 0.1  # longest wait for a frame before looking at the POS inbox and the clock again


class LaneWorker:
    def __init__(
        self,
        gallery: GalleryLike,
        config: LaneConfig,
        camera: CameraFeed,
        frames: FrameQueue,
        inbox: PosInbox,
        alerts: AlertLog,
        evidence: EvidenceWriter | None,
        metrics: EdgeMetrics,
    ):
        self.gallery = gallery
        self.config = config
        self.camera = camera
        self.frames = frames
        self.inbox = inbox
        self.alerts = alerts
        self.evidence = evidence
        self.metrics = metrics
        self.offset = config.events.clock_offset_s
        self.lane: LaneProcessor | None = None  # made on the first frame, when the frame size is known
        self.size: tuple[int, int] | None = None
        self.meter = RateMeter()
        self.error: BaseException | None = None
        self.frame_size_error: str | None = None
        self.beat = time.monotonic()
        self.last_pass_at: float | None = None  # Unix time the latest item pass was decided
        self.passes = 0
        self._pending: list[tuple[float, int, PosEvent]] = []  # heap by POS time, then arrival
        self._order = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lane", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Process the frames already queued, feed the POS events received, decide everything
        pending (`flush`) and write it. Call after the camera and the POS intake have stopped."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict:
        return {
            "frames_processed": int(self.metrics.frames_processed.value()),
            "fps": round(self.meter.rate(), 2),
            "passes": self.passes,
            "pos_waiting": len(self._pending) + len(self.inbox),
            "frames_waiting": len(self.frames),
            "zone": None
            if self.lane is None
            else [self.lane.zone.x1, self.lane.zone.y1, self.lane.zone.x2, self.lane.zone.y2],
            "frame_size_error": self.frame_size_error,
        }

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                frame = self.frames.get(TICK_S)
                self._take_pos()
                if frame is not None:
                    self._process(frame)
                elif self._stop.is_set():
                    break
                elif self.camera.blind_since() is not None:
                    self._advance_blind()
                self.alerts.retry()
                self.beat = time.monotonic()
            self._finish()
        except BaseException as e:
            log.exception("the lane stopped")
            self.error = e

    def _take_pos(self) -> None:
        for event in self.inbox.take():
            heapq.heappush(self._pending, (event.ts, next(self._order), event))

    def _process(self, frame: Frame) -> None:
        size = (frame.image.shape[1], frame.image.shape[0])
        if self.lane is None:
            self._make_lane(size)
        elif size != self.size:
            self.metrics.frames_dropped.inc("frame_size")
            if self.frame_size_error is None:
                self.frame_size_error = (
                    f"the camera's frames are {size[0]}x{size[1]}, the lane was set up for "
                    f"{self.size[0]}x{self.size[1]}: frames skipped; restart the service"
                )
                log.error("%s", self.frame_size_error)
            return
        self._feed_due(frame.ts + self.offset)
        started = time.perf_counter()
        events = self.lane.feed_frame(frame)  # type: ignore[union-attr]
        self.metrics.processing.observe(time.perf_counter() - started)
        self.metrics.frame_age.observe(time.time() - frame.ts)
        self.metrics.frames_processed.inc()
        self.meter.tick()
        self._emit(events)
        self._drain_warnings()

    def _make_lane(self, size: tuple[int, int]) -> None:
        warnings: list[str] = []
        zone = resolve_zone(self.config.zone, size, warnings)
        for w in warnings:
            log.warning("%s", w)
        self.lane = LaneProcessor(
            self.gallery, zone, dataclasses.replace(self.config, zone=zone), on_pass=self._on_pass
        )
        if self.evidence is not None:
            self.lane.events.save_evidence = self.evidence
        self.size = size
        log.info("lane ready: %dx%d frames, zone %s", size[0], size[1], zone.as_text())

    def _feed_due(self, now: float) -> None:
        """Feed the POS events whose time the lane has reached (all of them when `now` is inf)."""
        while self._pending and self._pending[0][0] <= now:
            event = heapq.heappop(self._pending)[2]
            if event.type == "scan" and self.camera.was_blind(event.ts - self.offset):
                self.metrics.pos_unverifiable.inc()
                log.info("scan of %s at %.3f: the camera was down, not judged", event.sku or event.barcode, event.ts)
                continue
            if self.lane is None:  # no frame yet: keep the transaction's start and end for the lane
                heapq.heappush(self._pending, (event.ts, next(self._order), event))
                return
            self.lane.feed_pos(event)

    def _advance_blind(self) -> None:
        """No frames: decide what the wall clock allows (passes whose scan window has closed)."""
        now = time.time() + self.offset
        self._feed_due(now)
        if self.lane is not None:
            open_starts = [t + self.offset for t in self.lane.tracker.open_tracks.values()]
            self._emit(self.lane.events.advance(now, open_starts))

    def _finish(self) -> None:
        self._take_pos()
        self._feed_due(float("inf"))
        if self.lane is not None:
            self._emit(self.lane.flush())
            self._drain_warnings()
        log.info("lane stopped: %d frames, %d item passes", int(self.metrics.frames_processed.value()), self.passes)

    def _on_pass(self, record: PassRecord) -> None:
        self.passes += 1
        self.last_pass_at = time.time()

    def _emit(self, events: list[Event | BasketEvent]) -> None:
        for e in events:
            seq = self.alerts.append(e, self.gallery.version)
            self.metrics.events.inc(e.type)
            if isinstance(e, Event) and e.track_id is not None:
                self.metrics.alert_latency.observe(time.time() - (e.t_end - self.offset))
            log.info("alert %d: %s %s", seq, e.type, e.txn or "")

    def _drain_warnings(self) -> None:
        """The lane's warnings (unknown barcodes, reopened transactions) go to the log, not to a list that grows."""
        if self.lane is not None and self.lane.events.warnings:
            for w in self.lane.events.warnings:
                log.warning("%s", w)
            self.lane.events.warnings.clear()
