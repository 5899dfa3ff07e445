"""Choosing the crops a pass is recognised from: the embedder is the costly stage, so each track
keeps only its few best views, judged by size, sharpness and hand cover (`view_quality`) and
whether the zone's edge (its rectangle, its polygon or an excluded area) cuts the item."""

from __future__ import annotations

import heapq
import itertools

import numpy as np

from retail_reid.pipeline.config import CropConfig
from retail_reid.pipeline.types import Crop, Detections, Frame, Zone
from retail_reid.pipeline.view_quality import view_quality

CUT_PENALTY = 0.25  # a box touching the zone edge shows only part of the item
EDGE_TOLERANCE = 2  # pixels from the zone edge that still count as touching it


def touches_edge(box: np.ndarray, zone: Zone) -> bool:
    """Whether the box reaches the zone's edge: the rectangle's, or for a polygon or a zone with
    exclusions, any place the zone does not look (the item may go on beyond it)."""
    x1, y1, x2, y2 = box
    t = EDGE_TOLERANCE
    if x1 <= zone.x1 + t or y1 <= zone.y1 + t or x2 >= zone.x2 - t or y2 >= zone.y2 - t:
        return True
    if zone.is_rect:
        return False
    # The box's outline, grown by the tolerance, against where the zone looks.
    a, b = max(0, int(x1) - t - zone.x1), max(0, int(y1) - t - zone.y1)
    c, d = min(zone.width, int(np.ceil(x2)) + t + 1 - zone.x1), min(zone.height, int(np.ceil(y2)) + t + 1 - zone.y1)
    looks = zone.mask[b:d, a:c]
    if looks.size == 0:
        return True
    return bool(
        (looks[: 2 * t + 1] == 0).any()
        or (looks[-2 * t - 1 :] == 0).any()
        or (looks[:, : 2 * t + 1] == 0).any()
        or (looks[:, -2 * t - 1 :] == 0).any()
    )


def crop_quality(image: np.ndarray, box: np.ndarray, zone: Zone) -> float:
    """The view's quality score (`view_quality`, in [0, 1]), a quarter of it when the item is cut:
    it chooses a track's crops and weights them in the pass's embedding."""
    return view_quality(image).score * (CUT_PENALTY if touches_edge(box, zone) else 1.0)


def cut_crop(image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The box plus a margin of context, clipped to the frame; a copy, so the frame can be freed."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a, b = max(0, int(x1 - mx)), max(0, int(y1 - my))
    c, d = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    return image[b:d, a:c].copy()


class CropSelector:
    """Keeps, per open track, the `per_track` best crops seen so far (a bounded heap each)."""

    def __init__(self, zone: Zone, config: CropConfig | None = None):
        self.zone = zone
        self.config = config = config or CropConfig()
        self._best: dict[int, list[tuple[float, int, Crop]]] = {}
        self._order = itertools.count()  # tie-breaker: heaps never compare crops

    def add(self, frame: Frame, detections: Detections) -> None:
        """Offer the tracked detections of one frame."""
        for box, tid in zip(detections.xyxy, detections.tracker_id, strict=True):
            if tid < 0 or min(box[2] - box[0], box[3] - box[1]) < self.config.min_side:
                continue
            heap = self._best.setdefault(int(tid), [])
            image = cut_crop(frame.image, box, self.config.margin)
            q = crop_quality(image, box, self.zone)
            item = (
                q,
                next(self._order),
                Crop(image=image, ts=frame.ts, box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])), quality=q),
            )
            if len(heap) < self.config.per_track:
                heapq.heappush(heap, item)
            elif q > heap[0][0]:
                heapq.heapreplace(heap, item)

    def take(self, track_id: int) -> tuple[Crop, ...]:
        """The track's kept crops, best first; forgets the track."""
        heap = self._best.pop(track_id, [])
        return tuple(c for _, _, c in sorted(heap, key=lambda t: (-t[0], t[1])))

    def forget(self, active_ids: set[int]) -> None:
        """Drop crops of tracks that ended without becoming a pass (noise)."""
        for tid in [t for t in self._best if t not in active_ids]:
            del self._best[tid]
