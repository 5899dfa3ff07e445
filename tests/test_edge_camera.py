"""`retail_reid.pipeline.edge.camera`: the frame queue, and the camera feed that paces a file in real
time, notes when it is blind, and retries an unreachable stream."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_fixtures import free_port, metrics, wait_until

from retail_reid.pipeline.edge.camera import CameraFeed, FrameQueue
from retail_reid.pipeline.edge.settings import CameraConfig
from retail_reid.pipeline.types import Frame


def test_frame_queue_drops_the_oldest_and_counts():
    dropped = []
    q = FrameQueue(3, lambda: dropped.append(1))
    for i in range(5):
        q.put(Frame(index=i, ts=float(i), image=np.zeros((2, 2, 3), np.uint8)))
    assert len(dropped) == 2 and len(q) == 3
    assert [q.get(0.01).index for _ in range(3)] == [2, 3, 4]
    assert q.get(0.01) is None


def _write_video(path: Path, n: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_a_video_file_is_played_in_real_time_stamped_from_the_start_and_loops(tmp_path):
    video = _write_video(tmp_path / "v.avi", 6, 10.0)
    m = metrics()
    q = FrameQueue(256, lambda: None)
    feed = CameraFeed(CameraConfig(source=str(video), loop=True), q, m)
    feed.start()
    got: list[tuple[Frame, float]] = []
    deadline = time.monotonic() + 60
    while len(got) < 14 and time.monotonic() < deadline:
        frame = q.get(0.05)
        if frame is not None:
            got.append((frame, time.time()))
    feed.stop()
    assert len(got) == 14
    origin = got[0][0].ts
    stamps = [f.ts - origin for f, _ in got]
    # Each frame stamped at its place on the video's timeline, on through the loop; a loaded machine may
    # drop frames decoded too late (counted), which leaves gaps, never a jump or a step back.
    steps = [round(s * 10) for s in stamps]
    assert stamps == pytest.approx([k / 10 for k in steps], abs=0.02)
    assert steps == sorted(set(steps))  # strictly increasing
    assert steps[-1] <= len(got) - 1 + m.frames_dropped.value("decode_late")
    assert all(arrived >= f.ts - 0.02 for f, arrived in got)  # never released before its time
    assert feed.status()["loops"] >= 2 and feed.status()["clock_origin"] is not None
    assert feed.status()["state"] == "stopped" and m.frames_read.value() >= 14


@pytest.mark.parametrize("drop_frames", [True, False])
def test_a_file_played_without_dropping_hands_every_frame_to_a_lane_that_lags(tmp_path, drop_frames):
    """Nobody reads the 2-frame queue while a 10-frame file plays: by default the oldest frames are
    dropped, as a camera's would be; with drop_frames off the camera waits, and every frame arrives
    in order (what lets a live test decide exactly as a replay on a loaded machine)."""
    video = _write_video(tmp_path / "v.avi", 10, 100.0)
    m = metrics()
    q = FrameQueue(2, lambda: m.frames_dropped.inc("queue_full"))
    feed = CameraFeed(CameraConfig(source=str(video), drop_frames=drop_frames), q, m)
    feed.start()
    try:
        if drop_frames:
            assert wait_until(lambda: feed.status()["state"] == "ended")
            got = [q.get(0.01), q.get(0.01)]
            dropped = m.frames_dropped.value("queue_full") + m.frames_dropped.value("decode_late")
            read = int(m.frames_read.value())  # 10, less any decoded too late on a loaded machine
            assert [f.index for f in got] == [read - 2, read - 1] and dropped == 8
        else:
            assert wait_until(lambda: len(q) == 2)
            got = []
            assert wait_until(lambda: got.extend(filter(None, [q.get(0.01)])) or len(got) == 10)
            assert [f.index for f in got] == list(range(10))
            assert m.frames_dropped.value("queue_full") == m.frames_dropped.value("decode_late") == 0
    finally:
        feed.stop()


def test_a_video_file_that_ends_leaves_the_camera_blind_from_its_last_frame(tmp_path):
    video = _write_video(tmp_path / "v.avi", 4, 20.0)
    q = FrameQueue(256, lambda: None)
    feed = CameraFeed(CameraConfig(source=str(video)), q, metrics())
    feed.start()
    assert wait_until(lambda: feed.status()["state"] == "ended")
    frames = list(iter(lambda: q.get(0.01), None))  # all 4, unless a loaded machine dropped some (late)
    assert frames and feed.status()["state"] == "ended" and not feed.connected
    assert feed.blind_since() == pytest.approx(frames[-1].ts)
    assert feed.was_blind(frames[-1].ts + 0.01) and not feed.was_blind((frames[0].ts + frames[-1].ts) / 2)
    feed.stop()


def test_an_unreachable_stream_is_retried_and_health_says_why():
    port = free_port()
    m = metrics()
    feed = CameraFeed(
        CameraConfig(
            source=f"http://127.0.0.1:{port}/cam.mjpg", open_timeout_s=0.5, reconnect_min_s=0.05, reconnect_max_s=0.1
        ),
        FrameQueue(4, lambda: None),
        m,
    )
    feed.start()
    assert wait_until(lambda: feed.status()["error"] is not None)
    status = feed.status()
    assert status["state"] == "connecting" and not status["connected"] and "cannot be opened" in status["error"]
    assert feed.was_blind(time.time())
    feed.stop()


def test_a_video_file_lost_and_back_counts_a_reconnect_and_its_loops_do_not(tmp_path):
    video = _write_video(tmp_path / "v.avi", 4, 20.0)
    aside = tmp_path / "aside.avi"
    m = metrics()
    feed = CameraFeed(
        CameraConfig(source=str(video), loop=True, reconnect_min_s=0.05, reconnect_max_s=0.1),
        FrameQueue(4, lambda: None),
        m,
    )
    feed.start()
    try:
        assert wait_until(lambda: feed.status()["loops"] >= 2)
        assert feed.status()["reconnects"] == 0  # playing it again is not a reconnection
        video.rename(aside)  # the file goes away (a remount, a replaced recording)
        assert wait_until(lambda: feed.status()["state"] == "reconnecting")
        assert "not found" in feed.status()["error"]
        aside.rename(video)
        assert wait_until(lambda: feed.status()["state"] == "connected" and feed.status()["reconnects"] == 1)
        assert m.camera_reconnects.value() == 1
    finally:
        feed.stop()
