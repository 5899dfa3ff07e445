"""The lane simulator: reproducible, readable video; a POS log and truth that agree with each
other and with what the video shows; refusals that name the problem and keep existing files."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from retail_reid.cli import main
from retail_reid.images import ImageError
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.harness.score import read_truth
from retail_reid.pipeline.harness.simulate import SimConfig, SimulationError, simulate
from retail_reid.pipeline.pos import read_pos_log

VAL = Path(__file__).resolve().parents[1] / "sample" / "grocery" / "val"
SMALL = dict(width=320, height=240, fps=10.0)


@pytest.fixture(scope="module")
def photos():
    return folder_set(VAL)


@pytest.fixture(scope="module")
def scenario(photos, tmp_path_factory):
    """One full-size scenario with every kind of anomaly, pairs and pauses (about 14 s of video)."""
    cfg = SimConfig(
        passes=6,
        transactions=2,
        non_scan_rate=0.2,
        switch_rate=0.2,
        scan_without_item_rate=0.2,
        pair_rate=0.5,
        pause_rate=0.5,
        seed=7,
    )
    return simulate(photos, tmp_path_factory.mktemp("lane"), cfg), cfg


def read_frames(path: Path) -> tuple[list[np.ndarray], float, int]:
    cap = cv2.VideoCapture(str(path))
    fps, count = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps, count


def test_video_reads_back_with_its_frame_count_fps_and_size(scenario):
    result, cfg = scenario
    assert result.video.name == "video.mp4"
    frames, fps, count = read_frames(result.video)
    assert len(frames) == count == result.frames
    assert fps == pytest.approx(cfg.fps)
    assert frames[0].shape == (cfg.height, cfg.width, 3)
    assert result.frames == pytest.approx(result.truth.passes[-1].t_end * cfg.fps, abs=5 * cfg.fps)


def test_items_are_in_the_zone_exactly_when_truth_says(scenario):
    result, cfg = scenario
    frames, _, _ = read_frames(result.video)
    x1, y1, x2, y2 = result.truth.zone
    empty = frames[0][y1:y2, x1:x2].astype(np.float32)

    def change(t: float) -> float:
        zone = frames[round(t * cfg.fps)][y1:y2, x1:x2].astype(np.float32)
        return float(np.mean(np.abs(zone * (empty.mean() / zone.mean()) - empty)))  # lighting drift divided out

    for p in result.truth.passes:
        assert change((p.t_start + p.t_end) / 2) > 8, p
    spans = sorted((p.t_start, p.t_end) for p in result.truth.passes)
    gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in itertools.pairwise(spans) if b_start - a_end > 1.2]
    assert gaps, "the scenario should have idle moments between passes"
    for a_end, b_start in gaps:
        assert change((a_end + b_start) / 2) < 4, (a_end, b_start)
    assert change(0.2) < 4


def test_truth_and_pos_log_agree(scenario):
    result, _ = scenario
    truth = read_truth(result.truth_path)
    assert truth == result.truth
    assert truth.zone == (192, 86, 448, 413) and truth.size == (640, 480) and truth.video == "video.mp4"
    events, warnings = read_pos_log(result.pos_path)
    assert warnings == [] and tuple(events) == tuple(
        dataclasses.replace(e, line=i) for i, e in enumerate(result.pos, start=1)
    )
    scans = [e for e in events if e.type == "scan"]
    skus = set(folder_set(VAL).labels)
    kinds = [a.type for a in truth.anomalies]
    assert kinds.count("non_scan") == kinds.count("product_switch") == kinds.count("scan_without_item") == 1
    for p in truth.passes:
        assert p.sku in skus and p.t_start < p.t_end
        if p.scanned_sku is not None:  # the scan falls within a second of the item crossing the scanner
            assert any(
                s.sku == p.scanned_sku and s.txn == p.txn and p.t_start - 1 <= s.ts <= p.t_end + 1 for s in scans
            )
    for a in truth.anomalies:
        if a.type == "product_switch":
            assert a.scanned_sku in skus and a.scanned_sku != a.seen_sku
        if a.type == "scan_without_item":
            assert a.t_start == a.t_end and any(s.ts == a.t_start and s.sku == a.scanned_sku for s in scans)
            assert all(abs(a.t_start - p.t_start) > 1.5 and abs(a.t_start - p.t_end) > 1.5 for p in truth.passes)
    assert len(scans) == sum(p.scanned_sku is not None for p in truth.passes) + 1
    for txn in ("T1", "T2"):
        start = next(e.ts for e in events if e.type == "txn_start" and e.txn == txn)
        end = next(e.ts for e in events if e.type == "txn_end" and e.txn == txn)
        assert all(start < p.t_start and p.t_end < end for p in truth.passes if p.txn == txn)


def test_same_seed_same_bytes_other_seed_other_scenario(photos, tmp_path):
    cfg = SimConfig(passes=3, transactions=1, pair_rate=0.5, pause_rate=0.5, seed=11, **SMALL)
    a, b = simulate(photos, tmp_path / "a", cfg), simulate(photos, tmp_path / "b", cfg)
    for name in ("video.mp4", "pos.jsonl", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    c = simulate(photos, tmp_path / "c", SimConfig(**{**cfg.__dict__, "seed": 12}))
    assert c.truth != a.truth and a.truth == b.truth


def test_rates_become_exact_counts(photos, tmp_path):
    cfg = SimConfig(
        passes=10,
        transactions=3,
        non_scan_rate=0.3,
        switch_rate=0.2,
        scan_without_item_rate=0.2,
        pair_rate=0.0,
        pause_rate=0.0,
        noise=0.0,
        lighting=0.0,
        seed=1,
        **SMALL,
    )
    truth = simulate(photos, tmp_path, cfg).truth
    kinds = [a.type for a in truth.anomalies]
    assert (kinds.count("non_scan"), kinds.count("product_switch"), kinds.count("scan_without_item")) == (3, 2, 2)
    assert len(truth.passes) == 10 and {p.txn for p in truth.passes} == {"T1", "T2", "T3"}
    # Without pairs, each item has left the zone before the next one enters.
    assert all(a.t_end < b.t_start for a, b in itertools.pairwise(truth.passes))


def test_existing_scenario_is_kept_unless_overwrite(photos, tmp_path):
    cfg = SimConfig(passes=1, transactions=1, switch_rate=0.0, non_scan_rate=0.0, **SMALL)
    (tmp_path / "truth.json").write_text("precious")
    with pytest.raises(SimulationError, match=r"already holds truth\.json"):
        simulate(photos, tmp_path, cfg)
    assert (tmp_path / "truth.json").read_text() == "precious" and not (tmp_path / "video.mp4").exists()
    simulate(photos, tmp_path, cfg, overwrite=True)
    assert json.loads((tmp_path / "truth.json").read_text())["video"] == "video.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pos.jsonl", "truth.json", "video.mp4"]


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(passes=0), "passes must be at least 1"),
        (dict(transactions=5, passes=3), "transactions must be between 1 and passes"),
        (dict(pair_rate=1.5), "pair_rate must be between 0 and 1"),
        (dict(non_scan_rate=0.6, switch_rate=0.6), "must not exceed 1"),
        (dict(fps=0.5), "fps must be between"),
        (dict(width=100), "frame size"),
        (dict(noise=-1.0), "noise"),
    ],
)
def test_bad_settings_are_refused(photos, tmp_path, change, needle):
    with pytest.raises(SimulationError, match=needle):
        simulate(photos, tmp_path / "out", SimConfig(**change))
    assert not (tmp_path / "out").exists()


def test_switches_need_two_skus(tmp_path):
    one = tmp_path / "photos" / "Kiwi"
    one.mkdir(parents=True)
    (one / "k.jpg").write_bytes((VAL / "Kiwi" / "Kiwi_001.jpg").read_bytes())
    with pytest.raises(SimulationError, match="at least two SKUs"):
        simulate(folder_set(tmp_path / "photos"), tmp_path / "out", SimConfig(passes=2, switch_rate=0.5, **SMALL))
    result = simulate(
        folder_set(tmp_path / "photos"), tmp_path / "ok", SimConfig(passes=2, switch_rate=0.0, pair_rate=1.0, **SMALL)
    )
    assert {p.sku for p in result.truth.passes} == {"Kiwi"}


def test_cli_prints_the_zone_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "lane"
    assert (
        main(
            [
                "simulate",
                str(out),
                "--images",
                str(VAL),
                "--passes",
                "2",
                "--transactions",
                "1",
                "--size",
                "320x240",
                "--fps",
                "10",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    zone = json.loads((out / "truth.json").read_text())["zone"]
    assert f"zone: --zone {','.join(map(str, zone))}" in printed and "video.mp4" in printed
    assert main(["simulate", str(out), "--images", str(VAL)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds" in err and "--overwrite" in err
    assert main(["simulate", str(tmp_path / "x"), "--images", str(tmp_path / "missing")]) == 2
    assert "no such folder or split file" in capsys.readouterr().err


def test_unreadable_photo_is_named_and_nothing_is_written(tmp_path):
    photos = tmp_path / "photos"
    for sku in ("Kiwi", "Lime"):
        (photos / sku).mkdir(parents=True)
    (photos / "Kiwi" / "k.jpg").write_bytes((VAL / "Kiwi" / "Kiwi_001.jpg").read_bytes())
    (photos / "Lime" / "broken.jpg").write_bytes((VAL / "Lime" / "Lime_001.jpg").read_bytes()[:2000])
    out = tmp_path / "out"
    with pytest.raises(ImageError, match=r"broken\.jpg: image file is truncated"):
        simulate(folder_set(photos), out, SimConfig(passes=6, seed=3, **SMALL))
    assert not out.exists()
