"""`retail_reid.pipeline.evidence`: the one evidence-crop writer, which gives up pictures (the edge)
or fails (the replay) when they cannot be written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retail_reid.pipeline.evidence import EvidenceError, EvidenceWriter
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
