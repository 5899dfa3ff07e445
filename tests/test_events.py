"""Matching verdicts and the association of item passes with scans, with a small in-test gallery
whose SKUs are known directions in a 4-D embedding space."""

import gc
import json
import weakref
from dataclasses import dataclass

import numpy as np
import pytest

from retail_reid.models.calibration import Calibration
from retail_reid.pipeline.config import BasketConfig, ConfigError, EventConfig
from retail_reid.pipeline.events import DONE_TXNS_KEPT, EventBuilder
from retail_reid.pipeline.lane import scan_warning
from retail_reid.pipeline.pos import EntryMethod, PosEvent, PosEventType
from retail_reid.pipeline.recognition import Recogniser, Recognition, Thresholds
from retail_reid.pipeline.records import BasketEvent, Event
from retail_reid.pipeline.types import Crop, ItemPass, ScanWarning, Unverifiable

SKUS = {"Apple": [1, 0, 0, 0], "Banana": [0, 1, 0, 0], "Carrot": [0, 0, 1, 0]}
BARCODES = {"0001": "Apple"}


@dataclass(frozen=True)
class Match:
    sku: str
    score: float
    confidence: float


@dataclass(frozen=True)
class Check:
    sku: str
    similarity: float
    confidence: float
    best_other_sku: str | None
    best_other_similarity: float
    margin: float


class TinyGallery:
    """The gallery API (match / verify / has_sku / sku_for_barcode) over SKUS, confidence = (s + 1) / 2."""

    def _scores(self, e: np.ndarray) -> dict[str, float]:
        return {k: float(np.dot(e, v)) for k, v in SKUS.items()}

    def match(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        out = []
        for e in embeddings:
            ranked = sorted(self._scores(e).items(), key=lambda t: -t[1])[:k]
            out.append([Match(s, v, (v + 1) / 2) for s, v in ranked])
        return out

    def verify(self, embedding: np.ndarray, sku: str) -> Check:
        scores = self._scores(embedding)
        sim = scores.get(sku, -1.0)
        other = max(((s, v) for s, v in scores.items() if s != sku), key=lambda t: t[1])
        return Check(sku, sim, (sim + 1) / 2, other[0], other[1], sim - other[1])

    def has_sku(self, sku: str) -> bool:
        return sku in SKUS

    def sku_for_barcode(self, code: str) -> str | None:
        return BARCODES.get(code)


GALLERY = TinyGallery()
THRESHOLDS = Thresholds(switch_reject=0.5, switch_accept=0.7, unknown_below=0.5, min_margin=0.05)
CONFIG = EventConfig(window_before_s=1.0, window_after_s=0.5)


def _vec(nothing: float = 0.0, **weights: float) -> np.ndarray:
    """A unit embedding mixing SKU directions with `nothing`, a direction no SKU has."""
    v = sum(
        (w * np.array(SKUS[k], np.float32) for k, w in weights.items()), nothing * np.array([0, 0, 0, 1], np.float32)
    )
    return (v / np.linalg.norm(v)).astype(np.float32)


def _pass(track: int, t0: float, t1: float, embedding: np.ndarray) -> tuple[ItemPass, Recognition]:
    crop = Crop(image=np.zeros((30, 30, 3), np.uint8), ts=t0, box=(0, 0, 30, 30), quality=1.0)
    item = ItemPass(track_id=track, t_start=t0, t_end=t1, frames=10, crops=(crop,))
    return item, Recognition(embedding=embedding, matches=tuple(GALLERY.match(embedding[None])[0]))


def _evidence(item: ItemPass) -> tuple[str, ...]:
    """What an evidence writer would name: the pass's crops still held, and its lane frame."""
    crops = [f"crops/track{item.track_id}_{i}.jpg" for i in range(len(item.crops))]
    return (*crops, f"crops/track{item.track_id}_lane.jpg")


def _builder(config: EventConfig = CONFIG, basket: BasketConfig | None = None) -> EventBuilder:
    return EventBuilder(
        Recogniser(GALLERY, THRESHOLDS).judge,
        config,
        basket,
        GALLERY.sku_for_barcode,
        save_evidence=_evidence,
    )


def _scan(
    ts: float, sku: str | None = None, barcode: str | None = None, txn: str | None = "T1", line: int = 0
) -> PosEvent:
    return PosEvent(ts=ts, type=PosEventType.SCAN, sku=sku, barcode=barcode, txn=txn, line=line)


def _alerts(events) -> list[tuple[str, int | None]]:
    return [(e.type, e.track_id) for e in events if isinstance(e, Event)]


# --- verdicts ---------------------------------------------------------------------------------


def test_a_scanned_item_that_looks_like_its_scan_raises_nothing_and_is_decided_at_once():
    b = _builder()
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    decided = b.advance(2.0, [])
    assert decided.events == []  # the scan lies inside the pass: no need to wait for the window
    assert [(r.track_id, r.verdict, r.seen_sku, r.scanned_sku) for r in decided.passes] == [(1, "ok", "Apple", "Apple")]
    assert [e for e in b.flush().events if isinstance(e, Event)] == []


def test_non_scan_waits_for_the_window_then_names_what_was_seen():
    b = _builder()
    b.add_pos(PosEvent(ts=0.0, type=PosEventType.TXN_START, txn="T1"))
    b.add_pass(*_pass(4, 1.0, 2.0, _vec(Banana=1)))
    assert b.advance(2.3, []).events == []  # a scan could still come until 2.5
    (event,) = b.advance(2.5, []).events
    assert event.type == "non_scan" and event.track_id == 4 and event.seen_sku == "Banana"
    assert event.seen_score == pytest.approx(1.0) and event.scanned_sku is None and event.txn == "T1"
    assert event.t_start == 1.0 and event.t_end == 2.0
    assert event.evidence == ("crops/track4_0.jpg", "crops/track4_lane.jpg")


def test_a_late_scan_within_the_window_still_belongs_to_the_pass():
    b = _builder()
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    assert b.advance(2.2, []).events == []
    b.add_pos(_scan(2.35, "Apple"))
    assert _alerts(b.advance(2.6, []).events) == []
    assert _alerts(b.flush().events) == []


def test_product_switch_names_the_sku_seen_and_the_sku_scanned():
    b = _builder()
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pass(*_pass(2, 1.0, 2.0, _vec(Banana=0.95, Apple=0.3)))
    (event,) = b.advance(2.0, []).events
    assert event.type == "product_switch" and event.seen_sku == "Banana" and event.scanned_sku == "Apple"
    assert event.scanned_score < 0.5 < 0.7 <= event.seen_score and event.scan_ts == 1.5


def test_close_call_is_not_a_switch():
    # The scanned SKU scores low, but the other is not clearly better (margin below 0.05).
    b = _builder()
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pass(*_pass(2, 1.0, 2.0, _vec(Banana=1.0, Apple=0.97, Carrot=0.2)))
    assert _alerts(b.advance(2.0, []).events) == []


def test_unknown_item_is_reported_as_such_not_as_a_switch():
    b = _builder()
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pass(*_pass(3, 1.0, 2.0, _vec(nothing=1)))  # like nothing in the gallery
    (event,) = b.advance(2.0, []).events
    assert event.type == "unknown_item" and event.seen_sku is None and event.scanned_sku == "Apple"
    b.add_pass(*_pass(4, 5.0, 6.0, _vec(nothing=1)))
    (event,) = b.advance(7.0, []).events
    assert event.type == "non_scan" and event.seen_sku is None


def test_a_doubtful_scan_without_a_clear_alternative_is_not_an_alert():
    b = _builder()
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pos(_scan(5.5, "Apple"))
    e = _vec(Apple=0.45, Banana=0.6, nothing=0.66)  # Apple 0.45 < 0.5; Banana 0.6: a match, but below 0.7
    b.add_pass(*_pass(1, 1.0, 2.0, e))
    e = _vec(Apple=0.55, Banana=0.62, nothing=0.56)  # Apple 0.55 >= 0.5 but Banana is not 0.05 better
    b.add_pass(*_pass(2, 5.0, 6.0, e))
    decided = b.advance(7.0, [])
    assert _alerts(decided.events) == []
    assert [(r.verdict, r.seen_sku) for r in decided.passes] == [("unconfirmed", "Banana"), ("ok", "Apple")]


def test_a_pass_without_any_usable_crop_is_not_judged_on_appearance():
    b = _builder()
    b.add_pos(_scan(1.5, "Apple"))
    item, _ = _pass(1, 1.0, 2.0, _vec(Banana=1))
    b.add_pass(item, Recognition(embedding=None, matches=()))
    assert _alerts(b.advance(3.0, []).events) == []


# --- association --------------------------------------------------------------------------------


def test_scan_without_item_waits_for_passes_that_could_still_claim_it():
    b = _builder()
    b.add_pos(_scan(10.0, "Carrot"))
    assert b.advance(10.5, []).events == []  # an item may yet enter within window_before_s
    assert b.advance(11.2, [10.6]).events == []  # a track opened at 10.6 is still in the zone
    assert b.advance(19.9, []).events == []  # a void may still cancel it, for void_window_s (10 s)
    (event,) = b.advance(20.0, []).events
    assert event.type == "scan_without_item" and event.scanned_sku == "Carrot" and event.t_start == event.t_end == 10.0
    assert event.track_id is None and event.txn == "T1"


def test_a_scan_without_item_is_reported_when_its_transaction_ends_if_sooner():
    b = _builder()
    b.add_pos(_scan(10.0, "Carrot"))
    b.add_pos(PosEvent(ts=12.0, type=PosEventType.TXN_END, txn="T1"))
    assert b.advance(11.9, []).events == []
    assert _alerts(b.advance(12.0, []).events) == [("scan_without_item", None)]


def test_each_scan_goes_to_the_nearest_pass_and_to_one_pass_only():
    b = _builder()
    b.add_pos(_scan(2.4, "Apple"))  # 0.4 s after pass 1, 0.6 s before pass 2
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    b.add_pass(*_pass(2, 3.0, 4.0, _vec(Apple=1)))
    assert _alerts(b.advance(10.0, []).events) == [("non_scan", 2)]

    b = _builder()
    b.add_pos(_scan(3.5, "Apple"))  # inside pass 2, 1.5 s after pass 1 (outside its window anyway)
    b.add_pos(_scan(2.6, "Apple"))  # 0.6 s after pass 1 (outside its 0.5 s window), 0.4 s before pass 2
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    b.add_pass(*_pass(2, 3.0, 4.0, _vec(Apple=1)))
    out = b.advance(13.0, []).events  # past the void window of the scan at 2.6
    # the scan at 2.6 lies in pass 2's window too, and pass 2 was paid by another Apple scan: a double scan
    assert sorted(_alerts(out)) == [("double_scan", 2), ("non_scan", 1)]


def test_a_pass_does_not_take_a_scan_that_fits_a_pass_still_in_the_zone_better():
    b = _builder()
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    b.add_pos(_scan(2.45, "Apple"))  # within pass 1's window, but an item entered at 2.3
    out = b.advance(2.6, [2.3]).events
    assert _alerts(out) == [("non_scan", 1)]
    b.add_pass(*_pass(2, 2.3, 3.0, _vec(Apple=1)))
    assert _alerts(b.advance(3.0, []).events) == []


def test_a_scan_goes_to_the_item_crossing_the_middle_when_two_are_in_the_zone():
    b = _builder()
    b.add_pos(_scan(68.2, "Apple"))
    b.add_pass(*_pass(1, 67.0, 68.5, _vec(Banana=1)))  # the lead item, never scanned
    assert b.advance(68.9, [67.7]).events == []  # the follower, still in the zone, is mid-zone at the scan
    assert _alerts(b.advance(69.0, [67.7]).events) == [("non_scan", 1)]
    b.add_pass(*_pass(2, 67.7, 69.0, _vec(Apple=1)))
    assert _alerts(b.advance(69.5, []).events) == []


def test_a_lead_item_scanned_while_the_follower_crosses_the_middle_keeps_its_scan():
    # the lead item's scan (4.97) fits the follower's middle better, but the follower has its own (5.28)
    b = _builder()
    b.add_pos(_scan(4.966, "Apple"))
    b.add_pass(*_pass(1, 3.933, 5.133, _vec(Apple=1)))
    decided = b.advance(5.2, [4.533])
    assert decided.events == decided.passes == []  # the follower, still in the zone, may take that scan
    b.add_pos(_scan(5.278, "Banana"))
    decided = b.advance(5.3, [4.533])
    assert decided.events == []  # now each has one: the lead item's is inside its span
    assert [(r.track_id, r.scanned_sku, r.verdict) for r in decided.passes] == [(1, "Apple", "ok")]
    b.add_pass(*_pass(2, 4.533, 5.867, _vec(Banana=1)))
    decided = b.advance(6.5, [])
    assert _alerts(decided.events) == []
    assert [(r.track_id, r.scanned_sku, r.verdict) for r in decided.passes] == [(2, "Banana", "ok")]


def test_two_items_side_by_side_and_one_scan():
    b = _builder()
    b.add_pos(_scan(2.0, "Apple"))
    b.add_pass(*_pass(1, 1.0, 3.0, _vec(Apple=1)))
    b.add_pass(*_pass(2, 1.5, 3.5, _vec(Apple=1)))
    alerts = _alerts(b.advance(5.0, []).events)
    assert len(alerts) == 1 and alerts[0][0] == "non_scan"


def test_barcodes_resolve_through_the_catalogue_and_unknown_ones_are_not_alerts():
    b = _builder()
    b.add_pos(_scan(1.5, barcode="0001"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    b.add_pos(_scan(5.5, barcode="9999", line=7))
    b.add_pass(*_pass(2, 5.0, 6.0, _vec(Banana=1)))  # would be a switch if the barcode were known
    decided = b.advance(10.0, [])
    assert _alerts(decided.events) == []
    assert [r.verdict for r in decided.passes] == ["ok", "unverified"]
    (basket,) = [e for e in b.flush().events if isinstance(e, BasketEvent)]
    assert basket.scanned == {"Apple": 1, "barcode:9999": 1}


def test_scans_the_camera_cannot_check_are_warned_of_naming_their_line():
    assert scan_warning(_scan(1.0, "Apple"), GALLERY) is None
    assert scan_warning(_scan(1.0, barcode="0001"), GALLERY) is None
    assert scan_warning(PosEvent(ts=0.0, type=PosEventType.TXN_START, txn="T1"), GALLERY) is None
    assert scan_warning(_scan(5.5, barcode="9999", line=7), GALLERY) == ScanWarning(
        Unverifiable.UNKNOWN_BARCODE,
        "line 7: barcode '9999' is not in the gallery's catalogue; that scan cannot be verified",
    )
    assert scan_warning(_scan(5.5, "Durian", line=8), GALLERY) == ScanWarning(
        Unverifiable.UNKNOWN_SKU, "line 8: SKU 'Durian' has no references in the gallery; that scan cannot be verified"
    )


# --- baskets ------------------------------------------------------------------------------------


def _basket_run(config: BasketConfig) -> list:
    b = _builder(basket=config)
    b.add_pos(PosEvent(ts=0.0, type=PosEventType.TXN_START, txn="T1"))
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    b.add_pass(*_pass(2, 3.0, 4.0, _vec(Apple=1)))  # not scanned
    b.add_pos(_scan(5.5, "Carrot"))
    b.add_pass(*_pass(3, 5.0, 6.0, _vec(Banana=1)))  # switch
    b.add_pos(PosEvent(ts=8.0, type=PosEventType.TXN_END, txn="T1"))
    early = b.advance(8.2, []).events
    return early, b.advance(8.5, []).events


def test_basket_per_transaction_once_it_has_closed():
    early, late = _basket_run(BasketConfig(tversky_alpha=1.0, tversky_beta=0.5))
    assert not any(isinstance(e, BasketEvent) for e in early)
    (basket,) = [e for e in late if isinstance(e, BasketEvent)]
    assert (
        basket.txn == "T1" and basket.seen == {"Apple": 2, "Banana": 1} and basket.scanned == {"Apple": 1, "Carrot": 1}
    )
    # common 1, seen-only 2, scanned-only 1
    assert basket.jaccard == pytest.approx(1 / 4) and basket.dice == pytest.approx(2 / 5)
    assert basket.overlap == pytest.approx(1 / 2) and basket.tversky == pytest.approx(1 / (1 + 2 + 0.5))
    _, late = _basket_run(BasketConfig(tversky_alpha=2.0, tversky_beta=0.0))
    (basket,) = [e for e in late if isinstance(e, BasketEvent)]
    assert basket.tversky == pytest.approx(1 / 5)


def test_transactions_known_only_from_their_scans():
    b = _builder()
    b.add_pos(_scan(1.5, "Apple", txn="A"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    b.add_pass(*_pass(2, 2.8, 3.2, _vec(Banana=1)))  # not scanned, after A's last scan: A is still open
    out = b.advance(3.7, []).events
    b.add_pos(_scan(10.5, "Carrot", txn="B"))  # B begins: A is over
    b.add_pass(*_pass(3, 10.0, 11.0, _vec(Carrot=1)))
    out += b.advance(12.0, []).events + b.flush().events
    baskets = {e.txn: e for e in out if isinstance(e, BasketEvent)}
    assert baskets["A"].seen == {"Apple": 1, "Banana": 1} and baskets["A"].scanned == {"Apple": 1}
    assert baskets["B"].seen == {"Carrot": 1} and baskets["B"].scanned == {"Carrot": 1}
    assert [e.txn for e in out if isinstance(e, Event)] == ["A"]


def test_events_serialise_with_the_documented_fields():
    b = _builder()
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    out = b.flush().events
    lines = [json.loads(json.dumps(e.to_dict())) for e in out]
    assert {
        "type",
        "t_start",
        "t_end",
        "track_id",
        "seen_sku",
        "seen_score",
        "scanned_sku",
        "scanned_score",
        "txn",
        "evidence",
    } <= set(lines[0])
    assert lines[1]["type"] == "basket" and lines[1]["txn"] is None
    assert {"seen", "scanned", "jaccard", "dice", "overlap", "tversky"} <= set(lines[1])


# --- thresholds ---------------------------------------------------------------------------------


def test_thresholds_come_from_the_calibration_by_name_or_from_numbers():
    cal = Calibration(10.0, -5.0, {"eer": 0.55, "far_0.01": 0.7, "far_0.001": 0.8})
    t = Thresholds.resolve(EventConfig(switch_reject="eer", switch_accept="far_0.001", unknown_below=0.3), cal)
    assert (t.switch_reject, t.switch_accept, t.unknown_below) == (0.55, 0.8, 0.3)
    with pytest.raises(ConfigError, match=r"events.switch_accept = 'far_0.5'.*eer, far_0.001, far_0.01"):
        Thresholds.resolve(EventConfig(switch_accept="far_0.5"), cal)
    with pytest.raises(ConfigError, match=r"events\.unknown_below: must be in \[-1, 1\], got 1\.5"):
        EventConfig(unknown_below=1.5)  # a similarity's limits are declared with the setting
    with pytest.raises(ConfigError, match="has none"):
        Thresholds.resolve(EventConfig(), None)
    # confidence(s) = sigmoid(10 s - 5) is 0.5 at s = 0.5 and 0.1 at s = (ln(1/9) + 5) / 10
    t = Thresholds.resolve(EventConfig(switch_reject="confidence:0.5", unknown_below="confidence:0.1"), cal)
    assert t.switch_reject == pytest.approx(0.5) and t.unknown_below == pytest.approx((np.log(1 / 9) + 5) / 10)
    assert float(cal.confidence(t.unknown_below)) == pytest.approx(0.1, abs=1e-6)
    for bad in ("confidence:1", "confidence:x"):
        with pytest.raises(ConfigError, match="strictly between 0 and 1"):
            Thresholds.resolve(EventConfig(unknown_below=bad), cal)


# --- what tills do besides one scan per item ------------------------------------------------------


def _pos(ts: float, kind: PosEventType, sku: str, txn: str | None = "T1", **extra) -> PosEvent:
    return PosEvent(ts=ts, type=kind, sku=sku, txn=txn, **extra)


def _run(pos: list[PosEvent], passes: list[tuple], until: float = 100.0):
    """Feed POS events and passes in time order as the lane does (a pass is a track in the zone
    from its start, and finished at its end), advancing every 0.1 s; every event out."""
    b = _builder()
    items = sorted([(e.ts, 0, e) for e in pos] + [(p[0].t_end, 1, p) for p in passes], key=lambda x: x[:2])
    items += [(t / 10, 2, None) for t in range(int(until * 10))]
    out = []
    for ts, kind, x in sorted(items, key=lambda x: x[:2]):
        out += b.advance(ts, [p[0].t_start for p in passes if p[0].t_start <= ts <= p[0].t_end]).events
        if kind == 2:
            continue
        if kind:
            b.add_pass(*x)
        else:
            b.add_pos(x)
    out += b.advance(until, []).events + b.flush().events
    return b, [e for e in out if isinstance(e, Event)], [e for e in out if isinstance(e, BasketEvent)]


def test_a_quantity_scan_pays_for_that_many_passes_of_its_product():
    pos = [_pos(1.5, PosEventType.SCAN, "Apple", qty=3)]
    passes = [_pass(1, 1.0, 2.0, _vec(Apple=1)), _pass(2, 3.0, 4.0, _vec(Apple=1)), _pass(3, 6.0, 7.0, _vec(Apple=1))]
    _, alerts, (basket,) = _run(pos, passes)
    assert alerts == [] and basket.seen == {"Apple": 3} and basket.scanned == {"Apple": 3}


def test_a_quantity_scan_made_before_the_items_reach_the_zone_still_pays_for_them():
    pos = [_pos(0.0, PosEventType.SCAN, "Apple", qty=2)]  # 2 s before the first item: no pass claims it
    passes = [_pass(1, 2.0, 3.0, _vec(Apple=1)), _pass(2, 9.5, 10.5, _vec(Apple=1))]  # decided after the void window
    _, alerts, (basket,) = _run(pos, passes)
    assert alerts == [] and basket.scanned == {"Apple": 2}


def test_a_quantity_scan_pays_for_no_more_than_its_quantity_nor_for_another_product():
    pos = [_pos(1.5, PosEventType.SCAN, "Apple", qty=2)]
    passes = [
        _pass(1, 1.0, 2.0, _vec(Apple=1)),
        _pass(2, 3.0, 4.0, _vec(Banana=1)),  # not an apple: unpaid
        _pass(3, 5.0, 6.0, _vec(Apple=1)),  # the second apple
        _pass(4, 7.0, 8.0, _vec(Apple=1)),  # a third apple: beyond the quantity
        _pass(5, 20.0, 21.0, _vec(Apple=1)),  # too long after the scan (qty_window_s 10 s)
    ]
    _, alerts, (basket,) = _run(pos, passes)
    assert _alerts(alerts) == [("non_scan", 2), ("non_scan", 4), ("non_scan", 5)]
    assert basket.scanned == {"Apple": 2}


def test_a_voided_scan_leaves_its_pass_unpaid_and_the_alert_says_so():
    pos = [_pos(1.5, PosEventType.SCAN, "Apple"), _pos(4.0, PosEventType.VOID, "Apple")]
    _, (alert,), (basket,) = _run(pos, [_pass(1, 1.0, 2.0, _vec(Apple=1))])
    assert basket.seen == {"Apple": 1} and basket.scanned == {}
    assert alert.type == "non_scan" and alert.track_id == 1 and alert.seen_sku == "Apple"
    assert (alert.voided_sku, alert.void_ts, alert.scanned_sku) == ("Apple", 4.0, None)
    assert alert.to_dict()["voided_sku"] == "Apple" and alert.to_dict()["void_ts"] == 4.0


def test_the_voided_alert_waits_for_a_rescan_until_the_void_window_closes():
    b = _builder()
    b.add_pos(_pos(1.5, PosEventType.SCAN, "Apple"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    assert b.advance(2.0, []).events == []
    b.add_pos(_pos(4.0, PosEventType.VOID, "Apple"))
    assert b.advance(13.9, []).events == []
    assert _alerts(b.advance(14.0, []).events) == [("non_scan", 1)]


@pytest.mark.parametrize(
    "times, rescan, alerts, scanned",
    [
        ((1.5, 4.0, 5.0), "Apple", [], {"Apple": 1}),  # decided, voided, scanned again
        ((2.3, 2.4, 3.0), "Apple", [], {"Apple": 1}),  # voided before the pass was decided
        ((2.3, 2.4, 3.0), None, [], {"Banana": 1}),  # a wrong code voided and corrected: the item looks like it
        (  # after the void another product: the pass is unpaid and that scan has no item
            (1.5, 4.0, 5.0),
            "Carrot",
            [("non_scan", "Apple", None), ("scan_without_item", None, "Carrot")],
            {"Carrot": 1},
        ),
    ],
)
def test_a_void_then_a_rescan_pays_for_the_pass(times, rescan, alerts, scanned):
    seen = "Apple" if rescan is not None else "Banana"
    pos = [
        _pos(times[0], PosEventType.SCAN, "Apple"),
        _pos(times[1], PosEventType.VOID, "Apple"),
        _pos(times[2], PosEventType.SCAN, rescan or "Banana"),
    ]
    _, events, (basket,) = _run(pos, [_pass(1, 1.0, 2.0, _vec(**{seen: 1}))])
    assert sorted((e.type, e.seen_sku, e.scanned_sku) for e in events) == alerts
    assert basket.scanned == scanned and basket.seen == {seen: 1}


def test_a_switch_voided_and_scanned_again_the_same_is_alerted_once():
    pos = [_pos(1.5, PosEventType.SCAN, "Carrot"), _pos(4.0, PosEventType.VOID, "Carrot")]
    pos.append(_pos(5.0, PosEventType.SCAN, "Carrot"))
    _, alerts, _ = _run(pos, [_pass(1, 1.0, 2.0, _vec(Apple=1))])
    assert [(e.type, e.scanned_sku) for e in alerts] == [("product_switch", "Carrot")]


def test_a_scan_voided_before_its_pass_is_decided_also_leaves_it_unpaid():
    pos = [_pos(2.2, PosEventType.SCAN, "Apple"), _pos(2.4, PosEventType.VOID, "Apple")]
    _, alerts, _ = _run(pos, [_pass(1, 1.0, 2.0, _vec(Apple=1))])
    assert [(e.type, e.voided_sku, e.void_ts) for e in alerts] == [("non_scan", "Apple", 2.4)]


def test_a_voided_scan_without_an_item_is_no_alert():
    pos = [_pos(10.0, PosEventType.SCAN, "Carrot"), _pos(13.0, PosEventType.VOID, "Carrot")]
    _, alerts, (basket,) = _run(pos, [])
    assert alerts == [] and basket.scanned == {}


def test_a_second_scan_for_one_pass_is_a_double_scan_not_a_scan_without_item():
    pos = [_pos(1.3, PosEventType.SCAN, "Apple"), _pos(1.8, PosEventType.SCAN, "Apple")]
    _, alerts, (basket,) = _run(pos, [_pass(1, 1.0, 2.0, _vec(Apple=1))])
    (event,) = alerts
    assert event.type == "double_scan" and not event.type.loss and event.track_id == 1
    assert (event.t_start, event.scanned_sku, event.seen_sku) == (1.8, "Apple", "Apple")
    assert basket.scanned == {"Apple": 2} and basket.seen == {"Apple": 1}
    # its evidence: the one item the camera saw, crops included (kept until the double scan went out)
    assert event.evidence == ("crops/track1_0.jpg", "crops/track1_lane.jpg")


def test_a_double_scan_late_in_its_window_still_has_the_items_crops():
    config = EventConfig(window_before_s=1.0, window_after_s=5.0, void_window_s=2.0)
    b = EventBuilder(
        Recogniser(GALLERY, THRESHOLDS).judge, config, None, GALLERY.sku_for_barcode, save_evidence=_evidence
    )
    b.add_pos(_scan(1.5, "Apple"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    assert b.advance(2.0, []).events == []
    b.add_pos(_scan(6.5, "Apple"))  # after the first scan's void window (3.5): the pass's crops were due to go
    out = [e for t in range(20, 120) for e in b.advance(t / 10, []).events if isinstance(e, Event)]
    assert [(e.type, e.track_id, e.evidence) for e in out] == [
        ("double_scan", 1, ("crops/track1_0.jpg", "crops/track1_lane.jpg"))
    ]


@pytest.mark.parametrize("first, second", [(1.3, 1.8), (1.2, 1.6)])  # the pass took the first, or the second
def test_a_double_scan_voided_is_nothing(first, second):
    pos = [
        _pos(first, PosEventType.SCAN, "Apple"),
        _pos(second, PosEventType.SCAN, "Apple"),
        _pos(4.0, PosEventType.VOID, "Apple"),
    ]
    _, alerts, (basket,) = _run(pos, [_pass(1, 1.0, 2.0, _vec(Apple=1))])
    assert alerts == [] and basket.scanned == {"Apple": 1}


def test_a_void_with_nothing_to_cancel_is_a_warning_naming_its_line():
    b = _builder()
    b.add_pos(_pos(1.0, PosEventType.SCAN, "Apple", txn="T2"))
    b.add_pos(_pos(2.0, PosEventType.VOID, "Apple", line=9))  # T1 has no Apple scan
    b.add_pos(_pos(3.0, PosEventType.VOID, "Carrot", txn=None, line=10))
    assert b.advance(3.0, []).warnings == [
        "line 9: void of Apple at 2.00s has no scan in transaction 'T1' to cancel",
        "line 10: void of Carrot at 3.00s has no scan to cancel",
    ]
    assert b.advance(4.0, []).warnings == []  # each warning is handed out once


def test_a_keyed_produce_switch_is_caught_and_carries_its_entry_and_weight():
    pos = [_pos(1.5, PosEventType.SCAN, "Carrot", entry=EntryMethod.WEIGHED, weight_kg=0.52)]
    _, alerts, _ = _run(pos, [_pass(1, 1.0, 2.0, _vec(Apple=1))])
    (event,) = alerts
    assert (event.type, event.seen_sku, event.scanned_sku) == ("product_switch", "Apple", "Carrot")
    assert (event.entry, event.weight_kg) == ("weighed", 0.52) and event.to_dict()["entry"] == "weighed"


def test_the_new_events_follow_the_published_event_schema():
    from contract_fixtures import assert_valid

    from retail_reid.pipeline.contract import SchemaName

    pos = [
        _pos(1.3, PosEventType.SCAN, "Apple", entry=EntryMethod.WEIGHED, weight_kg=0.4),
        _pos(1.8, PosEventType.SCAN, "Apple"),  # double scan
        _pos(5.5, PosEventType.SCAN, "Carrot", entry=EntryMethod.KEYED),  # keyed switch
        _pos(9.5, PosEventType.SCAN, "Banana"),
        _pos(11.0, PosEventType.VOID, "Banana"),  # voided and kept
        _pos(30.0, PosEventType.SCAN, "Carrot"),  # without item
    ]
    passes = [
        _pass(1, 1.0, 2.0, _vec(Apple=1)),
        _pass(2, 5.0, 6.0, _vec(Banana=1)),
        _pass(3, 9.0, 10.0, _vec(Banana=1)),
    ]
    _, alerts, baskets = _run(pos, passes)
    assert sorted(e.type for e in alerts) == ["double_scan", "non_scan", "product_switch", "scan_without_item"]
    for e in alerts + baskets:
        assert_valid(SchemaName.EVENT, json.loads(json.dumps(e.to_dict())))


# --- memory over a day: what the builder keeps of decided passes and transactions ---------------


def _crops_saved(b: EventBuilder) -> list[tuple[int, int]]:
    """(track, crops) of each alert's evidence as the builder saves it."""
    saved: list[tuple[int, int]] = []
    b.save_evidence = lambda item: saved.append((item.track_id, len(item.crops))) or ()
    return saved


def test_a_paid_pass_keeps_its_crops_only_while_a_void_may_reopen_it_in_time():
    b = _builder()
    saved = _crops_saved(b)
    crops = []
    for i in range(300):  # more scans than a void looks back over (RECENT_SCANS): the builder's longest memory
        t = 20.0 * i
        b.add_pos(_scan(t + 1.5, "Apple", txn=f"T{i}"))
        item, rec = _pass(i, t + 1.0, t + 2.0, _vec(Apple=1))
        crops.append(weakref.ref(item.crops[0].image))
        b.add_pass(item, rec)
        b.advance(t + 2.0, [])
        del item, rec
    b.advance(20.0 * 300, [])
    gc.collect()
    assert sum(r() is not None for r in crops) == 0  # each was let go when its void window closed
    b.add_pos(_pos(20.0 * 299 + 5.0, PosEventType.VOID, "Apple", txn="T299"))  # a late void still reopens it ...
    assert _alerts(b.flush().events) == [("non_scan", 299)]
    assert saved == [(299, 0)]  # ... its alert goes out, without crops


def test_a_pass_voided_within_its_window_keeps_its_crops_for_the_alert():
    b = _builder()
    saved = _crops_saved(b)
    b.add_pos(_pos(1.5, PosEventType.SCAN, "Apple"))
    b.add_pass(*_pass(1, 1.0, 2.0, _vec(Apple=1)))
    assert b.advance(2.0, []).events == []
    b.add_pos(_pos(9.0, PosEventType.VOID, "Apple"))  # within the scan's void window (10 s): reopened ...
    assert b.advance(12.0, []).events == []  # ... past that window, waiting for a re-scan until 19.0
    assert _alerts(b.advance(19.0, []).events) == [("non_scan", 1)]
    assert saved == [(1, 1)]


def test_transactions_done_are_remembered_up_to_a_bound():
    b = _builder()
    for i in range(DONE_TXNS_KEPT + 50):
        b.add_pos(PosEvent(ts=float(i), type=PosEventType.TXN_START, txn=f"T{i}"))
        b.add_pos(PosEvent(ts=i + 0.5, type=PosEventType.TXN_END, txn=f"T{i}"))
        b.advance(i + 1.0, [])  # its basket reported
    assert len(b._done_txns) == DONE_TXNS_KEPT  # the oldest 50 forgotten
    b.add_pos(_scan(DONE_TXNS_KEPT + 60.0, "Apple", txn=f"T{DONE_TXNS_KEPT + 49}"))
    assert b.advance(DONE_TXNS_KEPT + 60.0, []).warnings == [
        f"transaction 'T{DONE_TXNS_KEPT + 49}' reappears at {DONE_TXNS_KEPT + 60.0:.2f}s after its basket was reported"
    ]
