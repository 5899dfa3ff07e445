"""The lane thread: the replay's `LaneProcessor`, fed live.

It alone touches the lane. Frames come from the camera's queue and POS events from the inbox;
the lane itself holds each POS event until its clock (the frame times, plus clock_offset_s)
reaches it, just as in `replay`, so live and replay decide alike. Every event decided is written
to the alert log at once.

Two things differ from a replay. A scan made while the camera was down is not judged (the lane
asks `CameraFeed.was_blind`): no item pass could have been seen for it, and it would come back as
a false "scan without item"; it is counted instead. And while no frames arrive, the lane's clock
still moves on with the wall clock (`LaneProcessor.advance`), so a pass that ended before the
camera went away is still reported in time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.camera import CameraFeed, FrameQueue, RateMeter
from retail_reid.pipeline.edge.clips import ClipRing
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.edge.pos_record import PosRecord
from retail_reid.pipeline.edge.worker import Worker
from retail_reid.pipeline.events import TillLabel
from retail_reid.pipeline.evidence import EvidenceWriter
from retail_reid.pipeline.lane import LaneProcessor, LaneResult, resolve_zone
from retail_reid.pipeline.pos import PosEvent, PosEventType
from retail_reid.pipeline.recognition import GalleryLike
from retail_reid.pipeline.records import Event, EventType, PassRecord
from retail_reid.pipeline.types import Frame, ItemPass, ScanWarning, Unverifiable

log = logging.getLogger("reid.edge.lane")

TICK_S = 0.1  # longest wait for a frame before looking at the POS inbox and the clock again


class LaneWorker(Worker):
    """The lane thread. On `stop` it processes the frames already queued, pushes the POS events
    received, decides everything pending (`LaneProcessor.finish`) and writes it: stop it after
    the camera and the POS intake."""

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
        clip_ring: ClipRing | None = None,
        references: Callable[[ItemPass, PassRecord], object] | None = None,
        labels: Callable[[TillLabel], object] | None = None,
        pos_record: PosRecord | None = None,
    ):
        super().__init__("lane")
        self.pos_record = pos_record  # STATE/pos.jsonl: the POS events taken, for review
        self.references = references  # lane-reference sampler ([lane_references] enabled), or None
        self.labels = labels  # ... its till labels (policy till), or None
        self.gallery = gallery
        self.config = config
        self.camera = camera
        self.frames = frames
        self.inbox = inbox
        self.alerts = alerts
        self.evidence = evidence
        self.metrics = metrics
        self.clip_ring = clip_ring  # recent frames kept for clips of alert passes (none: no clips)
        self.offset = config.events.clock_offset_s
        self.lane: LaneProcessor | None = None  # made on the first frame, when the frame size is known
        self.size: tuple[int, int] | None = None
        self.meter = RateMeter()
        self.frame_size_error: str | None = None
        self.beat = time.monotonic()
        self.last_pass_at: float | None = None  # Unix time the latest item pass was decided
        self.passes = 0
        self._early: list[PosEvent] = []  # received before the first frame made the lane

    def status(self) -> dict:
        lane = self.lane  # read once: the lane thread makes it on the first frame
        waiting = len(self._early) if lane is None else lane.pos_waiting
        zone = None if lane is None else lane.describe().zone
        return {
            "frames_processed": int(self.metrics.frames_processed.value()),
            "fps": round(self.meter.rate(), 2),
            "passes": self.passes,
            "pos_waiting": waiting + len(self.inbox),
            "frames_waiting": len(self.frames),
            "zone": None if zone is None else [zone.x1, zone.y1, zone.x2, zone.y2],
            "frame_size_error": self.frame_size_error,
        }

    # --- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            frame = self.frames.get(TICK_S)
            self._take_pos()
            if frame is not None:
                self._process(frame)
            elif self.stopping:
                break
            elif self.camera.blind_since() is not None and self.lane is not None:
                # No frames: decide what the wall clock allows (passes whose scan window has closed).
                self._emit(self.lane.advance(time.time()))
            self.alerts.retry()
            self.beat = time.monotonic()
        self._finish()

    def _take_pos(self) -> None:
        events = self.inbox.take()
        if self.pos_record is not None:
            self.pos_record.append(events)
        for event in events:
            if self.lane is None:
                self._early.append(event)
            else:
                self._push(event)

    def _push(self, event: PosEvent) -> None:
        self.lane.push_pos(event)  # type: ignore[union-attr]  # a scan it cannot check: reported by the inbox

    def _process(self, frame: Frame) -> None:
        size = (frame.image.shape[1], frame.image.shape[0])
        if self.lane is None:
            self._make_lane(size)
        elif size != self.size:
            self.metrics.frames_dropped.inc("frame_size")
            if self.frame_size_error is None:
                assert self.size is not None  # set with the lane
                self.frame_size_error = (
                    f"the camera's frames are {size[0]}x{size[1]}, the lane was set up for "
                    f"{self.size[0]}x{self.size[1]}: frames skipped; restart the service"
                )
                log.error("%s", self.frame_size_error)
            return
        started = time.perf_counter()
        if self.clip_ring is not None:
            self.clip_ring.add(frame)
        result = self.lane.process(frame)  # type: ignore[union-attr]
        self.metrics.processing.observe(time.perf_counter() - started)
        self.metrics.frame_age.observe(time.time() - frame.ts)
        self.metrics.frames_processed.inc()
        self.meter.tick()
        self._emit(result)

    def _make_lane(self, size: tuple[int, int]) -> None:
        warnings: list[str] = []
        zone = resolve_zone(self.config.zone, size, warnings)
        for w in warnings:
            log.warning("%s", w)
        self.lane = LaneProcessor(
            self.gallery,
            zone,
            dataclasses.replace(self.config, zone=zone),
            evidence=self.evidence,
            camera_was_blind=self.camera.was_blind,
            references=self.references,
            labels=self.labels,
        )
        self.size = size
        log.info("lane ready: %dx%d frames, zone %s", size[0], size[1], zone.as_text())
        for event in self._early:
            self._push(event)
        self._early.clear()

    def _finish(self) -> None:
        self._take_pos()
        if self.lane is not None:
            self._emit(self.lane.finish())
        else:  # the camera never delivered: no scan could be judged
            self._unseen([e for e in self._early if e.type is PosEventType.SCAN])
        log.info("lane stopped: %d frames, %d item passes", int(self.metrics.frames_processed.value()), self.passes)

    def _emit(self, result: LaneResult) -> None:
        """Write the lane's decisions to the alert log, its warnings to the log, and count both."""
        for e in result.events:
            seq = self.alerts.append(e, self.gallery.version)
            self.metrics.events.inc(e.type)
            if isinstance(e, Event):
                self._observe_latency(e)
            log.info("alert %d: %s %s", seq, e.type, e.txn or "")
        if result.passes:
            self.passes += len(result.passes)
            self.last_pass_at = time.time()
        for w in result.warnings:  # reopened transactions and the like: to the log, not to a list that grows
            log.warning("%s", w)
        self._unseen(result.unseen_scans)

    def _observe_latency(self, e: Event) -> None:
        """Time an alert from its item leaving the zone. A double scan (timed from its scan) waits out
        the void window before it is written, so it has a histogram of its own: in the loss alerts'
        one it would make the latency alert fire with no lane behind."""
        seconds = time.time() - (e.t_end - self.offset)
        if e.type is EventType.DOUBLE_SCAN:
            self.metrics.double_scan_latency.observe(seconds)
        elif e.track_id is not None:
            self.metrics.alert_latency.observe(seconds)

    def _unseen(self, scans: list[PosEvent]) -> None:
        for event in scans:
            text = f"scan of {event.sku or event.barcode} at {event.ts:.3f}: the camera was down, not judged"
            self.inbox.unverifiable(event, ScanWarning(Unverifiable.CAMERA_DOWN, text), None)
