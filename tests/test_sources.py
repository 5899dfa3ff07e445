"""Frame sources: timestamps from the container, and damaged input processed as far as it goes."""

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from camera_fixtures import MjpegCamera
from edge_fixtures import free_port

from retail_reid.pipeline.sources import ImageFolderSource, LiveSource, SourceError, VideoFileSource, open_source


def _frames(n: int, w: int = 160, h: int = 120) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.putText(f, str(i), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        out.append(f)
    return out


def _write_avi(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_video_file_gives_every_frame_with_container_timestamps(tmp_path):
    path = _write_avi(tmp_path / "v.avi", _frames(20), fps=10.0)
    src = open_source(str(path))
    assert isinstance(src, VideoFileSource)
    assert src.size == (160, 120) and src.fps == pytest.approx(10.0) and src.frame_count == 20
    frames = list(src)
    assert [f.index for f in frames] == list(range(20))
    assert [f.ts for f in frames] == pytest.approx([i / 10 for i in range(20)], abs=1e-3)
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    assert src.decoded == 20 and src.dropped == 0 and src.problems == []


def test_truncated_video_yields_what_decodes_and_says_what_did_not(tmp_path):
    path = _write_avi(tmp_path / "v.avi", _frames(30))
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    src = VideoFileSource(cut)
    frames = list(src)
    assert 5 < len(frames) < 30
    assert src.dropped == 30 - len(frames)
    assert len(src.problems) == 1
    assert f"decoded {len(frames)} of the 30 frames" in src.problems[0] and str(cut) in src.problems[0]


@pytest.mark.parametrize(
    "content, message", [(None, "not found"), (b"", "empty"), (b"\x00garbage" * 500, "not a readable video")]
)
def test_unusable_video_files_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as e:
        VideoFileSource(path)
    assert str(path) in str(e.value)


def test_image_folder_skips_bad_frames_and_keeps_time(tmp_path):
    frames = _frames(6)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), f)
    (tmp_path / "f002.png").write_bytes(b"not an image")
    cv2.imwrite(str(tmp_path / "f004.png"), frames[4][:60])  # a frame of another size
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(str(tmp_path), fps=5.0)
    assert isinstance(src, ImageFolderSource)
    got = list(src)
    assert [f.index for f in got] == [0, 1, 3, 5]
    assert [f.ts for f in got] == pytest.approx([0.0, 0.2, 0.6, 1.0])
    assert np.array_equal(got[2].image, frames[3])
    assert src.dropped == 2 and len(src.problems) == 2
    assert "f002.png" in src.problems[0] and "f004.png" in src.problems[1]


def test_empty_image_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no image files"):
        ImageFolderSource(tmp_path)


def test_a_network_stream_gives_live_frames_stamped_with_unix_time(tmp_path):
    camera = MjpegCamera(_write_avi(tmp_path / "v.avi", _frames(10), fps=10.0))
    camera.plug()
    try:
        src = open_source(camera.url)
        assert isinstance(src, LiveSource)
        before = time.time()
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 5:
                break
        after = time.time()
    finally:
        camera.unplug()
    assert [f.image.shape for f in frames] == [(120, 160, 3)] * 5
    assert all(before - 1.0 <= f.ts <= after for f in frames)  # capture time, not stream position
    assert [b.ts > a.ts for a, b in itertools.pairwise(frames)] == [True] * 4


def test_an_unreachable_stream_is_refused_by_name():
    url = f"http://127.0.0.1:{free_port()}/cam.mjpg"
    with pytest.raises(SourceError, match="cannot be opened"):
        open_source(url)
