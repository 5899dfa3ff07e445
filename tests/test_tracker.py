"""The pass tracker on generated box sequences: one track per item pass, through occlusion,
fast motion and two items close together."""

import numpy as np

from retail_reid.pipeline.config import TrackerConfig
from retail_reid.pipeline.tracker import PassTracker, iou_matrix
from retail_reid.pipeline.types import Detections

FPS = 15.0


def _feed(tracker: PassTracker, frames: list[list[tuple[float, float, float, float]]]):
    """Run box lists through the tracker; returns ids per frame and the finished spans."""
    ids, spans = [], []
    for i, boxes in enumerate(frames):
        tracked, ended = tracker.update(Detections.from_boxes(boxes), i / FPS)
        assert (tracked.tracker_id > 0).all() and len(tracked) == len(boxes)
        ids.append(tracked.tracker_id.tolist())
        spans += ended
    return ids, spans + tracker.flush()


def _slide(x0: float, y: float, step: float, n: int, size: float = 60.0):
    return [(x0 + i * step, y, x0 + i * step + size, y + size) for i in range(n)]


def test_one_item_one_track_with_its_time_span():
    boxes = _slide(0, 50, 15, 20)
    frames = [[]] * 5 + [[b] for b in boxes] + [[]] * 10
    ids, spans = _feed(PassTracker(), frames)
    assert len({i for f in ids for i in f}) == 1
    assert len(spans) == 1
    assert spans[0].t_start == 5 / FPS and spans[0].t_end == 24 / FPS and spans[0].frames == 20


def test_brief_occlusion_continues_the_track_but_a_long_gap_starts_a_new_one():
    boxes = _slide(0, 50, 10, 30)
    short_gap = [[b] if not 10 <= i < 13 else [] for i, b in enumerate(boxes)]  # 0.2 s hidden
    _, spans = _feed(PassTracker(TrackerConfig(max_lost_s=0.4)), short_gap)
    assert len(spans) == 1 and spans[0].frames == 27
    long_gap = [[b] if not 10 <= i < 20 else [] for i, b in enumerate(boxes)]  # 0.67 s hidden
    _, spans = _feed(PassTracker(TrackerConfig(max_lost_s=0.4)), long_gap)
    assert len(spans) == 2
    assert spans[0].t_end == 9 / FPS and spans[1].t_start == 20 / FPS


def test_fast_item_without_overlap_between_frames_keeps_its_track():
    boxes = _slide(0, 50, 70, 8)  # moves more than its own width per frame
    assert iou_matrix(np.array(boxes[:1], np.float32), np.array(boxes[1:2], np.float32))[0, 0] == 0
    _, spans = _feed(PassTracker(), [[b] for b in boxes])
    assert len(spans) == 1 and spans[0].frames == 8


def test_two_items_close_behind_each_other_keep_their_own_tracks():
    lead = _slide(100, 50, 20, 25)
    follower = _slide(100 - 60 - 15, 50, 20, 25)  # 15 px behind, same row, same speed
    frames = [[a, b] for a, b in zip(lead, follower, strict=True)]
    ids, spans = _feed(PassTracker(), frames)
    assert len(spans) == 2
    first = ids[0]
    assert all(f == first for f in ids), "ids swapped between the two items"


def test_items_crossing_paths_stay_apart_with_motion_prediction():
    a = _slide(0, 50, 20, 20)
    b = [(x1, y1 + 70, x2, y2 + 70) for x1, y1, x2, y2 in _slide(380, 50, -20, 20)]
    ids, spans = _feed(PassTracker(), [[p, q] for p, q in zip(a, b, strict=True)])
    assert len(spans) == 2
    assert all(f == ids[0] for f in ids)


def test_short_blips_are_not_passes():
    frames = [[(10, 10, 40, 40)], [(11, 10, 41, 40)], [], [], [], [], [], [], [], []]
    _, spans = _feed(PassTracker(TrackerConfig(min_frames=3)), frames)
    assert spans == []


def test_open_tracks_are_reported_until_they_end():
    tracker = PassTracker(TrackerConfig(max_lost_s=0.2))
    tracker.update(Detections.from_boxes([(0, 0, 50, 50)]), 1.0)
    assert list(tracker.open_tracks.values()) == [1.0]
    _, ended = tracker.update(Detections.empty(), 1.1)
    assert ended == [] and len(tracker.open_tracks) == 1
    _, ended = tracker.update(Detections.empty(), 1.3)
    assert tracker.open_tracks == {} and ended == []  # a one-frame blip ends as noise
