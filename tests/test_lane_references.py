"""Lane references: which decided passes keep crops (verdict ok, confident, usable crops), the caps
per product and in total, crash leftovers, the strict [lane_references] table, the lane's hook, the
gallery's origin column (old galleries migrated) and the automatic mode's rules."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from gallery_fixtures import run_reid

from retail_reid.gallery.lane_suggestions import IMAGES, choose_automatic, read_samples, references_folder, suggestions
from retail_reid.gallery.store import GalleryStore
from retail_reid.pipeline.config import ConfigError, LaneConfig, LaneReferenceConfig, from_table
from retail_reid.pipeline.lane_references import LaneReferenceSampler
from retail_reid.pipeline.records import PassRecord, Verdict
from retail_reid.pipeline.types import Crop, ItemPass

SAMPLE_VAL = Path(__file__).resolve().parents[1] / "sample" / "grocery" / "val"
RULES = LaneReferenceConfig(min_confidence=0.9, per_product=3, min_gap_s=0, max_total_mb=100)


def _crop(seed: int, side: int = 96) -> Crop:
    """A sharp, textured crop unique to `seed`."""
    image = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return Crop(image=image, ts=float(seed), box=(0, 0, side, side), quality=float(seed))


def _pass(track: int, *crops: Crop) -> ItemPass:
    return ItemPass(track_id=track, t_start=track, t_end=track + 1.0, frames=5, crops=crops)


def _record(track: int, verdict: Verdict = Verdict.OK, seen: str = "Lime", scanned: str = "Lime", score: float = 0.95):
    return PassRecord(
        track_id=track,
        t_start=track,
        t_end=track + 1.0,
        verdict=verdict,
        seen_sku=seen,
        seen_score=score,
        scanned_sku=scanned,
    )


def _sampler(root: Path, rules: LaneReferenceConfig = RULES) -> LaneReferenceSampler:
    return LaneReferenceSampler(root, rules, confidence=lambda s: s, lane="lane-1")


def test_only_confidently_verified_passes_with_usable_crops_are_kept(tmp_path):
    s = _sampler(tmp_path)
    assert s(_pass(1, _crop(1)), _record(1)) == 1
    assert s(_pass(2, _crop(2)), _record(2, verdict=Verdict.PRODUCT_SWITCH, seen="Kiwi")) == 0
    assert s(_pass(3, _crop(3)), _record(3, verdict=Verdict.UNCONFIRMED)) == 0
    assert s(_pass(4, _crop(4)), _record(4, score=0.5)) == 0  # under min_confidence
    assert s(_pass(5, _crop(5, side=20)), _record(5)) == 0  # too small
    flat = Crop(image=np.full((96, 96, 3), 128, np.uint8), ts=0, box=(0, 0, 96, 96), quality=1)
    assert s(_pass(6, flat), _record(6)) == 0  # no detail: not sharp
    kept = read_samples(tmp_path)["Lime"].crops
    assert [(c.track_id, c.lane, c.confidence) for c in kept] == [(1, "lane-1", 0.95)]
    assert (tmp_path / kept[0].image).is_file()


def test_per_product_cap_evicts_the_oldest_and_the_gap_limits_sampling(tmp_path):
    s = _sampler(tmp_path)
    for t in range(1, 6):
        s(_pass(t, _crop(t)), _record(t))
    crops = read_samples(tmp_path)["Lime"].crops
    assert [c.track_id for c in crops] == [3, 4, 5]
    assert len(list((tmp_path / IMAGES).glob("*/*.jpg"))) == 3  # evicted files deleted
    gapped = _sampler(tmp_path / "g", LaneReferenceConfig(min_gap_s=30))
    assert gapped(_pass(1, _crop(1)), _record(1)) == 1
    assert gapped(_pass(2, _crop(2)), _record(2)) == 0  # one second later: too soon for the same product


def test_the_total_cap_takes_from_the_product_with_most_crops(tmp_path):
    one = len(cv2.imencode(".jpg", _crop(1).image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1])
    s = _sampler(tmp_path, LaneReferenceConfig(per_product=10, min_gap_s=0, max_total_mb=3.5 * one / 1e6))
    for t in range(1, 4):
        s(_pass(t, _crop(t)), _record(t))
    s(_pass(9, _crop(9)), _record(9, seen="Kiwi", scanned="Kiwi"))
    samples = read_samples(tmp_path)
    assert [c.track_id for c in samples["Lime"].crops] == [2, 3] and len(samples["Kiwi"].crops) == 1


def test_a_crop_left_by_a_crash_without_its_manifest_is_removed(tmp_path):
    s = _sampler(tmp_path)
    s(_pass(1, _crop(1)), _record(1))
    stray = tmp_path / IMAGES / "00" / ("0" * 64 + ".jpg")
    stray.parent.mkdir()
    stray.write_bytes(b"torn")
    _sampler(tmp_path)
    assert not stray.exists() and len(read_samples(tmp_path)["Lime"].crops) == 1


def test_the_settings_table_is_strict():
    cfg = from_table(LaneConfig, {"lane_references": {"enabled": True, "per_product": 5}})
    assert cfg.lane_references.enabled and cfg.lane_references.per_product == 5
    with pytest.raises(ConfigError, match=r"unknown key 'lane_references\.per_sku'"):
        from_table(LaneConfig, {"lane_references": {"per_sku": 5}})
    with pytest.raises(ConfigError, match=r"lane_references\.min_confidence: must be in"):
        from_table(LaneConfig, {"lane_references": {"min_confidence": 1.5}})


def test_a_manifest_cannot_point_outside_its_folder(tmp_path):
    s = _sampler(tmp_path)
    s(_pass(1, _crop(1)), _record(1))
    manifest = next((tmp_path / "products").glob("*.json"))
    data = json.loads(manifest.read_text())
    data["crops"][0]["image"] = "../../etc/passwd"
    manifest.write_text(json.dumps(data))
    assert suggestions([tmp_path]) == {}


def test_the_lane_gives_each_decided_pass_with_its_crops_once(built_gallery):
    from retail_reid.gallery import Gallery
    from retail_reid.pipeline.events import Decisions
    from retail_reid.pipeline.lane import LaneProcessor
    from retail_reid.pipeline.types import Zone

    seen: list[tuple[ItemPass, PassRecord]] = []
    lane = LaneProcessor(Gallery.open(built_gallery), Zone(0, 0, 64, 64), references=lambda i, r: seen.append((i, r)))
    item = _pass(7, _crop(7))
    lane._items[7] = item  # as `_recognise` leaves an undecided pass
    # the event builder decides it, and a pass the lane never held (no crops to give)
    result = lane._result(Decisions(passes=[_record(7), _record(8)]))
    assert seen == [(item, _record(7))] and lane._items == {}
    assert [r.track_id for r in result.passes] == [7, 8]


def _old_gallery(gallery: Path) -> None:
    """Make a gallery look like one written before references had an origin."""
    conn = sqlite3.connect(gallery / "gallery.db")
    conn.execute("ALTER TABLE refs DROP COLUMN origin")
    conn.commit()
    conn.close()


def test_old_galleries_read_as_photos_and_are_migrated_on_the_first_change(gallery_dir, tmp_path):
    _old_gallery(gallery_dir)
    with GalleryStore.open(gallery_dir, readonly=True) as store:
        assert {r.origin for r in store.product("Lime")[1]} == {"photo"}
    s = _sampler(tmp_path / "refs")
    s(_pass(1, _crop(1)), _record(1))
    r = run_reid("gallery", "accept-lane-references", gallery_dir, "--from", tmp_path / "refs", "--operator", "auto")
    assert r.returncode == 0, r.stderr
    assert "accept-lane-references: 1 reference for 1 SKU (Lime)" in r.stdout
    shown = run_reid("gallery", "show", gallery_dir, "--sku", "Lime")
    lines = [x for x in shown.stdout.splitlines() if " lane " in x]
    assert len(lines) == 1 and "refs/images" in lines[0]
    again = run_reid("gallery", "accept-lane-references", gallery_dir, "--from", tmp_path / "refs")
    assert again.returncode == 0 and "nothing to accept" in again.stdout  # already a reference


def test_automatic_rules(tmp_path):
    s = _sampler(tmp_path, LaneReferenceConfig(per_product=10, min_gap_s=0))
    for t, score in ((1, 0.91), (2, 0.99), (3, 0.97), (4, 0.96)):
        s(_pass(t, _crop(t)), _record(t, score=score))
    s(_pass(8, _crop(8)), _record(8, seen="Unknown-Thing", scanned="Unknown-Thing", score=0.99))
    found = suggestions([references_folder(tmp_path)])
    top = found["Lime"][0].crop.sha256
    chosen = choose_automatic(
        found, min_confidence=0.95, max_per_product=3, products={"Lime"}, lane_refs={"Lime": 1}, known={top}
    )
    assert [c.crop.confidence for c in chosen] == [0.97, 0.96]  # 0.99 already in, 0.91 too low, room for 2


def test_accept_lane_references_refuses_bad_input_in_one_line(gallery_dir, tmp_path):
    r = run_reid("gallery", "accept-lane-references", gallery_dir, "--from", tmp_path)
    assert r.returncode == 2 and "no lane references here" in r.stderr
    r = run_reid("gallery", "accept-lane-references", gallery_dir, "--from", tmp_path, "--min-confidence", "2")
    assert r.returncode == 2 and "--min-confidence must be in (0, 1)" in r.stderr


def test_reid_edge_samples_under_its_state_folder_only_when_enabled(built_gallery, tmp_path):
    from retail_reid.gallery import Gallery
    from retail_reid.gallery.lane_suggestions import FOLDER
    from retail_reid.pipeline.lane_references import lane_reference_sampler

    gallery = Gallery.open(built_gallery)
    assert lane_reference_sampler(tmp_path, LaneConfig(), gallery, "lane-1") is None
    on = from_table(LaneConfig, {"lane_references": {"enabled": True}})
    sampler = lane_reference_sampler(tmp_path, on, gallery, "lane-1")
    assert sampler is not None and sampler.root == tmp_path / FOLDER and sampler.lane == "lane-1"
    assert sampler.confidence(0.9) == pytest.approx(float(gallery.calibration.confidence(0.9)))
