"""Offline replay: a thin loop over `retail_reid.pipeline.lane.LaneProcessor` that reads a recording and a POS
log and writes events.jsonl, passes.jsonl, summary.json, report.html and the evidence crops."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retail_reid.errors import ReidError
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.events import TillLabel
from retail_reid.pipeline.evidence import EvidenceWriter
from retail_reid.pipeline.lane import LaneDescription, LaneProcessor, LaneResult, Sighting, resolve_zone
from retail_reid.pipeline.pos import PosEvent, PosEventType, read_pos_log
from retail_reid.pipeline.read_ahead import read_ahead
from retail_reid.pipeline.recognition import GalleryLike
from retail_reid.pipeline.recording import RecordingIdentity
from retail_reid.pipeline.records import BasketEvent, Event, EventType, PassRecord
from retail_reid.pipeline.report import write_report
from retail_reid.pipeline.sources import FrameSource, open_source
from retail_reid.pipeline.types import ItemPass

# Frames observed (decoded, detected, tracked) ahead of the deciding half of the lane, which works
# on the other core: at most this many, and at most this much of memory in frames.
MAX_FRAMES_AHEAD = 32
READ_AHEAD_BYTES = 64 * 2**20
OUTPUT_NAMES = ("events.jsonl", "passes.jsonl", "summary.json", "report.html", "crops")


class ReplayError(ReidError, ValueError):
    """Replay inputs or outputs that cannot be used; the message names them."""


@dataclass
class ReplayStats:
    """What summary.json reports besides the event counts."""

    frames_processed: int = 0
    frames_dropped: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    alert_delays: list[float] = field(default_factory=list)  # seconds of lane time from item leaving to alert
    frame_seconds: list[float] = field(default_factory=list)  # processing time of each frame
    last_frame_ts: float = math.inf  # camera time of the last decoded frame, once the video has ended
    scans_after_end: list[float] = field(default_factory=list)  # POS times of scans the video ended before

    def after_end(self, camera_ts: float, window_after_s: float) -> bool:
        """A scan this late could be claimed by no pass the video showed (passes end by the last
        frame, and a scan belongs to a pass at most `window_after_s` after it left)."""
        return camera_ts > self.last_frame_ts + window_after_s

    @property
    def speed(self) -> float:
        return self.video_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def prepare_output(out: Path, overwrite: bool) -> Path:
    """A fresh staging folder next to OUT; results move into OUT only when complete, so an
    interrupted or failed run never leaves half-written files that look finished."""
    if out.exists() and not out.is_dir():
        raise ReplayError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ReplayError(f"{out}: output folder exists and is not empty; choose another or pass --overwrite")
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish_output(staging: Path, out: Path) -> None:
    """Move the finished outputs into OUT, replacing earlier replay outputs only (other files in
    OUT are left alone)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        target, made = out / name, staging / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if made.exists():
            os.replace(made, target)
    shutil.rmtree(staging)


def replay(
    video: str | Path,
    pos_path: str | Path,
    gallery: GalleryLike,
    out: str | Path,
    config: LaneConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_warning: Callable[[str], None] = lambda warning: None,
    references: Callable[[ItemPass, PassRecord], object] | None = None,
    labels: Callable[[TillLabel], object] | None = None,
    recording: RecordingIdentity | None = None,
) -> dict:
    """Run the lane over a recording and its POS log; write OUT/events.jsonl, passes.jsonl,
    summary.json, report.html and the evidence crops. Returns the summary. Each warning goes to
    `on_warning` as soon as it is known: those about the inputs (skipped POS lines, a clipped
    zone, scans the gallery cannot check) before the first frame is read. `references` is given
    every decided pass with its crops (a lane-reference sampler), `labels` every pass the till
    labelled unambiguously (the sampler's `labels`, for the till policy). `recording` (its store, lane and
    start) goes into summary.json and on every events.jsonl line, so the console dates and labels its
    alerts by it. The POS log's path is kept absolute, so the console finds it from any working
    directory."""
    out = Path(out)
    config = config or LaneConfig()
    warnings: list[str] = []

    def warn(found: list[str]) -> None:
        for w in found:
            warnings.append(w)
            on_warning(w)

    pos, pos_warnings = read_pos_log(pos_path)
    warn(pos_warnings)
    source = open_source(str(video))
    try:
        zone_warnings: list[str] = []
        zone = resolve_zone(config.zone, source.size, zone_warnings)
        warn(zone_warnings)
        staging = prepare_output(out, overwrite)
        try:
            stats = ReplayStats()
            lane = LaneProcessor(
                gallery,
                zone,
                replace(config, zone=zone),
                evidence=EvidenceWriter(staging, "crops"),
                camera_was_blind=lambda ts: stats.after_end(ts, config.events.window_after_s),
                references=references,
                labels=labels,
            )
            warn([str(w) for w in map(lane.push_pos, pos) if w is not None])
            events, records = _run(lane, source, staging / "events.jsonl", progress, warn, stats, recording)
            warn(source.problems)
            warn(_video_end_warnings(source, stats, video))
            with open(staging / "passes.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r.to_dict()) + "\n" for r in records)
            summary = _summary(events, records, pos, stats, lane.describe(), gallery, source, warnings, video, pos_path)
            if recording is not None:
                summary["recording"] = recording.to_dict()
            (staging / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
            write_report(staging / "report.html", staging, events, records, pos, gallery, summary)
            publish_output(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        source.close()
    return summary


def _run(
    lane: LaneProcessor,
    source: FrameSource,
    events_path: Path,
    progress: bool,
    warn: Callable[[list[str]], None],
    stats: ReplayStats,
    recording: RecordingIdentity | None,
) -> tuple[list[Event | BasketEvent], list[PassRecord]]:
    """Feed every frame to the lane (its POS events are already pushed), then finish it; each event
    line carries the recording's identity, when known. Scans after the last frame are not judged:
    the lane leaves those too late for any seen pass unjudged (`stats.after_end`), and a scan after
    the last frame that no pass claimed is no scan_without_item either (its item may have come
    after the end)."""
    events: list[Event | BasketEvent] = []
    records: list[PassRecord] = []
    first_ts = last_ts = None
    start = time.perf_counter()
    with (
        open(events_path, "w", encoding="utf-8") as sink,
        tqdm(total=source.frame_count, desc="replay", unit="frame", disable=not progress) as bar,
    ):

        def emit(result: LaneResult, now: float | None) -> None:
            """Write what the lane decided; `now` (lane time) measures alert delays, None at the end."""
            stats.scans_after_end += [scan.ts for scan in result.unseen_scans]
            for e in result.events:
                if now is None and _after_the_video(e, stats.last_frame_ts + lane.offset):
                    assert isinstance(e, Event) and e.scan_ts is not None  # as _after_the_video found
                    stats.scans_after_end.append(e.scan_ts)
                    continue
                e = replace(e, recording=recording)
                sink.write(json.dumps(e.to_dict()) + "\n")
                if now is not None and isinstance(e, Event) and e.track_id is not None:
                    stats.alert_delays.append(now - e.t_end)
            events.extend(result.events)
            records.extend(result.passes)
            warn(result.warnings)

        def observed() -> Iterator[tuple[Sighting, float]]:
            """Each frame's sighting and the seconds it took (run on the read-ahead thread)."""
            for frame in source:
                t = time.perf_counter()
                yield lane.observe(frame), time.perf_counter() - t

        width, height = source.size
        depth = max(1, min(MAX_FRAMES_AHEAD, READ_AHEAD_BYTES // max(1, width * height * 3)))
        # closed on the way out, an error included, so the observing thread never outlives the run
        with closing(read_ahead(observed(), depth, name=f"observe {source.name}")) as sightings:
            for seen, observe_seconds in sightings:
                t = time.perf_counter()
                result = lane.conclude(seen)
                stats.frame_seconds.append(observe_seconds + time.perf_counter() - t)
                emit(result, seen.frame.ts + lane.offset)
                first_ts = seen.frame.ts if first_ts is None else first_ts
                last_ts = seen.frame.ts
                bar.update(1)
        if last_ts is not None:
            stats.last_frame_ts = last_ts
        emit(lane.finish(), None)
    stats.wall_seconds = time.perf_counter() - start
    stats.frames_processed = lane.frames
    stats.frames_dropped = source.dropped
    if first_ts is not None and last_ts is not None:  # (set together)
        stats.video_seconds = last_ts - first_ts + 1.0 / source.fps
    return events, records


def _after_the_video(event: Event | BasketEvent, last_frame: float) -> bool:
    """A scan without item made after the last frame (POS-clock times): its item was never filmed."""
    return (
        isinstance(event, Event)
        and event.type is EventType.SCAN_WITHOUT_ITEM
        and event.scan_ts is not None
        and event.scan_ts > last_frame
    )


def _video_end(source: FrameSource, stats: ReplayStats) -> dict:
    """Where the video ended, against what its container declares (frames and seconds)."""
    declared = source.frame_count
    last = stats.last_frame_ts if math.isfinite(stats.last_frame_ts) else None
    return {
        "declared_frames": declared,
        "declared_seconds": round(declared / source.fps, 3) if declared else None,
        "decoded_frames": source.decoded,
        "last_frame_s": None if last is None else round(last, 3),
        "ended_early": declared is not None and source.decoded < declared,
    }


def _video_end_warnings(source: FrameSource, stats: ReplayStats, video: str | Path) -> list[str]:
    end = _video_end(source, stats)
    found = []
    if end["ended_early"]:
        found.append(
            f"{video}: the video ended early: the last decoded frame is at {end['last_frame_s']} s of the "
            f"{end['declared_seconds']} s ({end['declared_frames']} frames) the container declares"
        )
    if stats.scans_after_end:
        found.append(
            f"{len(stats.scans_after_end)} scans after the video's last decoded frame "
            f"(at {end['last_frame_s']} s) were not judged: no camera saw their items "
            f"(first at {min(stats.scans_after_end):.3f} on the POS clock)"
        )
    return found


def _summary(
    events: list[Event | BasketEvent],
    records: list[PassRecord],
    pos: list[PosEvent],
    stats: ReplayStats,
    ran: LaneDescription,
    gallery: GalleryLike,
    source: FrameSource,
    warnings: list[str],
    video: str | Path,
    pos_path: str | Path,
) -> dict:
    counts = Counter(e.type for e in events)
    embedder = gallery.embedder
    return {
        "video": str(video),
        "pos": str(Path(pos_path).absolute()),
        "counts": {t: counts.get(t, 0) for t in EventType},
        "passes": len(records),
        "verdicts": dict(Counter(r.verdict for r in records)),
        "scans": sum(e.type is PosEventType.SCAN for e in pos),
        "frames_processed": stats.frames_processed,
        "frames_dropped": stats.frames_dropped,
        "video_seconds": round(stats.video_seconds, 3),
        "video_end": _video_end(source, stats),
        "scans_after_video_end": len(stats.scans_after_end),
        "processing_seconds": round(stats.wall_seconds, 3),
        "speed_x_realtime": round(stats.speed, 2),
        "alert_delay_s": _spread(np.asarray(stats.alert_delays), 1.0),
        "frame_ms": _spread(np.asarray(stats.frame_seconds), 1000.0),
        "frame_size": list(source.size),
        "fps": source.fps,
        "zone": [ran.zone.x1, ran.zone.y1, ran.zone.x2, ran.zone.y2],
        "lighting_relearns": ran.lighting_relearns,
        "model": {"path": str(embedder.path), "fingerprint": embedder.fingerprint, "embedding_dim": embedder.dim},
        "gallery_version": gallery.version,
        "thresholds": asdict(ran.thresholds),
        "config": _plain(asdict(ran.config)),
        "warnings": warnings,
    }


def _spread(values: np.ndarray, scale: float) -> dict | None:
    """Median, 95th percentile and maximum, scaled (e.g. to milliseconds)."""
    if values.size == 0:
        return None
    return {
        "p50": round(float(np.percentile(values, 50)) * scale, 3),
        "p95": round(float(np.percentile(values, 95)) * scale, 3),
        "max": round(float(values.max()) * scale, 3),
    }


def _plain(obj):
    """Config as JSON (the zone dataclass becomes a list)."""
    if isinstance(obj, dict):
        if {"x1", "y1", "x2", "y2", "polygon"} <= set(obj):  # a polygon zone as its corners
            return [list(p) for p in obj["polygon"]] or [obj["x1"], obj["y1"], obj["x2"], obj["y2"]]
        return {k: _plain(v) for k, v in obj.items()}
    return obj
