"""Till cases in simulated lanes (quantity scans, voids, keyed produce, double scans): planted as
asked, recorded in truth.json, and decided right by the event logic when the camera is perfect,
so that quantity scans, legitimate voids and double scans draw no loss alert."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from retail_reid.cli import main
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.events import EventBuilder
from retail_reid.pipeline.harness.score import read_events, read_truth, score
from retail_reid.pipeline.harness.simulate import SimConfig, SimulationError, read_coarse_classes, simulate
from retail_reid.pipeline.harness.simulate_pos import PosCaseKind, TillRates
from retail_reid.pipeline.pos import EntryMethod, PosEventType, read_pos_log
from retail_reid.pipeline.recognition import Recogniser, Recognition, Thresholds
from retail_reid.pipeline.types import Crop, ItemPass

VAL = Path(__file__).resolve().parents[1] / "sample" / "grocery" / "val"
# A simulated till lane (the `lane` fixture's settings, seed 11, 320x240; its truth and POS log) and what
# the event builder decided over it when it still handed pass records out through a callback: pinned.
PINNED = Path(__file__).resolve().parent / "data" / "till_lane"
TILL = TillRates(quantity=0.15, void=0.15, void_kept=0.05, double_scan=0.05, keyed=0.05, keyed_switch=0.05)


@pytest.fixture(scope="module", params=[11, 13, 15])
def lane(request, tmp_path_factory):
    """40 passes, every till case; few frames and no pairs (the event logic is what is tested here,
    and items with a till case always cross alone)."""
    cfg = SimConfig(passes=40, transactions=4, fps=5.0, noise=0.0, pair_rate=0.0, till=TILL, seed=request.param)
    out = tmp_path_factory.mktemp("till")
    simulate(folder_set(VAL), out, cfg)
    return out


def test_every_till_case_is_planted_and_recorded(lane):
    truth = read_truth(lane / "truth.json")
    cases = Counter(c.case for c in truth.pos_cases)
    # 40 passes: 6 in quantity runs, 6 legitimate voids (2 of each kind), 2 of each other case
    assert (
        cases[PosCaseKind.VOID_RESCANNED] == cases[PosCaseKind.VOID_NOT_KEPT] == cases[PosCaseKind.DOUBLE_VOIDED] == 2
    )
    assert cases[PosCaseKind.VOID_KEPT] == cases[PosCaseKind.DOUBLE_SCAN] == 2
    assert cases[PosCaseKind.KEYED] == cases[PosCaseKind.KEYED_SWITCH] == 2 and cases[PosCaseKind.QUANTITY] >= 1
    pos, warnings = read_pos_log(lane / "pos.jsonl")
    assert warnings == []
    qty = [e for e in pos if e.qty > 1]
    assert sum(e.qty for e in qty) == sum(
        1
        for p in truth.passes
        for c in truth.pos_cases
        if c.case == "quantity" and c.t_start <= p.t_start and p.t_end <= c.t_end
    )
    assert sum(e.type is PosEventType.VOID for e in pos) == 8  # 2 each: rescanned, not kept, double voided, kept
    keyed = [e for e in pos if e.entry is not EntryMethod.SCANNED]
    assert len(keyed) == 4 and all(e.weight_kg is not None for e in keyed if e.entry is EntryMethod.WEIGHED)
    anomalies = Counter(a.type for a in truth.anomalies)
    assert anomalies["double_scan"] == 2
    assert sum(a.voided_sku is not None for a in truth.anomalies) == 2
    assert sum(a.entry is not None for a in truth.anomalies if a.type == "product_switch") == 2


class OneHotGallery:
    """A perfect camera: each SKU its own direction, so recognition is never wrong."""

    def __init__(self, skus: list[str]):
        self.skus = skus

    def vector(self, sku: str) -> np.ndarray:
        return np.eye(len(self.skus), dtype=np.float32)[self.skus.index(sku)]

    def match(self, embeddings: np.ndarray, k: int = 5):
        from test_events import Match

        return [
            [Match(self.skus[i], float(e[i]), (float(e[i]) + 1) / 2) for i in np.argsort(-e)[:k]] for e in embeddings
        ]

    def verify(self, embedding: np.ndarray, sku: str):
        from test_events import Check

        sim = float(embedding[self.skus.index(sku)])
        j = max((i for i in range(len(self.skus)) if self.skus[i] != sku), key=lambda i: embedding[i])
        return Check(sku, sim, (sim + 1) / 2, self.skus[j], float(embedding[j]), sim - float(embedding[j]))

    def has_sku(self, sku: str) -> bool:
        return sku in self.skus

    def sku_for_barcode(self, code: str) -> None:
        return None


def _decide(lane: Path, out: Path) -> Path:
    """The event logic over the lane's POS log and its true passes, stepped frame by frame as the lane
    does: OUT/events.jsonl (returned) and OUT/passes.jsonl."""
    truth = read_truth(lane / "truth.json")
    pos, _ = read_pos_log(lane / "pos.jsonl")
    gallery = OneHotGallery(sorted({p.sku for p in truth.passes} | {e.sku for e in pos if e.sku}))
    builder = EventBuilder(Recogniser(gallery, Thresholds(0.5, 0.7, 0.5, 0.05)).judge)
    crop = Crop(image=np.zeros((8, 8, 3), np.uint8), ts=0.0, box=(0, 0, 8, 8), quality=1.0)
    waiting = sorted(truth.passes, key=lambda p: p.t_end)
    decisions = []
    for step in range(int((max(e.ts for e in pos) + 15) * truth.fps)):
        now = step / truth.fps
        while pos and pos[0].ts <= now:
            builder.add_pos(pos.pop(0))
        while waiting and waiting[0].t_end <= now:
            p = waiting.pop(0)
            item = ItemPass(track_id=step, t_start=p.t_start, t_end=p.t_end, frames=5, crops=(crop,))
            e = gallery.vector(p.sku)
            builder.add_pass(item, Recognition(embedding=e, matches=tuple(gallery.match(e[None])[0])))
        decisions.append(builder.advance(now, [p.t_start for p in waiting if p.t_start <= now]))
    decisions.append(builder.flush())
    events = [e for d in decisions for e in d.events]
    records = [r for d in decisions for r in d.passes]
    (out / "passes.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    path = out / "events.jsonl"
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    return path


def test_the_event_builder_decides_a_till_lane_as_pinned_to_the_byte(tmp_path):
    """Every alert, basket and pass record of a lane with every till case, byte for byte as pinned."""
    assert _decide(PINNED, tmp_path).read_bytes() == (PINNED / "events.jsonl").read_bytes()
    assert (tmp_path / "passes.jsonl").read_bytes() == (PINNED / "passes.jsonl").read_bytes()


def test_with_a_perfect_camera_till_cases_draw_no_false_alert_and_every_anomaly_is_found(lane, tmp_path):
    truth = read_truth(lane / "truth.json")
    s = score(truth, read_events(_decide(lane, tmp_path)))
    assert {t.type: (t.recall, t.precision) for t in s.types} == {
        "non_scan": (1.0, 1.0),
        "product_switch": (1.0, 1.0),
        "scan_without_item": (1.0, 1.0),
        "double_scan": (1.0, 1.0),
    }
    assert s.rates.false_loss_alerts == 0 and s.rates.false_per_100_passes == 0.0 and s.errors == ()
    assert all(c.false_loss_alerts == 0 for c in s.cases) and len(s.cases) == len(PosCaseKind)
    assert s.baskets.scanned_exact == s.baskets.seen_exact == s.baskets.transactions == 4


def test_till_rates_are_checked_and_count_against_the_passes():
    with pytest.raises(SimulationError, match="void-kept rate must be between 0 and 1"):
        SimConfig(till=TillRates(void_kept=1.5)).check()
    with pytest.raises(SimulationError, match="must not add up to more than 1"):
        SimConfig(non_scan_rate=0.5, switch_rate=0.3, till=TillRates(quantity=0.3)).check()


def test_reid_simulate_takes_the_till_flags_and_names_a_bad_rate(tmp_path, capsys):
    args = ["simulate", str(tmp_path / "lane"), "--images", str(VAL), "--passes", "8", "--size", "320x240"]
    args += ["--fps", "5", "--quiet", "--void-kept-rate", "0.25", "--keyed-switch-rate", "0.25"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "till cases: " in out and "2 void_kept" in out and "2 keyed_switch" in out
    assert main([*args[:3], str(VAL), "--double-scan-rate", "-0.1", "--overwrite"]) == 2
    assert "reid simulate: error: double-scan rate must be between 0 and 1, got -0.1" in capsys.readouterr().err


def test_keyed_switches_key_a_look_alike_as_switches_do(tmp_path):
    coarse = read_coarse_classes(VAL.parent / "classes.csv")
    till = TillRates(keyed_switch=0.5)
    cfg = SimConfig(passes=12, switch_rate=0.0, width=320, height=240, fps=5.0, lookalike_rate=1.0, till=till, seed=3)
    truth = simulate(folder_set(VAL), tmp_path, cfg, coarse=coarse).truth
    keyed = [a for a in truth.anomalies if a.entry is not None]
    assert len(keyed) == 6
    with_look_alikes = [a for a in keyed if sum(c == coarse[a.seen_sku] for c in coarse.values()) > 1]
    assert with_look_alikes and all(coarse[a.scanned_sku] == coarse[a.seen_sku] for a in with_look_alikes)
