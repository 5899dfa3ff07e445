"""Scoring alerts against truth: one-to-one time-span matching, per-type precision and recall,
the switch SKU check, basket check, and clear errors for bad truth or events files."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_reid.cli import main
from retail_reid.pipeline.harness.score import (
    Alert,
    ScoreError,
    StoreRates,
    format_rates,
    format_score,
    match,
    read_events,
    read_truth,
    score,
)
from retail_reid.pipeline.harness.simulate import Anomaly, Pass, Truth
from retail_reid.pipeline.harness.simulate_pos import PosCase, PosCaseKind

PASSES = (
    Pass(1.0, 2.0, "Kiwi", "Kiwi", "T1"),
    Pass(3.0, 4.0, "Lime", None, "T1"),
    Pass(5.0, 6.0, "Lemon", "Banana", "T1"),
    Pass(9.0, 10.0, "Kiwi", "Kiwi", "T2"),
)
ANOMALIES = (
    Anomaly("non_scan", 3.0, 4.0, "Lime", None, "T1"),
    Anomaly("product_switch", 5.0, 6.0, "Lemon", "Banana", "T1"),
    Anomaly("scan_without_item", 7.5, 7.5, None, "Avocado", "T1"),
)
TRUTH = Truth("video.mp4", 15.0, (640, 480), (192, 86, 448, 413), PASSES, ANOMALIES)


def write_truth(tmp_path, truth: Truth | dict = TRUTH):
    p = tmp_path / "truth.json"
    p.write_text(json.dumps(truth.to_dict() if isinstance(truth, Truth) else truth))
    return p


def write_events(tmp_path, lines: list[dict | str]):
    p = tmp_path / "events.jsonl"
    p.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return p


def alert(kind: str, t0: float, t1: float, seen: str | None = None, scanned: str | None = None) -> dict:
    return {
        "type": kind,
        "t_start": t0,
        "t_end": t1,
        "track_id": 1,
        "seen_sku": seen,
        "seen_score": 0.8,
        "scanned_sku": scanned,
        "scanned_score": 0.3,
        "txn": "T1",
        "evidence": [],
    }


def perfect_events() -> list[dict]:
    return [
        alert("non_scan", 3.1, 3.9, "Lime"),
        alert("product_switch", 5.2, 5.8, "Lemon", "Banana"),
        alert("scan_without_item", 7.5, 7.5, None, "Avocado"),
        {
            "type": "basket",
            "txn": "T1",
            "seen": {"Kiwi": 1, "Lime": 1, "Lemon": 1},
            "scanned": {"Kiwi": 1, "Banana": 1, "Avocado": 1},
            "jaccard": 0.2,
            "dice": 0.33,
            "overlap": 0.33,
            "tversky": 0.25,
        },
        {
            "type": "basket",
            "txn": "T2",
            "seen": {"Kiwi": 1},
            "scanned": {"Kiwi": 1},
            "jaccard": 1.0,
            "dice": 1.0,
            "overlap": 1.0,
            "tversky": 1.0,
        },
    ]


def test_truth_round_trips(tmp_path):
    assert read_truth(write_truth(tmp_path)) == TRUTH


def test_perfect_alerts_score_one(tmp_path):
    s = score(TRUTH, read_events(write_events(tmp_path, perfect_events())))
    assert [(t.type, t.precision, t.recall) for t in s.types] == [
        ("non_scan", 1.0, 1.0),
        ("product_switch", 1.0, 1.0),
        ("scan_without_item", 1.0, 1.0),
    ]
    assert (s.switches_matched, s.switches_sku_right) == (1, 1)
    assert vars(s.baskets) == {"transactions": 2, "reported": 2, "seen_exact": 2, "scanned_exact": 2}
    assert s.not_scored == {}


def test_duplicates_misses_wrong_types_and_tolerance(tmp_path):
    events = read_events(
        write_events(
            tmp_path,
            [
                alert("non_scan", 3.2, 3.5, "Lime"),
                alert("non_scan", 3.6, 3.8, "Lime"),  # a duplicate: a false alarm
                alert("non_scan", 5.0, 6.0, "Lemon"),  # the switch, reported as the wrong type
                alert("product_switch", 6.8, 7.0, "Pear", "Banana"),  # 0.8 s after the switch ended
                alert("unknown_item", 1.0, 2.0),
                {"type": "pass_summary", "n": 3},
            ],
        )
    )
    s = score(TRUTH, events, tol=1.0)
    by = {t.type: t for t in s.types}
    assert (by["non_scan"].matched, by["non_scan"].alerts) == (1, 3)
    assert by["non_scan"].precision == pytest.approx(1 / 3) and by["non_scan"].recall == 1.0
    assert [a.line for a in by["non_scan"].false_alarms] == [2, 3]
    assert by["product_switch"].recall == 1.0 and s.switches_sku_right == 0
    assert by["scan_without_item"].recall == 0.0 and by["scan_without_item"].precision is None
    assert by["scan_without_item"].missed == (ANOMALIES[2],)
    assert s.not_scored == {"pass_summary": 1, "unknown_item": 1}
    assert score(TRUTH, events, tol=0.5).types[1].matched == 0


def test_unknown_item_is_scored_when_truth_labels_it(tmp_path):
    truth = Truth(
        TRUTH.video,
        TRUTH.fps,
        TRUTH.size,
        TRUTH.zone,
        PASSES,
        (*ANOMALIES, Anomaly("unknown_item", 11.0, 12.0, None, None)),
    )
    events = read_events(write_events(tmp_path, [alert("unknown_item", 11.5, 12.5), alert("unknown_item", 20, 21)]))
    s = score(truth, events)
    assert s.types[-1].type == "unknown_item" and (s.types[-1].matched, s.types[-1].alerts) == (1, 2)
    assert s.not_scored == {}


def test_matching_reassigns_to_find_the_most_pairs():
    # t0 prefers e0 (closer), but e0 is t1's only candidate: a greedy pairing would find one match.
    t = [Anomaly("non_scan", 0.0, 2.0, "A", None), Anomaly("non_scan", 2.04, 3.0, "B", None)]
    e = [Alert("non_scan", 1.0, 2.05, "A", None, 1), Alert("non_scan", 0.0, 0.2, "A", None, 2)]
    assert match(t, e, tol=0.0) == [(0, 1), (1, 0)]


spans = st.tuples(st.floats(0, 20), st.floats(0, 3)).map(lambda s: (s[0], s[0] + s[1]))


@settings(deadline=None)  # no wall-clock limit: the box is shared
@given(st.lists(spans, max_size=5), st.lists(spans, max_size=5), st.floats(0, 2))
def test_matching_is_one_to_one_within_tolerance_and_maximum(truth_spans, alert_spans, tol):
    t = [Anomaly("non_scan", a, b, None, None) for a, b in truth_spans]
    e = [Alert("non_scan", a, b, None, None, i) for i, (a, b) in enumerate(alert_spans)]
    pairs = match(t, e, tol)
    assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
    ok = {
        (i, j)
        for i in range(len(t))
        for j in range(len(e))
        if e[j].t_start <= t[i].t_end + tol and t[i].t_start <= e[j].t_end + tol
    }
    assert set(pairs) <= ok
    best = max(
        (
            sum((i, j) in ok for i, j in zip(order, range(len(e)), strict=True))
            for order in itertools.permutations(list(range(len(t))) + [-1] * len(e), len(e))
        ),
        default=0,
    )
    assert len(pairs) == best


BASKET_LINE = (
    '{"type": "basket", "txn": "T2", "seen": {}, "scanned": {}, "jaccard": 0, "dice": 0, "overlap": 0, "tversky": 0}'
)


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"type": "non_scan", "t_start": 1', "events.jsonl:2: not valid JSON"),
        ("[1, 2]", "events.jsonl:2: expected a JSON object"),
        ('{"t_start": 1, "t_end": 2}', "events.jsonl:2: missing or empty field 'type'"),
        ('{"type": "non_scan", "t_end": 2}', "events.jsonl:2: missing field 't_start'"),
        ('{"type": "non_scan", "t_start": 3, "t_end": 2}', "events.jsonl:2: t_end 2.0 is before t_start 3.0"),
        ('{"type": "non_scan", "t_start": "3", "t_end": 4}', "field 't_start' must be a finite number"),
        (
            '{"type": "product_switch", "t_start": 3, "t_end": 4, "seen_sku": 7}',
            "field 'seen_sku' must be a non-empty string",
        ),
        (BASKET_LINE.replace('"T2", "seen": {}', '"T1", "seen": {"Kiwi": -1}'), "field 'seen' must be an object"),
        (BASKET_LINE, "events.jsonl:2: a second basket for transaction 'T2'"),
    ],
)
def test_bad_event_lines_are_errors_with_their_line(tmp_path, content, needle):
    with pytest.raises(ScoreError, match=needle.replace("[", r"\[")):
        read_events(write_events(tmp_path, [BASKET_LINE, content]))


def test_empty_events_file_means_no_alerts(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_text("")
    s = score(TRUTH, read_events(p))
    assert all(t.recall == 0.0 and t.precision is None for t in s.types)


def bad_truth(**change) -> dict:
    d = TRUTH.to_dict()
    d.update(change)
    return d


@pytest.mark.parametrize(
    "truth, needle",
    [
        ({"video": "v.mp4"}, "missing field 'fps'"),
        (bad_truth(zone=[1, 2, 3]), "field 'zone' must be a list of 4 integers"),
        (bad_truth(fps=0), "field 'fps' must be positive"),
        (bad_truth(passes=[{"t_start": 1, "t_end": 2}]), r"passes\[0\]: field 'sku' must be a non-empty string"),
        (
            bad_truth(anomalies=[{"type": "theft", "t_start": 1, "t_end": 2}]),
            r"anomalies\[0\]: field 'type' is 'theft'",
        ),
        (bad_truth(anomalies=[{"type": "non_scan", "t_start": 3, "t_end": 2}]), r"anomalies\[0\]: t_end 2.0 is before"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_truth_is_refused_naming_the_field(tmp_path, truth, needle):
    with pytest.raises(ScoreError, match=needle):
        read_truth(write_truth(tmp_path, truth))


def test_unreadable_files(tmp_path):
    with pytest.raises(ScoreError, match="truth file not found"):
        read_truth(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text('{"video":\n  "v.mp4",\n  oops}')
    with pytest.raises(ScoreError, match=r"broken.json: not valid JSON \(.* at line 3 column 3\)"):
        read_truth(tmp_path / "broken.json")
    with pytest.raises(ScoreError, match="events file not found"):
        read_events(tmp_path / "nope.jsonl")
    with pytest.raises(ScoreError, match="tolerance"):
        score(TRUTH, read_events(write_events(tmp_path, [])), tol=-1)


def test_cli_text_json_and_errors(tmp_path, capsys):
    truth, events = write_truth(tmp_path), write_events(tmp_path, perfect_events()[:2])
    assert main(["score", str(truth), str(events)]) == 0
    text = capsys.readouterr().out
    assert "non_scan" in text and "scan_without_item" in text and "seen SKU named right in 1 of 1" in text
    assert main(["score", str(truth), str(events), "--json", "--tol", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tol"] == 0.5 and out["types"]["non_scan"]["recall"] == 1.0
    assert out["types"]["scan_without_item"]["missed"][0]["scanned_sku"] == "Avocado"
    assert out["types"]["scan_without_item"]["precision"] is None
    events.write_text('{"type": "non_scan"}\n')
    assert main(["score", str(truth), str(events)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{events}:1: missing field 't_start'" in err


# --- what a store would see --------------------------------------------------------------------------

TILL_TRUTH = Truth(
    TRUTH.video,
    TRUTH.fps,
    TRUTH.size,
    TRUTH.zone,
    (*PASSES, Pass(12.0, 13.0, "Milk", "Milk", "T2"), Pass(15.0, 16.0, "Milk", "Milk", "T2")),
    (
        *ANOMALIES,
        Anomaly("non_scan", 9.0, 10.0, "Kiwi", None, "T2", voided_sku="Kiwi"),
        Anomaly("double_scan", 13.2, 13.2, "Milk", "Milk", "T2"),
        Anomaly("product_switch", 20.0, 21.0, "Lime", "Potato", "T2", entry="weighed", weight_kg=0.52),
    ),
    (
        PosCase(PosCaseKind.QUANTITY, 12.0, 16.0, "Milk", "T2"),
        PosCase(PosCaseKind.VOID_NOT_KEPT, 30.0, 32.0, "Kiwi", "T2"),
    ),
)


def test_truth_with_till_cases_round_trips_and_omits_what_is_unset(tmp_path):
    path = write_truth(tmp_path, TILL_TRUTH)
    assert read_truth(path) == TILL_TRUTH
    written = json.loads(path.read_text())
    assert "entry" not in written["anomalies"][0] and written["anomalies"][-1]["entry"] == "weighed"
    assert written["pos_cases"][0] == {"case": "quantity", "t_start": 12.0, "t_end": 16.0, "sku": "Milk", "txn": "T2"}
    assert "pos_cases" not in TRUTH.to_dict()
    bad = TILL_TRUTH.to_dict()
    bad["pos_cases"][1]["case"] = "refund"
    with pytest.raises(ScoreError, match=r"pos_cases\[1\]: field 'case' is 'refund'"):
        read_truth(write_truth(tmp_path, bad))


def test_store_rates_errors_with_their_times_and_loss_alerts_near_till_cases(tmp_path):
    events = [
        *perfect_events()[:3],
        alert("non_scan", 9.1, 9.9, "Kiwi"),
        alert("double_scan", 13.2, 13.2, "Milk", "Milk"),
        alert("non_scan", 15.0, 16.0, "Milk"),  # false: the quantity scan paid for it
        alert("scan_without_item", 30.0, 30.0, None, "Kiwi"),  # false: the scan was voided
        alert("unknown_item", 40.0, 41.0),  # the truth labels none: false
    ]
    s = score(TILL_TRUTH, read_events(write_events(tmp_path, events)))
    by = {t.type: t for t in s.types}
    assert (by["double_scan"].matched, by["double_scan"].precision) == (1, 1.0)
    r = s.rates
    # 6 passes, 3 of them anomalies (non_scan Lime, switch Lemon, voided Kiwi); the Lime-Potato switch has no pass here
    assert (r.normal_passes, r.transactions, r.loss_alerts, r.false_loss_alerts) == (3, 2, 7, 3)
    assert (r.customer_service, r.false_customer_service) == (1, 0)
    assert r.false_per_100_passes == pytest.approx(100.0) and r.false_per_1000_transactions == pytest.approx(1500.0)
    assert r.alerts_per_transaction == pytest.approx(3.5)
    assert [(e.kind, e.type, e.t_start, e.line) for e in s.errors] == [
        ("false_alert", "non_scan", 15.0, 6),
        ("missed", "product_switch", 20.0, None),
        ("false_alert", "scan_without_item", 30.0, 7),
        ("false_alert", "unknown_item", 40.0, 8),
    ]
    assert [(c.case, c.count, c.false_loss_alerts) for c in s.cases] == [("quantity", 1, 1), ("void_not_kept", 1, 1)]
    pooled = r + r
    assert pooled.false_loss_alerts == 6 and pooled.false_per_100_passes == r.false_per_100_passes
    d = s.to_dict()
    assert d["store"]["false_per_100_passes"] == pytest.approx(100.0) and d["errors"][0]["kind"] == "false_alert"
    assert d["pos_cases"]["quantity"] == {"count": 1, "false_loss_alerts": 1, "legit": True}
    text = format_score(s)
    assert "3 false loss alerts of 7; 100.00 per 100 normal item passes (3)" in text
    assert "till cases (false loss alerts near them): quantity 1 of 1, void_not_kept 1 of 1" in text
    assert "     15.00-16.00s  false_alert non_scan" in text and "(events line 6)" in text


def test_no_passes_or_transactions_leave_the_rates_undefined():
    r = StoreRates()
    assert r.false_per_100_passes is None and r.false_per_1000_transactions is None and r.alerts_per_transaction is None
    assert format_rates(r)[0].startswith("store view: 0 false loss alerts of 0; - per 100")


def test_events_that_cannot_belong_to_the_truth_are_refused(tmp_path, capsys):
    """All-zero scores for a run of another scenario, or for a live run's Unix times, would be read
    as a terrible model: the score says the files do not belong together instead (exit 2)."""
    truth = write_truth(tmp_path)
    origin = 1767000000.0
    live = [dict(e, t_start=e["t_start"] + origin, t_end=e["t_end"] + origin) for e in perfect_events()[:3]]
    assert main(["score", str(truth), str(write_events(tmp_path, live))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be from the run the truth describes" in err and "Unix" in err
    other = [alert("non_scan", 3.1, 3.9, "Durian"), alert("product_switch", 5.2, 5.8, "Pear", "Quince")]
    assert main(["score", str(truth), str(write_events(tmp_path, other))]) == 2
    err = capsys.readouterr().err
    assert "none of the 3 SKUs its alerts name" in err and "another scenario" in err
    stray = [*perfect_events(), alert("non_scan", 500.0, 501.0, "Lime")]  # one late alert: still scored
    assert main(["score", str(truth), str(write_events(tmp_path, stray))]) == 0


def test_swapped_arguments_are_named_as_such(tmp_path, capsys):
    truth, events = write_truth(tmp_path), write_events(tmp_path, perfect_events())
    assert main(["score", str(events), str(truth)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        f"{events}: this is an events file (alerts, one per line), not a truth file; give the truth file first" in err
    )
    with pytest.raises(ScoreError, match="this is a truth file"):
        read_events(truth)
    truth.write_text(json.dumps(TRUTH.to_dict(), indent=1))  # as `reid simulate` writes it: many lines
    with pytest.raises(ScoreError, match=r"this is a truth file .* reid score TRUTH EVENTS"):
        read_events(truth)
    one = write_events(tmp_path, perfect_events()[:1])  # a single alert is one JSON object too
    with pytest.raises(ScoreError, match="this is an events file"):
        read_truth(one)


def test_events_prints_the_alerts_as_a_table_in_time_order(tmp_path, capsys):
    events = write_events(
        tmp_path,
        [
            {**alert("product_switch", 65.25, 66.0, "Lemon", "Banana"), "seen_confidence": 0.934},
            alert("non_scan", 3.1, 3.9, "Lime"),
            {**json.loads(BASKET_LINE), "txn": "T1", "seen": {"Lime": 1}},
            alert("scan_without_item", 7.5, 7.5, None, "Avocado"),
        ],
    )
    assert main(["events", str(events)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        ["time", "type", "seen", "scanned", "confidence"],
        ["0:03.1-0:03.9", "non", "scan", "Lime", "-", "-"],
        ["0:07.5", "scan", "without", "item", "-", "Avocado", "-"],
        ["1:05.2-1:06.0", "product", "switch", "Lemon", "Banana", "0.93"],
        ["3", "alerts"],
    ]
    events.write_text('{"type": "non_scan", "t_start": 1}\n')
    assert main(["events", str(events)]) == 2
    assert f"reid events: error: {events}:1: missing field 't_end'" in capsys.readouterr().err


def test_a_pos_log_or_a_file_without_alerts_given_as_events_is_refused(tmp_path, capsys):
    """A POS log given as the events file used to score all zeros with exit 0."""
    truth = write_truth(tmp_path)
    pos = tmp_path / "pos.jsonl"
    pos.write_text('{"ts": 1.0, "type": "txn_start", "txn": "T1"}\n{"ts": 1.5, "type": "scan", "sku": "Kiwi"}\n')
    assert main(["score", str(truth), str(pos)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and f"{pos}:1: a till event ('txn_start' at 'ts'), not an alert: this is a POS log" in err
    )
    other = write_events(tmp_path, [{"type": "heartbeat", "at": 3}, {"type": "heartbeat", "at": 4}])
    assert main(["score", str(truth), str(other)]) == 2
    assert "none of its 2 lines is an alert or a basket (types 2 'heartbeat')" in capsys.readouterr().err


def test_a_replay_of_another_recording_is_refused_by_the_video_its_summary_names(tmp_path, capsys):
    """Events of another run over the same products and timeline used to be scored (zeros, exit 0);
    the replay's summary.json names its recording, which must be the truth's (or the same bytes)."""
    scenario, other, run = tmp_path / "scenario", tmp_path / "other", tmp_path / "run"
    for folder in (scenario, other, run):
        folder.mkdir()
    truth = write_truth(scenario)
    (scenario / "video.mp4").write_bytes(b"the recording the truth describes")
    (other / "video.mp4").write_bytes(b"another recording of the same lane")
    events = write_events(run, perfect_events())

    (run / "summary.json").write_text(json.dumps({"video": str(other / "video.mp4")}))
    assert main(["score", str(truth), str(events)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{events}: a run over {other / 'video.mp4'} (its summary.json says so)" in err
    assert f"the truth {truth} describes {scenario / 'video.mp4'}: another recording" in err

    (run / "summary.json").write_text(json.dumps({"video": str(scenario / "video.mp4")}))
    assert main(["score", str(truth), str(events)]) == 0
    copy = tmp_path / "copy.mp4"  # the same recording copied elsewhere is the same recording
    copy.write_bytes((scenario / "video.mp4").read_bytes())
    (run / "summary.json").write_text(json.dumps({"video": str(copy)}))
    assert main(["score", str(truth), str(events)]) == 0
    (run / "summary.json").unlink()  # a live lane's events: no summary, the other checks apply
    assert main(["score", str(truth), str(events)]) == 0
