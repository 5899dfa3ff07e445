"""`retail_reid.pipeline.edge.clips`: the bounded ring of recent frames, the clip of an alert pass
written beside its crops, and the disk cap."""

from __future__ import annotations

import av
import numpy as np
import pytest

from retail_reid.pipeline.config import ConfigError
from retail_reid.pipeline.edge.clips import ClipEvidenceWriter, ClipRing
from retail_reid.pipeline.edge.settings import ClipConfig
from retail_reid.pipeline.types import Frame, ItemPass

FPS = 15.0


def _ring(config: ClipConfig, n: int) -> ClipRing:
    ring = ClipRing(config)
    for frame in _frames(n):
        ring.add(frame)
    return ring


def _frames(n: int, start: float = 0.0) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [
        Frame(index=i, ts=start + i / FPS, image=rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for i in range(n)
    ]


def _item(track: int, t0: float, t1: float) -> ItemPass:
    return ItemPass(track_id=track, t_start=t0, t_end=t1, frames=5, crops=())  # no crops: the clip alone


def test_the_ring_keeps_recent_frames_within_its_time_and_memory_bounds():
    ring = ClipRing(ClipConfig(enabled=True, ring_s=3.0, before_s=1.0, after_s=0.5))
    for frame in _frames(150):  # 10 s
        ring.add(frame)
    kept = ring.between(-1, 100)
    assert kept[-1][0] == pytest.approx(149 / FPS) and kept[0][0] >= 149 / FPS - 3.0 - 1e-9
    small = ClipRing(ClipConfig(enabled=True, ring_mb=1.0))
    for frame in _frames(300):
        small.add(frame)
    assert small.nbytes <= 1e6 and len(small.between(-1, 100)) < 300


def test_an_alert_pass_gets_a_clip_around_it_and_old_clips_go_beyond_the_disk_cap(tmp_path):
    ring = _ring(ClipConfig(enabled=True, before_s=1.0, after_s=0.5), 90)  # 6 s
    writer = ClipEvidenceWriter(tmp_path, "evidence/run1", ring, offset_s=100.0)  # passes are on the POS clock
    names = writer(_item(7, 102.0, 103.0))  # camera 2.0-3.0 s: the clip is 1.0-3.5 s
    assert names == ("evidence/run1/track00007.mp4",)
    with av.open(str(tmp_path / names[0])) as clip:  # H.264 in MP4, as browsers play it
        stream = clip.streams.video[0]
        decoded = [f.to_ndarray(format="bgr24") for f in clip.decode(stream)]
        assert (clip.format.name.split(",")[0], stream.codec_context.name, stream.pix_fmt) == ("mov", "h264", "yuv420p")
        assert float(clip.duration / av.time_base) == pytest.approx(38 / FPS, abs=0.05)  # its frames' own times
    assert decoded[0].shape == (120, 160, 3) and len(decoded) == len(ring.between(1.0, 3.5)) == 38
    assert writer(_item(8, 500.0, 501.0)) == ()  # no frames kept of that time: no clip
    one_clip = (tmp_path / names[0]).stat().st_size
    capped_ring = _ring(ClipConfig(enabled=True, before_s=1.0, after_s=0.5, max_disk_mb=2.5 * one_clip / 1e6), 90)
    capped = ClipEvidenceWriter(tmp_path, "evidence/run2", capped_ring, 100.0)
    assert capped.clip_bytes == one_clip  # a later start counts the earlier start's clips
    for track in (1, 2, 3):
        capped(_item(track, 102.0, 103.0))
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("evidence/*/*.mp4"))
    assert left == ["evidence/run2/track00002.mp4", "evidence/run2/track00003.mp4"]  # the oldest went first
    assert capped.clip_bytes <= 2.5 * one_clip


def test_clip_settings_are_checked():
    with pytest.raises(ConfigError, match=r"edge\.clips\.ring_s"):
        ClipConfig(enabled=True, before_s=10.0, after_s=1.0, ring_s=5.0)
    with pytest.raises(ConfigError, match=r"edge\.clips\.max_disk_mb"):
        ClipConfig(max_disk_mb=0)


def test_odd_frame_sides_are_cut_to_even_and_an_older_lanes_avi_clips_count_towards_the_cap(tmp_path):
    ring = ClipRing(ClipConfig(enabled=True, before_s=0.0, after_s=0.0))
    rng = np.random.default_rng(1)
    for i in range(10):
        ring.add(Frame(index=i, ts=i / FPS, image=rng.integers(0, 255, (121, 161, 3), dtype=np.uint8)))
    old = tmp_path / "evidence" / "run0" / "track00001.avi"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"RIFF" + bytes(1000))
    writer = ClipEvidenceWriter(tmp_path, "evidence/run1", ring, offset_s=0.0)
    assert writer.clip_bytes == 1004
    [name] = writer(_item(3, 0.0, 9 / FPS))
    with av.open(str(tmp_path / name)) as clip:
        assert (clip.streams.video[0].width, clip.streams.video[0].height) == (160, 120)
        assert sum(1 for _ in clip.decode(video=0)) == 10
