"""The hard camera and customers of the simulator: small, blurred, hand-covered items close behind
each other, JPEG blocks, and switches to look-alikes of the same coarse class."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from retail_reid.cli import main
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.harness.simulate import (
    HARD_SETTINGS,
    Difficulty,
    SimConfig,
    SimulationError,
    _hand,
    _jpeg,
    _Look,
    _switch_sku,
    find_coarse_classes,
    read_coarse_classes,
    simulate,
)

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "grocery"
VAL = SAMPLE / "val"


@pytest.fixture(scope="module")
def coarse():
    return read_coarse_classes(SAMPLE / "classes.csv")


def test_sample_ships_its_coarse_classes(coarse):
    assert find_coarse_classes(VAL) == SAMPLE / "classes.csv"
    assert set(coarse) == {p.name for p in VAL.iterdir()}
    assert coarse["Granny-Smith"] == coarse["Pink-Lady"] == "Apple"
    assert coarse["Arla-Standard-Milk"] == "Milk"


def test_a_bad_classes_file_is_named(tmp_path):
    bad = tmp_path / "classes.csv"
    bad.write_text("name,kind\nKiwi,Fruit\n")
    with pytest.raises(SimulationError, match=r"classes\.csv: expected a CSV header"):
        read_coarse_classes(bad)
    with pytest.raises(SimulationError, match="cannot read"):
        read_coarse_classes(tmp_path / "missing.csv")


def test_switches_go_to_a_lookalike_at_the_rate_asked(coarse):
    skus = sorted(coarse)
    rng = np.random.default_rng(0)
    picks = [_switch_sku("Granny-Smith", skus, coarse, 0.8, rng) for _ in range(400)]
    share = picks.count("Pink-Lady") / len(picks)
    # 80 % look-alikes, plus the random picks that land on the one other apple by chance (1/11 of 20 %).
    assert 0.75 < share < 0.90
    assert "Granny-Smith" not in picks
    assert all(_switch_sku("Kiwi", skus, coarse, 1.0, rng) != "Kiwi" for _ in range(50))  # no other kiwi: any SKU
    plain = [_switch_sku("Granny-Smith", skus, coarse, 0.0, rng) for _ in range(400)]
    assert plain.count("Pink-Lady") / len(plain) < 0.2


def test_lookalike_switches_need_coarse_classes(tmp_path):
    cfg = SimConfig.preset(Difficulty.HARD, passes=2, transactions=1, switch_rate=0.5)
    with pytest.raises(SimulationError, match="coarse classes"):
        simulate(folder_set(VAL), tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cover", [0.1, 0.2, 1 / 3])
@pytest.mark.parametrize("side", ["behind", "below"])
def test_the_hand_covers_the_share_asked(cover, side):
    canvas = np.zeros((300, 300, 4), np.float32)
    canvas[100:200, 100:190, 3] = 1.0  # the product's alpha
    product = canvas[..., 3] > 0.5
    _hand(canvas, (100, 100, 190, 200), side, np.random.default_rng(1), cover)
    skin = canvas[..., :3].max(axis=-1) > 10
    covered = np.count_nonzero(skin & product) / np.count_nonzero(product)
    assert cover * 0.9 < covered < cover * 1.25


def test_hard_items_are_small_and_smeared_along_their_travel():
    look = _Look(VAL / "Kiwi" / "Kiwi_001.jpg", seed=3, long_side=100.0, hand="behind", blur_px=14.0, hand_cover=0.3)
    still, blurred, _, width = look.sprites()
    assert 60 <= width <= 120
    # Horizontal smear: the blurred sprite loses horizontal detail far more than vertical.
    gray = cv2.cvtColor(np.ascontiguousarray(blurred[..., :3]), cv2.COLOR_BGR2GRAY)
    still_gray = cv2.cvtColor(np.ascontiguousarray(still[..., :3]), cv2.COLOR_BGR2GRAY)
    dx, dy = np.abs(np.diff(gray, axis=1)).mean(), np.abs(np.diff(gray, axis=0)).mean()
    assert dx < 0.6 * dy
    assert np.abs(np.diff(still_gray, axis=1)).mean() > dx


def test_jpeg_round_trip_makes_blocks_and_off_leaves_the_frame():
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert _jpeg(frame, 0) is frame
    out = _jpeg(frame, 35)
    assert out.shape == frame.shape and np.abs(out.astype(int) - frame).mean() > 10


def test_a_hard_lane_has_two_items_in_the_zone_at_once(coarse, tmp_path):
    cfg = SimConfig.preset(
        Difficulty.HARD, passes=6, transactions=1, pair_rate=1.0, pause_rate=0.0, switch_rate=0.5, seed=2
    )
    assert cfg.item_px == HARD_SETTINGS["item_px"] and cfg.difficulty is Difficulty.HARD
    truth = simulate(folder_set(VAL), tmp_path, cfg, coarse=coarse).truth
    overlapping = [a.t_start <= b.t_end and b.t_start <= a.t_end for a, b in itertools.pairwise(truth.passes)]
    assert any(overlapping)
    switches = [a for a in truth.anomalies if a.type == "product_switch"]
    assert len(switches) == 3 and all(a.scanned_sku != a.seen_sku for a in switches)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(item_px=(10.0, 50.0)), "item size"),
        (dict(item_px=(120.0, 80.0)), "item size"),
        (dict(shutter=1.5), "shutter"),
        (dict(jpeg_quality=2), "jpeg quality"),
        (dict(hand_cover=0.7), "hand cover"),
        (dict(pair_gap=(30.0, 10.0)), "pair gap"),
        (dict(lookalike_rate=-0.1), "lookalike_rate"),
    ],
)
def test_bad_camera_settings_are_refused(change, needle):
    with pytest.raises(SimulationError, match=needle):
        SimConfig(**change).check()


def test_cli_difficulty_hard_with_a_flag_overriding_it(tmp_path, capsys):
    args = ["simulate", str(tmp_path / "lane"), "--images", str(VAL), "--passes", "4", "--transactions", "1"]
    args += ["--size", "320x240", "--fps", "10", "--switch-rate", "0.5", "--quiet"]
    assert main([*args, "--difficulty", "hard", "--jpeg-quality", "60", "--item-size", "70-90"]) == 0
    truth = json.loads((tmp_path / "lane" / "truth.json").read_text())
    assert sum(a["type"] == "product_switch" for a in truth["anomalies"]) == 2  # coarse classes found beside VAL
    assert main([*args[:1], str(tmp_path / "bad"), *args[2:], "--item-size", "90-70"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "item size" in err
    with pytest.raises(SystemExit) as stop:  # argparse's own usage error
        main([*args[:1], str(tmp_path / "bad"), *args[2:], "--pair-gap", "x"])
    assert stop.value.code == 2
    assert "expected MIN-MAX" in capsys.readouterr().err
