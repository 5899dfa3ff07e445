"""`retail_reid.pipeline.evidence`: the one evidence-crop writer, which gives up pictures (the edge)
or fails (the replay) when they cannot be written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retail_reid.pipeline.evidence import (
    LANE_VIEW_EVERY_S,
    EvidenceError,
    EvidenceKind,
    EvidenceWriter,
    LaneView,
    evidence_kind,
)
from retail_reid.pipeline.types import Crop, ItemPass

CROP = Crop(image=np.full((60, 40, 3), 128, np.uint8), ts=0.0, box=(0, 0, 40, 60), quality=1.0)
ITEM = ItemPass(track_id=3, t_start=0.0, t_end=1.0, frames=3, crops=(CROP, CROP))


def test_evidence_is_skipped_below_the_free_space_reserve_or_when_unwritable(tmp_path):
    failed = []
    ok = EvidenceWriter(tmp_path, "evidence/r1", on_failure=failed.append)
    assert ok(ITEM) == ("evidence/r1/track00003_0.jpg", "evidence/r1/track00003_1.jpg")
    assert cv2.imread(str(tmp_path / "evidence/r1/track00003_1.jpg")).shape == (60, 40, 3)
    # more free space asked for than any disk has
    reserve = EvidenceWriter(tmp_path, "evidence/r2", min_free_bytes=1 << 62, on_failure=failed.append)
    assert reserve(ITEM) == () and "MB kept for alerts" in reserve.error
    (tmp_path / "blocked").write_text("a file where the folder should be")
    blocked = EvidenceWriter(tmp_path, "blocked/r3", on_failure=failed.append)
    assert blocked(ITEM) == () and "evidence crops not saved" in blocked.error
    assert failed == [reserve.error, blocked.error]
    assert ok(ITEM) and ok.error is None  # a later pass is saved again once there is room


def test_without_on_failure_a_crop_not_written_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with pytest.raises(EvidenceError, match="blocked/crops: evidence crops not saved"):
        EvidenceWriter(tmp_path, "blocked/crops")(ITEM)
    assert list(tmp_path.iterdir()) == [tmp_path / "blocked"]


def _lane_frames(view: LaneView, t0: float, n: int, fps: float = 15.0) -> None:
    """`n` frames of a 1280 x 720 lane from lane time `t0`; frame i is lit at level i (to tell them apart)."""
    for i in range(n):
        view.add(t0 + i / fps, np.full((720, 1280, 3), i % 256, np.uint8))


def test_the_lane_frame_is_the_whole_lane_mid_pass_downscaled_beside_the_crops(tmp_path):
    view = LaneView()
    writer = EvidenceWriter(tmp_path, "crops", lane_view=view)
    _lane_frames(view, 100.0, 60)  # 4 s at 15 fps: one kept every LANE_VIEW_EVERY_S
    item = ItemPass(track_id=3, t_start=101.0, t_end=102.0, frames=15, crops=(CROP, CROP))
    names = writer(item)
    assert names == ("crops/track00003_0.jpg", "crops/track00003_1.jpg", "crops/track00003_lane.jpg")
    assert [evidence_kind(n) for n in names] == [EvidenceKind.CROP, EvidenceKind.CROP, EvidenceKind.LANE]
    lane = cv2.imread(str(tmp_path / names[2]))
    assert lane.shape == (360, 640, 3)  # the longer side bounded, the aspect kept
    # the frame kept nearest 101.5 s, the middle of the pass (frame 22.5 at 15 fps), lit at its index
    assert abs(lane.mean() - 22.5) <= LANE_VIEW_EVERY_S / 2 * 15 + 0.5
    assert writer(ItemPass(track_id=4, t_start=500.0, t_end=501.0, frames=5, crops=(CROP,))) == (
        "crops/track00004_0.jpg",  # no frame of that time kept: crops alone
    )


def test_the_lane_view_is_bounded_in_time_and_memory():
    view = LaneView(keep_s=10.0)
    _lane_frames(view, 0.0, 240, fps=4.0)  # a minute
    assert view.middle(0.0, 1.0) is None and view.middle(55.0, 56.0) is not None
    assert len(view._frames) <= 10.0 / LANE_VIEW_EVERY_S + 1
    small = LaneView(max_bytes=1_000_000)
    rng = np.random.default_rng(1)
    for i in range(40):
        small.add(i * 0.5, rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))  # noise: large JPEGs
    assert small.nbytes <= 1_000_000 and len(small._frames) < 10 and small.middle(19.0, 19.5) is not None


def test_a_replay_keeps_the_lane_frame_of_each_alert_and_chunks_keep_its_name(tmp_path):
    from retail_reid.pipeline.batch.chunks import _renumber
    from retail_reid.pipeline.records import Event, EventType

    src, dest = tmp_path / "chunk", tmp_path / "merged"
    (src / "crops").mkdir(parents=True)
    dest.mkdir()
    view = LaneView()
    _lane_frames(view, 0.0, 30)
    evidence = EvidenceWriter(src, "crops", lane_view=view)(
        ItemPass(track_id=2, t_start=0.5, t_end=1.5, frames=9, crops=(CROP,))
    )
    alert = Event(type=EventType.NON_SCAN, t_start=0.5, t_end=1.5, track_id=2, evidence=evidence)
    merged = _renumber(alert, 100, src, dest)
    assert merged.track_id == 102 and merged.evidence == ("crops/track00102_0.jpg", "crops/track00102_lane.jpg")
    assert all((dest / p).is_file() for p in merged.evidence)
    assert evidence_kind("evidence/run/track00102.avi") is EvidenceKind.CLIP
