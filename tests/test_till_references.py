"""The till policy of lane references: which passes the till labels alone (one scan matched in
time, one item, no void, no quantity), the sampler keeping them as candidates with their origin
(bounded as the confident policy's), the consensus that accepts honest candidates and rejects a
switched item's, and dropping one lane's references from the gallery in one version."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import run_reid
from test_events import CONFIG, GALLERY, THRESHOLDS, _pass, _pos, _vec
from test_lane_references import RULES, _crop, _record
from test_lane_references import _pass as _one_pass

from retail_reid.gallery.lane_suggestions import (
    Consensus,
    LabelPolicy,
    LaneCrop,
    LaneReferenceError,
    Suggestion,
    choose_automatic,
    choose_consensus,
    read_samples,
    suggestions,
)
from retail_reid.gallery.store import GalleryStore
from retail_reid.pipeline.config import ConfigError, LaneReferenceConfig, from_table
from retail_reid.pipeline.events import EventBuilder, TillLabel
from retail_reid.pipeline.lane_references import LaneReferenceSampler
from retail_reid.pipeline.pos import PosEvent, PosEventType
from retail_reid.pipeline.recognition import Recogniser
from retail_reid.pipeline.types import Crop, ItemPass

TILL = LaneReferenceConfig(policy=LabelPolicy.TILL, per_product=3, min_gap_s=0, max_total_mb=100)


def _labels(pos: list[PosEvent], passes: list[tuple], until: float = 40.0) -> list[TillLabel]:
    """Feed POS events and passes in time order as the lane does, advancing every 0.1 s; the labels out."""
    b = EventBuilder(Recogniser(GALLERY, THRESHOLDS).judge, CONFIG, till_labels=True)
    items = sorted([(e.ts, 0, e) for e in pos] + [(p[0].t_end, 1, p) for p in passes], key=lambda x: x[:2])
    items += [(t / 10, 2, None) for t in range(int(until * 10))]
    out: list[TillLabel] = []
    for ts, kind, x in sorted(items, key=lambda x: x[:2]):
        out += b.advance(ts, [p[0].t_start for p in passes if p[0].t_start <= ts <= p[0].t_end]).labelled
        if kind == 1:
            b.add_pass(*x)
        elif kind == 0:
            b.add_pos(x)
    return out + b.flush().labelled


def test_one_scan_one_item_is_labelled_by_the_till_whatever_the_camera_saw():
    scan = _pos(1.5, PosEventType.SCAN, "Apple")
    (label,) = _labels([scan], [_pass(1, 1.0, 2.0, _vec(Banana=1))])  # the camera sees a banana
    assert (label.sku, label.item.track_id, label.scan_ts, label.txn) == ("Apple", 1, 1.5, "T1")
    assert label.seen_sku == "Banana" and label.item.crops  # given before its crops are shed


@pytest.mark.parametrize(
    ("pos", "passes"),
    [
        pytest.param([], [_pass(1, 1.0, 2.0, _vec(Apple=1))], id="no scan"),
        pytest.param(
            [_pos(1.5, PosEventType.SCAN, "Apple"), _pos(3.0, PosEventType.VOID, "Apple")],
            [_pass(1, 1.0, 2.0, _vec(Apple=1))],
            id="void",
        ),
        pytest.param(
            [
                _pos(1.2, PosEventType.SCAN, "Apple"),
                _pos(2.5, PosEventType.VOID, "Apple"),
                _pos(2.6, PosEventType.SCAN, "Apple"),
            ],
            [_pass(1, 1.0, 2.0, _vec(Apple=1))],
            id="void and rescan",
        ),
        pytest.param(
            [_pos(1.4, PosEventType.SCAN, "Apple"), _pos(1.6, PosEventType.SCAN, "Banana")],
            [_pass(1, 1.0, 2.0, _vec(Apple=1))],
            id="two scans",
        ),
        pytest.param(
            [_pos(1.5, PosEventType.SCAN, "Apple", qty=2)],
            [_pass(1, 1.0, 2.0, _vec(Apple=1)), _pass(2, 3.0, 4.0, _vec(Apple=1))],
            id="quantity",
        ),
        pytest.param(
            [_pos(1.5, PosEventType.SCAN, "Apple")],
            [_pass(1, 1.0, 2.0, _vec(Apple=1)), _pass(2, 1.2, 2.2, _vec(Apple=1))],
            id="two items",
        ),
        pytest.param(
            [PosEvent(ts=1.5, type=PosEventType.SCAN, barcode="9999", txn="T1")],
            [_pass(1, 1.0, 2.0, _vec(Apple=1))],
            id="unknown barcode",
        ),
    ],
)
def test_the_till_labels_nothing_it_cannot_vouch_for(pos, passes):
    assert _labels(pos, passes) == []


def test_the_till_policy_keeps_candidates_with_their_origin_and_ignores_verified_passes(tmp_path):
    s = LaneReferenceSampler(tmp_path, TILL, confidence=lambda x: x, lane="lane-7")
    assert s.labels == s.labelled
    item = ItemPass(track_id=4, t_start=99.0, t_end=100.0, frames=5, crops=(_crop(1),))
    label = TillLabel(item=item, sku="Apple", scan_ts=99.5, txn="T", seen_sku="Kiwi", seen_score=0.31)
    assert s.labelled(label) == 1
    ((sku, sample),) = read_samples(tmp_path).items()
    (crop,) = sample.crops
    assert sku == "Apple" and crop.policy is LabelPolicy.TILL and (crop.lane, crop.ts) == ("lane-7", 100.0)
    assert (crop.seen_sku, crop.seen_score, crop.confidence) == ("Kiwi", 0.31, 0.31)
    confident = LaneReferenceSampler(tmp_path / "c", LaneReferenceConfig(), confidence=lambda x: x)
    assert confident.labels is None and confident.labelled(label) == 0


def test_the_gap_between_sampled_passes_is_kept_per_lane_each_on_its_own_clock(tmp_path):
    """Lanes replayed one after another through one sampler each start their clock at 0: a pass of
    the second lane is not "earlier" than the first lane's last one."""
    s = LaneReferenceSampler(tmp_path, replace(TILL, min_gap_s=60), confidence=lambda x: x, lane="lane-1")
    for lane, t, kept in (("lane-1", 100.0, 1), ("lane-1", 130.0, 0), ("lane-2", 10.0, 1), ("lane-1", 170.0, 1)):
        s.lane = lane
        item = ItemPass(track_id=int(t), t_start=t - 1, t_end=t, frames=5, crops=(_crop(int(t)),))
        assert s.labelled(TillLabel(item=item, sku="Apple", scan_ts=t, txn="T", seen_sku=None, seen_score=0.2)) == kept


def test_till_candidates_are_bounded_per_product_and_in_bytes_like_the_confident_ones(tmp_path):
    s = LaneReferenceSampler(tmp_path, TILL, confidence=lambda x: x)
    for i in range(6):
        item = ItemPass(track_id=i, t_start=i, t_end=i + 1.0, frames=5, crops=(_crop(i + 10),))
        s.labelled(TillLabel(item=item, sku="Apple", scan_ts=i, txn=None, seen_sku=None, seen_score=0.0))
    assert [c.track_id for c in read_samples(tmp_path)["Apple"].crops] == [3, 4, 5]  # per_product 3, oldest gone
    assert len(list((tmp_path / "images").glob("*/*"))) == 3
    small = LaneReferenceConfig(policy=LabelPolicy.TILL, min_gap_s=0, max_total_mb=s.total_bytes() / 3 / 1e6 * 1.5)
    t = LaneReferenceSampler(tmp_path / "small", small, confidence=lambda x: x)
    for i, sku in enumerate(["Apple", "Apple", "Pear"]):
        item = ItemPass(track_id=i, t_start=i, t_end=i + 1.0, frames=5, crops=(_crop(i + 20),))
        t.labelled(TillLabel(item=item, sku=sku, scan_ts=i, txn=None, seen_sku=None, seen_score=0.0))
    assert t.total_bytes() <= small.max_total_mb * 1e6 and "Pear" in read_samples(tmp_path / "small")


def test_a_manifest_from_before_the_till_policy_reads_as_confident(tmp_path):
    (tmp_path / "products").mkdir()
    old = {"sha256": "a" * 64, "image": "images/aa/x.jpg", "bytes": 1, "confidence": 0.97, "quality": 0.5}
    body = {"sku": "Apple", "crops": [{**old, "ts": 3.0, "lane": "l", "track_id": 1}]}
    (tmp_path / "products" / "x.json").write_text(json.dumps(body))
    (crop,) = read_samples(tmp_path)["Apple"].crops
    assert crop.policy is LabelPolicy.CONFIDENT and crop.seen_sku is None and crop.seen_score is None


def test_the_policy_is_a_declared_setting():
    assert from_table(LaneReferenceConfig, {"policy": "till"}).policy is LabelPolicy.TILL
    with pytest.raises(ConfigError, match=r"lane_references.policy: must be one of confident, till, got 'scan'"):
        from_table(LaneReferenceConfig, {"policy": "scan"})


# --- consensus ---------------------------------------------------------------------------------


def _unit(*v: float) -> np.ndarray:
    a = np.array(v, np.float32)
    return a / np.linalg.norm(a)


def _candidates(sku: str, looks: list[np.ndarray], day: int = 0, lane: str = "l1"):
    """Till candidates of `sku`, one per pass, with the embeddings they would have."""
    found: list[Suggestion] = []
    vectors: dict[str, np.ndarray] = {}
    for i, v in enumerate(looks):
        sha = f"{sku}{day}{lane}{i}".encode().hex().ljust(64, "0")[:64]
        crop = LaneCrop(
            sha256=sha,
            image="",
            bytes=1,
            confidence=0.1,
            quality=1.0,
            ts=day * 86400.0 + i,
            lane=lane,
            track_id=i,
            policy=LabelPolicy.TILL,
        )
        found.append(Suggestion(sku=sku, crop=crop, path=Path(sha), folder=Path()))
        vectors[sha] = v
    return found, vectors


REFS = {"Apple": np.stack([_unit(1, 0.1, 0, 0)]), "Pear": np.stack([_unit(0, 1, 0.1, 0)])}


CONSENSUS = Consensus(margin=0.05, min_passes=3)


def _consensus(found, vectors, rules=CONSENSUS, known=frozenset()):
    return choose_consensus(
        {"Apple": found}, vectors=vectors, refs=REFS, rules=rules, max_per_product=10, lane_refs={}, known=set(known)
    )


def test_consensus_accepts_honest_candidates_and_rejects_a_switched_items():
    honest = [_unit(1, 0, 0.3, 0.1), _unit(1, 0.1, 0, 0.3), _unit(0.9, 0, 0.2, 0.2)]
    switched = [_unit(0.05, 1, 0.2, 0)]  # scanned as an apple, a pear crossed the zone
    found, vectors = _candidates("Apple", honest + switched)
    chosen = _consensus(found, vectors)
    assert sorted(s.crop.track_id for s in chosen) == [0, 1, 2]
    assert (
        choose_automatic(
            {"Apple": found}, min_confidence=0.01, max_per_product=9, products={"Apple"}, lane_refs={}, known=set()
        )
        == []
    )  # the confidence rule never takes a candidate


def test_consensus_looks_at_rival_skus_with_their_lane_crops_too():
    """Lane crops resemble each other (the 4th axis: the lane's blur and light) more than any photo:
    a pear scanned as an apple is nearer the apples' lane crops than the pears' photos, but not
    nearer them than the pears' own lane crops, so it is left out while the honest apples pass."""
    honest = [_unit(0.4, 0, 0, 1), _unit(0.4, 0.05, 0, 1), _unit(0.35, 0, 0.05, 1)]
    switched = [_unit(0.02, 0.4, 0.02, 1)]
    apples, apple_vectors = _candidates("Apple", honest + switched)
    pears, pear_vectors = _candidates("Pear", [_unit(0, 0.4, 0, 1), _unit(0.05, 0.4, 0, 1), _unit(0, 0.35, 0.05, 1)])
    vectors = apple_vectors | pear_vectors
    chosen = choose_consensus(
        {"Apple": apples, "Pear": pears},
        vectors=vectors,
        refs=REFS,
        rules=CONSENSUS,
        max_per_product=10,
        lane_refs={},
        known=set(),
    )
    assert sorted((s.sku, s.crop.track_id) for s in chosen) == [("Apple", 0), ("Apple", 1), ("Apple", 2)] + [
        ("Pear", i) for i in range(3)
    ]
    alone = _consensus(apples, apple_vectors)  # the pears' lane crops unknown: the rival is their photos
    assert 3 in {s.crop.track_id for s in alone}


def test_consensus_waits_for_enough_passes_on_enough_days():
    found, vectors = _candidates("Apple", [_unit(1, 0, 0.2, 0)] * 2)
    assert _consensus(found, vectors) == []  # 2 passes, 3 wanted
    more, more_vectors = _candidates("Apple", [_unit(1, 0, 0.1, 0.2)], day=1)
    rules = Consensus(min_passes=3, min_days=2)
    assert len(_consensus(found + more, vectors | more_vectors, rules)) == 3
    assert _consensus(found, vectors, Consensus(min_passes=2, min_days=2)) == []  # one day only
    assert _consensus(found + more, vectors | more_vectors, rules, known={found[0].crop.sha256}) == []


def test_consensus_limits_are_declared():
    with pytest.raises(LaneReferenceError, match=r"--min-days must be in \[1, 366\], got 0"):
        Consensus(min_days=0)
    with pytest.raises(LaneReferenceError, match=r"--margin must be in \[0, 1\], got 2"):
        Consensus(margin=2)


# --- the gallery: lane references recorded with their lane, dropped in one version -------------


def test_one_lanes_references_are_dropped_in_one_version(gallery_dir, tmp_path):
    for lane, seed in (("lane-1", 1), ("lane-2", 2)):
        s = LaneReferenceSampler(tmp_path / lane, RULES, confidence=lambda x: x, lane=lane)
        assert s(_one_pass(seed, _crop(seed)), _record(seed)) == 1
    folders = ["--from", tmp_path / "lane-1", "--from", tmp_path / "lane-2"]
    r = run_reid("gallery", "accept-lane-references", gallery_dir, *folders, "--min-confidence", "0.5")
    assert r.returncode == 0, r.stderr
    shown = run_reid("gallery", "show", gallery_dir, "--sku", "Lime").stdout
    assert 'lane "lane-1" at 2.000 (confident): ' in shown and 'lane "lane-2" at 3.000 (confident): ' in shown
    r = run_reid("gallery", "drop-lane", gallery_dir, "--lane", "lane-1", "--operator", "ops")
    assert r.returncode == 0, r.stderr
    assert "dropped 1 lane reference of lane 'lane-1' from 1 SKU (Lime)" in r.stdout
    with GalleryStore.open(gallery_dir, readonly=True) as store:
        assert store.lane_reference_counts() == {"Lime": 1}
        assert any(v.action == "drop-lane" and v.current for v in store.history())
    again = run_reid("gallery", "drop-lane", gallery_dir, "--lane", "lane-1")
    assert again.returncode != 0 and "no lane references of lane 'lane-1'" in again.stderr
    assert suggestions([tmp_path / "lane-1"])  # the lane's own folder is left as it was


def test_labelling_changes_no_decision_and_labels_only_clean_passes_of_the_pinned_till_lane(tmp_path, monkeypatch):
    """The pinned lane of every till case, decided with till labels on: the same bytes; each label
    is one pass, scanned once, and none of a quantity, void or double-scan case."""
    import test_simulate_pos as pinned

    labels: list[TillLabel] = []

    class Labelling(EventBuilder):
        def __init__(self, *args, **kw):
            super().__init__(*args, till_labels=True, **kw)

        def _decisions(self, events):
            decided = super()._decisions(events)
            labels.extend(decided.labelled)
            return decided

    monkeypatch.setattr(pinned, "EventBuilder", Labelling)
    pinned.test_the_event_builder_decides_a_till_lane_as_pinned_to_the_byte(tmp_path)
    truth = json.loads((pinned.PINNED / "truth.json").read_text())
    spans = {(p["t_start"], p["t_end"]): p for p in truth["passes"]}
    ambiguous = {(c["t_start"], c["t_end"]) for c in truth["pos_cases"] if c["case"] != "keyed"}
    assert labels and len({x.item.track_id for x in labels}) == len(labels)
    for x in labels:
        span = (round(x.item.t_start, 3), round(x.item.t_end, 3))
        assert span not in ambiguous and spans[span]["scanned_sku"] == x.sku


def test_accept_lane_references_takes_honest_till_candidates_and_leaves_a_switched_item_out(gallery_dir, tmp_path):
    """Through `reid gallery` with the shipped model: four passes of bananas scanned as bananas,
    one Granny-Smith apple scanned as a banana (a switch): the bananas become references."""
    import cv2

    val = Path(__file__).resolve().parents[1] / "sample" / "grocery" / "val"
    crops = [*sorted((val / "Banana").glob("*.jpg"))[:4], sorted((val / "Granny-Smith").glob("*.jpg"))[0]]
    rules = LaneReferenceConfig(policy=LabelPolicy.TILL, min_gap_s=0)
    s = LaneReferenceSampler(tmp_path / "lane-3", rules, lambda x: x, lane="lane-3")
    for i, path in enumerate(crops):
        image = cv2.resize(cv2.imread(str(path)), (160, 160))
        item = ItemPass(
            track_id=i,
            t_start=i,
            t_end=i + 1.0,
            frames=5,
            crops=(Crop(image=image, ts=i, box=(0, 0, 160, 160), quality=1.0),),
        )
        assert s.labelled(TillLabel(item=item, sku="Banana", scan_ts=i, txn=None, seen_sku=None, seen_score=0.0)) == 1
    r = run_reid("gallery", "accept-lane-references", gallery_dir, "--from", tmp_path / "lane-3", "--min-passes", "3")
    assert r.returncode == 0, r.stderr
    assert "accept-lane-references: 4 references for 1 SKU (Banana)" in r.stdout
    shown = run_reid("gallery", "show", gallery_dir, "--sku", "Banana").stdout
    assert shown.count('lane "lane-3" at ') == 4 and "at 5.000 (till)" not in shown  # the apple (pass 4) left out
    r = run_reid("gallery", "accept-lane-references", gallery_dir, "--from", tmp_path / "lane-3", "--min-days", "0")
    assert r.returncode == 2 and "--min-days must be in [1, 366], got 0" in r.stderr
