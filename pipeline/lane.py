"""The lane: frames and POS events in, decisions and warnings out. `LaneProcessor` owns the lane's
clock, so the live edge service (`retail_reid.pipeline.edge`) and the offline replay
(`retail_reid.pipeline.replay`) feed it the same way and decide alike by construction."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.crops import CropSelector
from retail_reid.pipeline.detector import make_detector
from retail_reid.pipeline.events import Decisions, EventBuilder, TillLabel
from retail_reid.pipeline.evidence import EvidenceWriter
from retail_reid.pipeline.pos import PosEvent, PosEventType
from retail_reid.pipeline.recognition import GalleryLike, Recogniser, Thresholds
from retail_reid.pipeline.records import PassRecord
from retail_reid.pipeline.tracker import PassTracker, TrackSpan
from retail_reid.pipeline.types import Frame, ItemPass, ScanWarning, Unverifiable, Zone, ZoneError


@dataclass(frozen=True, kw_only=True)
class LaneResult(Decisions):
    """What one step of the lane decided: alerts and baskets (`events`), every item pass decided,
    alert or not (`passes`), problems to tell the operator (`warnings`), and the scans left
    unjudged because the camera could not see when they were made (`unseen_scans`)."""

    unseen_scans: list[PosEvent] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class LaneDescription:
    """What a lane runs with, for a replay's summary: the zone it watches (clipped, exclusions
    cut out), its settings, the similarity thresholds they resolved to against the gallery's
    model, and how often the detector relearnt the background after a change of light."""

    zone: Zone
    config: LaneConfig
    thresholds: Thresholds
    lighting_relearns: int


@dataclass(frozen=True, kw_only=True)
class Sighting:
    """What the camera's half of the lane made of one frame (`LaneProcessor.observe`): the frame,
    the passes whose tracks ended in it, with their crops, and the lane times at which the tracks
    still open started (passes whose scans must wait for them)."""

    frame: Frame
    ended: list[ItemPass]
    open_starts: tuple[float, ...]


class LaneProcessor:
    """Detector -> tracker -> crop selection -> recognition -> events, for one lane.

    POS events go in with `push_pos`, in any order and as early as known; they wait until the
    lane's clock (frame time + clock_offset_s) reaches them. Frames go in with `process`, which
    first releases the POS events due by the frame's time. `advance` moves the clock without a
    frame (a live camera that is down), and `finish` decides everything left (end of a
    recording, or a service stopping). Each returns a `LaneResult`; an event is decided at the
    latest one association window after its item left the zone.

    What callers may read besides those results: `describe()` (zone, settings, thresholds),
    `pos_waiting`, and the attributes `frames` (frames concluded), `passes` (item passes decided)
    and `offset` (clock_offset_s: lane time minus camera time). The detector, recogniser, builder
    and the rest are the lane's own.
    """

    def __init__(
        self,
        gallery: GalleryLike,
        zone: Zone,
        config: LaneConfig | None = None,
        evidence: EvidenceWriter | None = None,
        camera_was_blind: Callable[[float], bool] = lambda ts: False,
        references: Callable[[ItemPass, PassRecord], object] | None = None,
        labels: Callable[[TillLabel], object] | None = None,
    ):
        """`evidence` writes the crops and the lane frame of alert passes (none: not kept) and sees
        every frame for the latter; `camera_was_blind(ts)` says whether the camera was down at
        camera time `ts`, so that a scan made then is left unjudged instead of being called a scan
        without item; `references` is given every decided
        pass with its crops (a `LaneReferenceSampler`; none: crops are dropped once judged); `labels`
        every pass the till labelled unambiguously, once no void can change it (the sampler's
        `labelled`, for the till policy)."""
        self.gallery = gallery
        self.config = config = config or LaneConfig()
        self.zone = zone = zone.excluding(config.exclude)
        self.detector = make_detector(zone, config.detector)
        self.tracker = PassTracker(config.tracker)
        self.crops = CropSelector(zone, config.crops)
        thresholds = Thresholds.resolve(config.events, gallery.calibration)
        self.recogniser = Recogniser(gallery, thresholds)
        self.camera_was_blind = camera_was_blind
        self.evidence = evidence
        self._unseen: list[PosEvent] = []
        self.events = EventBuilder(
            self.recogniser.judge,
            config.events,
            config.basket,
            resolve_barcode=gallery.sku_for_barcode,
            save_evidence=evidence if evidence is not None else lambda item: (),
            till_labels=labels is not None,
        )
        self.references = references
        self.labels = labels
        self._items: dict[int, ItemPass] = {}  # undecided passes by track, kept only for `references`
        self.offset = config.events.clock_offset_s
        self.frames = 0
        self.passes = 0
        self._pos: list[tuple[float, int, PosEvent]] = []  # waiting, by POS time then arrival
        self._arrival = itertools.count()

    def describe(self) -> LaneDescription:
        """What the lane runs with (`LaneDescription`)."""
        return LaneDescription(
            zone=self.zone,
            config=self.config,
            thresholds=self.recogniser.thresholds,
            lighting_relearns=getattr(self.detector, "relearned", 0),  # the motion detector's; a model relearns nothing
        )

    @property
    def pos_waiting(self) -> int:
        """POS events pushed whose time the lane has not reached yet."""
        return len(self._pos)

    def push_pos(self, event: PosEvent) -> ScanWarning | None:
        """Queue a till event for when the lane's clock reaches it. Returns a warning at once if it
        is a scan the camera cannot check (a barcode the catalogue lacks, a SKU the gallery lacks)."""
        heapq.heappush(self._pos, (event.ts, next(self._arrival), event))
        return scan_warning(event, self.gallery)

    def process(self, frame: Frame) -> LaneResult:
        """Run a frame through the lane: `observe` it, then `conclude` what it showed."""
        return self.conclude(self.observe(frame))

    def observe(self, frame: Frame) -> Sighting:
        """The camera's half of a frame: detect, track, keep crops, hand over the passes that ended.
        It touches only the detector, the tracker and the crop selector, so a replay runs it on a
        thread of its own, frames ahead of `conclude` (which must then take every sighting, in order,
        and nothing else may move the lane meanwhile)."""
        detections = self.detector.detect(frame)
        tracked, ended = self.tracker.update(detections, frame.ts)
        self.crops.add(frame, tracked)
        return Sighting(
            frame=frame,
            ended=self._passes_of(ended),
            open_starts=self._open_starts(),
        )

    def conclude(self, seen: Sighting) -> LaneResult:
        """The deciding half of a frame: release the POS events due by its time, recognise the passes
        that ended, and decide those whose scan window has closed."""
        now = seen.frame.ts + self.offset
        self._release(now)
        if self.evidence is not None:
            self.evidence.see(now, seen.frame.image)
        self._recognise(seen.ended)
        self.frames += 1
        return self._result(self.events.advance(now, list(seen.open_starts)))

    def advance(self, ts: float) -> LaneResult:
        """Move the lane's clock to camera time `ts` without a frame: decide the passes whose scan
        window has closed (the camera is down, and no frame will say the time)."""
        now = ts + self.offset
        self._release(now)
        return self._result(self.events.advance(now, list(self._open_starts())))

    def finish(self) -> LaneResult:
        """Release every POS event and decide everything still pending."""
        self._release(math.inf)
        self._recognise(self._passes_of(self.tracker.flush()))
        return self._result(self.events.flush())

    def _result(self, decided: Decisions) -> LaneResult:
        """A step's result: what the event builder decided, and the scans left unjudged meanwhile.
        Each decided pass goes to `references` with its crops."""
        if self.references is not None:
            for record in decided.passes:
                item = self._items.pop(record.track_id, None)
                if item is not None:
                    self.references(item, record)
        if self.labels is not None:
            for label in decided.labelled:
                self.labels(label)
        unseen, self._unseen = self._unseen, []
        return LaneResult(events=decided.events, passes=decided.passes, warnings=decided.warnings, unseen_scans=unseen)

    def _release(self, now: float) -> None:
        while self._pos and self._pos[0][0] <= now:
            event = heapq.heappop(self._pos)[2]
            if event.type is PosEventType.SCAN and self.camera_was_blind(event.ts - self.offset):
                self._unseen.append(event)
                continue
            self.events.add_pos(event)

    def _open_starts(self) -> tuple[float, ...]:
        """The lane times at which the tracks still open started."""
        return tuple(t + self.offset for t in self.tracker.open_tracks.values())

    def _passes_of(self, spans: list[TrackSpan]) -> list[ItemPass]:
        """The ended tracks as passes on the lane's clock, with their crops (the crops of tracks no
        longer open are dropped)."""
        passes = [
            ItemPass(
                track_id=s.track_id,
                t_start=s.t_start + self.offset,
                t_end=s.t_end + self.offset,
                frames=s.frames,
                crops=self.crops.take(s.track_id),
            )
            for s in spans
        ]
        self.crops.forget(set(self.tracker.open_tracks))
        return passes

    def _recognise(self, passes: list[ItemPass]) -> None:
        for item, rec in zip(passes, self.recogniser.recognise(passes), strict=True):
            if self.references is not None:
                self._items[item.track_id] = item
            self.events.add_pass(item, rec)
        self.passes += len(passes)


def scan_warning(event: PosEvent, gallery: GalleryLike) -> ScanWarning | None:
    """Why a scan cannot be verified by the camera, or None (not a scan, or one it can check)."""
    if event.type is not PosEventType.SCAN:
        return None
    where = f"line {event.line}: " if event.line else ""
    if event.sku is None:
        assert event.barcode is not None  # parse_pos_event refuses a scan with neither
        if gallery.sku_for_barcode(event.barcode) is None:
            return ScanWarning(
                Unverifiable.UNKNOWN_BARCODE,
                f"{where}barcode {event.barcode!r} is not in the gallery's catalogue; that scan cannot be verified",
            )
        return None
    if not gallery.has_sku(event.sku):
        return ScanWarning(
            Unverifiable.UNKNOWN_SKU,
            f"{where}SKU {event.sku!r} has no references in the gallery; that scan cannot be verified",
        )
    return None


def resolve_zone(zone: Zone | None, size: tuple[int, int], warnings: list[str]) -> Zone:
    """The configured zone cut to a frame of `size`; a warning is added when it had to be cut."""
    if zone is None:
        raise ZoneError(
            "no scan zone: give --zone X1,Y1,X2,Y2 or 'zone = [x1, y1, x2, y2]' (or a polygon [[x, y], ...]) "
            "in the config file"
        )
    clipped, warning = zone.clip(*size)
    if warning:
        warnings.append(warning)
    return clipped
