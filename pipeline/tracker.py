"""One track per item pass through the scan zone.

Hand-written on purpose: ByteTrack has left `supervision` (it now lives in roboflow's `trackers`,
which pulls the GUI build of OpenCV, matplotlib and PyAV onto the edge box) and norfair pins
numpy < 2. What a checkout needs is small: at most a few items in the zone at once, boxes from a
detector without useful scores, and a clear end to every pass. So: constant-velocity prediction,
greedy matching on IoU (then on centre distance, for fast items), and a track that ends when its
item has been unseen for `max_lost_s` (long enough to ride out a brief occlusion).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retail_reid.pipeline.config import TrackerConfig
from retail_reid.pipeline.types import Detections


@dataclass(frozen=True)
class TrackSpan:
    """A finished track: which frames of the camera clock the item was in the zone."""

    track_id: int
    t_start: float
    t_end: float
    frames: int


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # last matched xyxy
    t_start: float
    t_last: float
    frames: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # xyxy pixels per second

    def predict(self, ts: float) -> np.ndarray:
        return self.box + self.velocity * (ts - self.t_last)

    def update(self, box: np.ndarray, ts: float) -> None:
        dt = ts - self.t_last
        if dt > 0:
            seen = (box - self.box) / dt
            self.velocity = seen if self.frames == 1 else 0.5 * self.velocity + 0.5 * seen
        self.box, self.t_last = box, ts
        self.frames += 1


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of xyxy boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _greedy(score: np.ndarray, ok: np.ndarray, rows: list[int], cols: list[int]) -> list[tuple[int, int]]:
    """Pairs (row, col) taken best-score first among allowed ones; each row and column used once."""
    pairs = []
    used_r, used_c = set(), set()
    sub = [(score[r, c], r, c) for r in rows for c in cols if ok[r, c]]
    for _, r, c in sorted(sub, key=lambda t: -t[0]):
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


class PassTracker:
    """Feed each frame's detections with its timestamp; get them back with track ids, plus the
    tracks that have just ended. `flush()` ends all tracks (end of video)."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def open_tracks(self) -> dict[int, float]:
        """track_id -> t_start of every track still open (young ones too): a pass may yet come of them."""
        return {t.track_id: t.t_start for t in self._tracks}

    def update(self, detections: Detections, ts: float) -> tuple[Detections, list[TrackSpan]]:
        boxes = detections.xyxy
        ids = np.full(len(boxes), -1, np.int64)
        tracks = self._tracks
        if tracks and len(boxes):
            pred = np.stack([t.predict(ts) for t in tracks])
            iou = iou_matrix(pred, boxes)
            pairs = _greedy(iou, iou >= self.config.min_iou, list(range(len(tracks))), list(range(len(boxes))))
            free_t = [i for i in range(len(tracks)) if i not in {p[0] for p in pairs}]
            free_d = [j for j in range(len(boxes)) if j not in {p[1] for p in pairs}]
            if free_t and free_d:
                centre_p = (pred[:, :2] + pred[:, 2:]) / 2
                centre_d = (boxes[:, :2] + boxes[:, 2:]) / 2
                diag = np.hypot(pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1])
                dist = np.linalg.norm(centre_p[:, None] - centre_d[None], axis=2) / np.maximum(diag[:, None], 1.0)
                pairs += _greedy(-dist, dist <= self.config.max_jump, free_t, free_d)
            for i, j in pairs:
                tracks[i].update(boxes[j].copy(), ts)
                ids[j] = tracks[i].track_id
        for new in np.flatnonzero(ids < 0):
            track = _Track(self._next_id, boxes[new].copy(), ts, ts)
            self._next_id += 1
            tracks.append(track)
            ids[new] = track.track_id
        ended = [t for t in tracks if ts - t.t_last > self.config.max_lost_s]
        self._tracks = [t for t in tracks if ts - t.t_last <= self.config.max_lost_s]
        return detections.with_tracker_ids(ids), self._finish(ended)

    def flush(self) -> list[TrackSpan]:
        ended, self._tracks = self._tracks, []
        return self._finish(ended)

    def _finish(self, ended: list[_Track]) -> list[TrackSpan]:
        return [
            TrackSpan(t.track_id, t.t_start, t.t_last, t.frames) for t in ended if t.frames >= self.config.min_frames
        ]
