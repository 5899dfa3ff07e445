"""The lane: frames and POS events in, events out. `LaneProcessor` is fed incrementally, so the
same object serves the live edge service (`retail_reid.pipeline.edge`) and the offline replay (`retail_reid.pipeline.replay`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.crops import CropSelector
from retail_reid.pipeline.detector import make_detector
from retail_reid.pipeline.events import EventBuilder
from retail_reid.pipeline.matching import GalleryLike, Recogniser, Thresholds
from retail_reid.pipeline.pos import PosEvent
from retail_reid.pipeline.tracker import PassTracker, TrackSpan
from retail_reid.pipeline.types import BasketEvent, Event, Frame, ItemPass, PassRecord, Zone, ZoneError

from retail_reid.errors import ReidError


class EvidenceError(ReidError, OSError):
    """An evidence crop that cannot be written; the message names the file."""


class LaneProcessor:
    """Detector -> tracker -> crop selection -> embedding and matching -> events, for one lane.

    Feed frames (camera clock) with `feed_frame` and till events (POS clock) with `feed_pos`, in
    any interleaving; each call returns the events decided so far, at the latest one association
    window after the item left the zone. `flush()` decides the rest (end of a recording).
    """

    def __init__(
        self,
        gallery: GalleryLike,
        zone: Zone,
        config: LaneConfig = LaneConfig(),
        evidence_dir: Path | None = None,
        on_pass: Callable[[PassRecord], None] | None = None,
    ):
        self.gallery = gallery
        self.config = config
        self.zone = zone
        self.detector = make_detector(zone, config.detector)
        self.tracker = PassTracker(config.tracker)
        self.crops = CropSelector(zone, config.crops)
        thresholds = Thresholds.resolve(config.events, gallery.calibration)
        self.recogniser = Recogniser(gallery, thresholds)
        self.evidence_dir = evidence_dir
        self.events = EventBuilder(
            self.recogniser.judge,
            config.events,
            config.basket,
            resolve_barcode=gallery.sku_for_barcode,
            save_evidence=self._save_evidence,
            on_pass=on_pass,
        )
        self.offset = config.events.clock_offset_s
        self.frames = 0
        self.passes = 0

    def feed_pos(self, event: PosEvent) -> None:
        self.events.add_pos(event)

    def feed_frame(self, frame: Frame) -> list[Event | BasketEvent]:
        detections = self.detector.detect(frame)
        tracked, ended = self.tracker.update(detections, frame.ts)
        self.crops.add(frame, tracked)
        self._finish(ended)
        self.frames += 1
        open_starts = [t + self.offset for t in self.tracker.open_tracks.values()]
        return self.events.advance(frame.ts + self.offset, open_starts)

    def flush(self) -> list[Event | BasketEvent]:
        self._finish(self.tracker.flush())
        return self.events.flush()

    def _finish(self, spans: list[TrackSpan]) -> None:
        passes = [
            ItemPass(s.track_id, s.t_start + self.offset, s.t_end + self.offset, s.frames, self.crops.take(s.track_id))
            for s in spans
        ]
        self.crops.forget(set(self.tracker.open_tracks))
        for item, rec in zip(passes, self.recogniser.recognise(passes)):
            self.events.add_pass(item, rec)
        self.passes += len(passes)

    def _save_evidence(self, item: ItemPass) -> tuple[str, ...]:
        """Write the pass's crops as JPEGs under evidence_dir/crops; paths relative to evidence_dir."""
        if self.evidence_dir is None:
            return ()
        folder = self.evidence_dir / "crops"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, crop in enumerate(item.crops):
            name = f"crops/track{item.track_id:05d}_{i}.jpg"
            if not cv2.imwrite(str(self.evidence_dir / name), crop.image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                raise EvidenceError(f"{self.evidence_dir / name}: cannot write evidence crop")
            paths.append(name)
        return tuple(paths)


def resolve_zone(zone: Zone | None, size: tuple[int, int], warnings: list[str]) -> Zone:
    if zone is None:
        raise ZoneError("no scan zone: give --zone X1,Y1,X2,Y2 or 'zone = [x1, y1, x2, y2]' in the config file")
    clipped, warning = zone.clip(*size)
    if warning:
        warnings.append(warning)
    return clipped
