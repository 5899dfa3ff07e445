"""Long recordings split into time chunks that replay side by side, then merge into the outputs
one `reid replay` of the whole recording writes.

The rule that decides everything once: chunk i *owns* the frames [F_i, F_i+1). It decides

- an item pass (its alert and its passes.jsonl line) when the pass's first frame is its own;
- a scan without item when the scan's time falls in its frames;
- a transaction's basket when the transaction's first POS event falls in its frames.

Each chunk replays more than it owns: `overlap_s` before F_i (the motion detector learns the
background, and tracks and scans that reach into its frames are seen as a whole run sees them) and
`overlap_s` after F_i+1, extended to the end of every transaction it owns (so a pass that starts in
it finishes, its scan is found, and its baskets are whole). Its POS log holds every transaction
that touches its frames, whole, and the loose scans among them; the lines keep their line numbers
(the others are left blank), so warnings name the original lines. Events that a chunk decides but
does not own are dropped; the loose basket (`"txn": null`) is rebuilt from the owned passes and
scans. A chunk's frames are copied losslessly (FFV1), so the lane sees the very pixels a whole
replay sees, and its times are shifted back by the chunk's start.

What differs from one whole replay: the motion detector's background model remembers frames from
long before (MOG2 forgets with a time constant of `history` frames), and a chunk has seen only its
overlap of them, so masks differ by a pixel here and there: a pass may start or end a frame apart
and its scores differ in the second or third decimal (measured in tests/test_batch.py and
docs/batch.md). Track ids (a chunk numbers its own tracks; merged ids are unique, not equal to a
whole run's) and the evidence file names that carry them differ, and events come in chunk order,
which can put a basket before an alert that a whole run decides first. So chunking is opt-in.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import cv2

from retail_reid.errors import ReidError
from retail_reid.pipeline.basket import Basket
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.evidence import EvidenceKind, crop_name, evidence_kind, lane_frame_name
from retail_reid.pipeline.pos import PosEvent, read_pos_log
from retail_reid.pipeline.recording import RecordingIdentity
from retail_reid.pipeline.records import BasketEvent, Event, PassRecord, read_events, read_passes
from retail_reid.pipeline.report import write_report

CHUNK_VIDEO = "chunk.avi"
CHUNK_POS = "pos.jsonl"
_Shifted = TypeVar("_Shifted", Event, PassRecord)


class ChunkError(ReidError, ValueError):
    """A recording that cannot be cut exactly (a frame that does not decode, irregular timestamps):
    it is replayed whole instead."""


@dataclass(frozen=True)
class Chunk:
    index: int
    own: tuple[int, int]  # frames [first, end) whose passes, scans and transactions this chunk decides
    media: tuple[int, int]  # frames [first, end) it replays


@dataclass(frozen=True)
class ChunkPlan:
    fps: float
    frames: int
    offset_s: float  # the lane's clock offset (POS minus camera)
    chunks: tuple[Chunk, ...]

    def owner(self, camera_ts: float) -> int:
        """Index of the chunk owning a camera time (before the first frame: the first chunk)."""
        frame = math.floor(camera_ts * self.fps + 1e-6)
        return max(i for i, c in enumerate(self.chunks) if c.own[0] <= frame or i == 0)


def plan_chunks(
    frames: int, fps: float, pos: list[PosEvent], config: LaneConfig, chunk_s: float, overlap_s: float
) -> ChunkPlan | None:
    """Chunks of about `chunk_s` seconds, or None when the recording is short enough to run whole.
    Chunk starts fall on whole seconds when the frame rate is whole, so times shift back exactly."""
    if chunk_s <= 0 or frames <= 1.5 * chunk_s * fps:
        return None
    unit = round(fps) if abs(fps - round(fps)) < 1e-9 else 1
    step = max(unit, round(chunk_s * fps) // unit * unit)
    pre = math.ceil(overlap_s * fps / unit) * unit
    offset = config.events.clock_offset_s
    starts = list(range(0, frames, step))
    if frames - starts[-1] < step // 2 and len(starts) > 1:
        starts.pop()  # a short tail joins the chunk before it
    ends = [*starts[1:], frames]
    txn_spans: dict[str, list[float]] = {}
    for e in pos:
        if e.txn is not None:
            span = txn_spans.setdefault(e.txn, [e.ts, e.ts])
            span[0], span[1] = min(span[0], e.ts), max(span[1], e.ts)
    chunks = []
    for i, (f0, f1) in enumerate(zip(starts, ends, strict=True)):
        end = f1 + pre
        for first, last in txn_spans.values():
            if f0 <= math.floor((first - offset) * fps) < f1 or (i == 0 and first - offset < 0):
                end = max(end, math.ceil((last - offset) * fps) + pre)
        chunks.append(Chunk(index=i, own=(f0, f1), media=(max(0, f0 - pre), min(frames, end))))
    return ChunkPlan(fps=fps, frames=frames, offset_s=offset, chunks=tuple(chunks))


def write_chunk_inputs(video: Path, pos_path: Path, plan: ChunkPlan, chunk: Chunk, folder: Path) -> float:
    """The chunk's frames (lossless) and POS log in `folder`; returns the chunk's start time
    (camera clock), which its outputs' times are shifted back by."""
    m0, m1 = chunk.media
    start = m0 / plan.fps
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    writer = None
    try:
        if m0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, m0)
        for k in range(m0, m1):
            ok, image = cap.read()
            if not ok or image is None:
                raise ChunkError(f"{video}: frame {k} does not decode")
            ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if abs(ts - k / plan.fps) > 0.5 / plan.fps:
                raise ChunkError(f"{video}: frame {k} is at {ts:.3f}s, not {k / plan.fps:.3f}s (irregular timing)")
            if writer is None:
                size = (image.shape[1], image.shape[0])
                writer = cv2.VideoWriter(str(folder / CHUNK_VIDEO), cv2.VideoWriter.fourcc(*"FFV1"), plan.fps, size)
                if not writer.isOpened():
                    raise ChunkError(f"{folder / CHUNK_VIDEO}: cannot write a lossless (FFV1) chunk")
            writer.write(image)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    _write_chunk_pos(pos_path, plan, chunk, start, folder / CHUNK_POS)
    return start


def _write_chunk_pos(pos_path: Path, plan: ChunkPlan, chunk: Chunk, start: float, dest: Path) -> None:
    """Whole transactions that touch the chunk's frames and the loose events among them, shifted
    to the chunk's clock, each on its original line."""
    events, _ = read_pos_log(pos_path)
    lo = chunk.media[0] / plan.fps + plan.offset_s
    hi = chunk.media[1] / plan.fps + plan.offset_s
    spans: dict[str, tuple[float, float]] = {}
    for e in events:
        if e.txn is not None:
            a, b = spans.get(e.txn, (e.ts, e.ts))
            spans[e.txn] = (min(a, e.ts), max(b, e.ts))
    keep = {
        e.line: e
        for e in events
        if (e.txn is not None and spans[e.txn][0] <= hi and spans[e.txn][1] >= lo)
        or (e.txn is None and lo <= e.ts <= hi)
    }
    n_lines = max((e.line for e in events), default=0)
    with open(dest, "w", encoding="utf-8") as f:
        for line in range(1, n_lines + 1):
            kept = keep.get(line)
            f.write("\n" if kept is None else json.dumps(_pos_json(kept, -start)) + "\n")


def _pos_json(e: PosEvent, shift: float) -> dict:
    obj = {"ts": e.ts + shift, "type": e.type}
    for key in ("sku", "barcode", "txn"):
        if getattr(e, key) is not None:
            obj[key] = getattr(e, key)
    return obj


@dataclass(frozen=True)
class ChunkRun:
    """A replayed chunk: its output folder and the time its outputs are shifted back by."""

    chunk: Chunk
    folder: Path
    start: float


def _shift(record: _Shifted, start: float) -> _Shifted:
    """The record with its times moved from the chunk's clock onto the recording's (its void's time
    stays as the chunk decided it)."""
    scan_ts = None if record.scan_ts is None else round(record.scan_ts + start, 4)
    return replace(
        record, t_start=round(record.t_start + start, 3), t_end=round(record.t_end + start, 3), scan_ts=scan_ts
    )


def merge_chunks(
    runs: list[ChunkRun], plan: ChunkPlan, video: Path, pos_path: Path, config: LaneConfig, gallery, dest: Path
) -> dict:
    """Write into `dest` what one replay of the whole recording writes; returns its summary."""
    pos, pos_warnings = read_pos_log(pos_path)
    txn_first: dict[str, float] = {}
    for e in pos:
        if e.txn is not None:
            txn_first.setdefault(e.txn, e.ts)
    events: list[Event | BasketEvent] = []
    passes: list[PassRecord] = []
    loose = Basket()  # passes and scans outside any transaction, as the chunks that own them decided
    labels = {round(e.ts, 4): e.sku or f"barcode:{e.barcode}" for e in pos if e.type == "scan"}
    id_base = 0
    summaries = []
    for run in runs:
        i = run.chunk.index
        summaries.append(json.loads((run.folder / "summary.json").read_text(encoding="utf-8")))
        chunk_passes = [_shift(p, run.start) for p in read_passes(run.folder / "passes.jsonl")]
        owned_ids = {p.track_id for p in chunk_passes if plan.owner(p.t_start - plan.offset_s) == i}
        for p in chunk_passes:
            if p.track_id in owned_ids:
                passes.append(replace(p, track_id=p.track_id + id_base))
                if p.txn is None:
                    loose.see(p.seen_sku)
                    if p.scanned_sku is not None:
                        loose.scan(p.scanned_sku)
        for ev in read_events(run.folder / "events.jsonl"):
            if isinstance(ev, BasketEvent):
                if ev.txn is not None and plan.owner(txn_first[ev.txn] - plan.offset_s) == i:
                    events.append(ev)
                continue
            ev = _shift(ev, run.start)
            if ev.track_id is None:  # a scan without item
                assert ev.scan_ts is not None  # a scan without item is the scan's
                if plan.owner(ev.scan_ts - plan.offset_s) == i:
                    events.append(ev)
                    if ev.txn is None:
                        label = labels.get(ev.scan_ts, ev.scanned_sku)
                        assert label is not None  # the POS log's scan, or the SKU it named
                        loose.scan(label)
            elif ev.track_id in owned_ids:
                events.append(_renumber(ev, id_base, run.folder, dest))
        id_base += max((p.track_id for p in chunk_passes), default=0)
    if loose:  # the recording's identity on its line, as the chunks wrote it on theirs
        recording = summaries[0].get("recording")
        identity = None if recording is None else RecordingIdentity.from_dict(recording, "the first chunk's summary")
        events.append(replace(loose.event(None, config.basket), recording=identity))
    with open(dest / "events.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e.to_dict()) + "\n" for e in events)
    with open(dest / "passes.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p.to_dict()) + "\n" for p in passes)
    summary = _merged_summary(summaries, runs, plan, events, passes, pos, pos_warnings, video, pos_path)
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    write_report(dest / "report.html", dest, events, passes, pos, gallery, summary)
    return summary


def _renumber(e: Event, id_base: int, src: Path, dest: Path) -> Event:
    """The event with its track id made unique across chunks, and its evidence files renamed to match."""
    assert e.track_id is not None  # only an item pass's events are renumbered
    track = e.track_id + id_base
    evidence = []
    (dest / "crops").mkdir(exist_ok=True)  # as a whole replay, only when there is evidence
    for k, rel in enumerate(e.evidence):
        lane = evidence_kind(rel) is EvidenceKind.LANE
        name = lane_frame_name("crops", track) if lane else crop_name("crops", track, k)
        shutil.copyfile(src / rel, dest / name)
        evidence.append(name)
    return replace(e, track_id=track, evidence=tuple(evidence))


def _worst(spreads: list[dict | None]) -> dict | None:
    """For a chunked recording: the worst chunk's p50, p95 and maximum (percentiles do not add up)."""
    known = [s for s in spreads if s is not None]
    return {k: max(s[k] for s in known) for k in ("p50", "p95", "max")} if known else None


def _merged_summary(
    summaries: list[dict],
    runs: list[ChunkRun],
    plan: ChunkPlan,
    events: list[Event | BasketEvent],
    passes: list[PassRecord],
    pos: list[PosEvent],
    pos_warnings: list[str],
    video: Path,
    pos_path: Path,
) -> dict:
    first = summaries[0]
    counts = Counter(str(e.type) for e in events)
    seconds = sum(s["processing_seconds"] for s in summaries)
    video_seconds = plan.frames / plan.fps
    warnings = list(pos_warnings)
    for s in summaries:
        warnings += [w for w in s["warnings"] if w not in warnings]  # each chunk repeats a clipped zone
    return {
        **first,
        "video": str(video),
        "pos": str(pos_path),
        "counts": {t: counts.get(t, 0) for t in first["counts"]},
        "passes": len(passes),
        "verdicts": dict(Counter(str(p.verdict) for p in passes)),
        "scans": sum(e.type == "scan" for e in pos),
        "frames_processed": plan.frames,
        "frames_dropped": 0,
        "video_seconds": round(video_seconds, 3),
        "processing_seconds": round(seconds, 3),
        "speed_x_realtime": round(video_seconds / seconds, 2) if seconds > 0 else 0.0,
        "alert_delay_s": _worst([s["alert_delay_s"] for s in summaries]),
        "frame_ms": _worst([s["frame_ms"] for s in summaries]),
        "lighting_relearns": sum(s["lighting_relearns"] for s in summaries),  # overlaps count twice
        "warnings": warnings,
        "chunks": [
            {
                "own_frames": list(r.chunk.own),
                "replayed_frames": list(r.chunk.media),
                "processing_seconds": s["processing_seconds"],
            }
            for r, s in zip(runs, summaries, strict=True)
        ],
    }
