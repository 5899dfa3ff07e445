"""Work done ahead on a thread: every item, in order, the producer's error raised, the thread stopped."""

import threading

import cv2
import numpy as np
import pytest

from retail_reid.pipeline.read_ahead import read_ahead
from retail_reid.pipeline.sources import VideoFileSource


def _video(path, n: int = 30):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("depth", [1, 4, 64])
def test_a_video_read_ahead_gives_every_frame_in_order_and_final_counts(tmp_path, depth):
    path = _video(tmp_path / "v.avi")
    direct = list(VideoFileSource(path))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    src = VideoFileSource(path)
    got = list(read_ahead(src, depth))
    assert [(f.index, f.ts) for f in got] == [(f.index, f.ts) for f in direct]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, direct, strict=True))
    assert src.decoded == 30 and src.problems == []
    damaged = VideoFileSource(cut)  # the source's own count of what it lost is final at the end
    n = len(list(read_ahead(damaged, depth)))
    assert 0 < n < 30 and damaged.decoded == n and damaged.dropped == 30 - n and len(damaged.problems) == 1


def test_the_producers_error_comes_after_the_items_before_it():
    def failing():
        yield 0
        yield 1
        raise OSError("the disk went away")

    got = []
    with pytest.raises(OSError, match="the disk went away"):
        for item in read_ahead(failing(), 4):
            got.append(item)
    assert got == [0, 1]


def test_leaving_early_stops_the_thread():
    before = threading.active_count()
    items = read_ahead(iter(range(1000)), 1)
    assert next(items) == 0
    items.close()  # the producer, blocked on the full queue, must end too
    assert threading.active_count() == before


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        next(read_ahead([1], 0))
