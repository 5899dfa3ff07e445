"""Scans the camera cannot check (a barcode the gallery's catalogue lacks, a SKU it has no photos
of, a scan made while the camera was down) are visible to integrators: counted by reason, named in
the 202 answer and in /health; and double scans, held for the void window, stay out of the
loss-alert latency the latency alert watches (issue 23, item 11)."""

from __future__ import annotations

import dataclasses
import json
import time
from types import SimpleNamespace

import pytest
from contract_fixtures import api_component, assert_valid
from edge_fixtures import alert, call, metrics, sample

from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.contract import SchemaName
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.lane_worker import LaneWorker
from retail_reid.pipeline.edge.metrics import observed
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.lane import LaneResult, scan_warning
from retail_reid.pipeline.pos import PosEvent, PosEventType
from retail_reid.pipeline.records import EventType
from retail_reid.pipeline.types import ScanWarning, Unverifiable


class Catalogue:
    """The two questions `scan_warning` asks a gallery."""

    def sku_for_barcode(self, code: str) -> str | None:
        return {"4011": "Banana"}.get(code)

    def has_sku(self, sku: str) -> bool:
        return sku in ("Banana", "Kiwi")


def scan(**fields) -> dict:
    return {"ts": time.time(), "type": "scan", "txn": "T1", **fields}


def test_the_202_answer_names_the_scans_the_camera_cannot_check_and_they_are_counted_by_reason(api):
    """It used to be a plain 202 and a log line: the POS could not tell."""
    url, box, _, m, _ = api
    box.verify = lambda event: scan_warning(event, Catalogue())
    body = [scan(sku="Kiwi"), scan(barcode="0000999"), scan(sku="Durian"), scan(barcode="4011")]
    code, answer, _ = call(url + "/pos", json.dumps(body).encode())
    assert code == 202 and json.loads(answer) == {
        "accepted": 4,
        "unverifiable": [
            {
                "index": 1,
                "reason": "unknown_barcode",
                "detail": "barcode '0000999' is not in the gallery's catalogue; that scan cannot be verified",
            },
            {
                "index": 2,
                "reason": "unknown_sku",
                "detail": "SKU 'Durian' has no references in the gallery; that scan cannot be verified",
            },
        ],
    }
    assert_valid(SchemaName.OPENAPI, json.loads(answer), api_component("Accepted"))
    assert len(box) == 4  # taken all the same: the scans still count in the basket
    assert m.pos_unverifiable.value("unknown_barcode") == 1 and m.pos_unverifiable.value("unknown_sku") == 1
    text = m.render()
    assert sample(text, "reid_pos_unverifiable_total", reason="unknown_barcode") == 1
    assert sample(text, "reid_pos_unverifiable_total", reason="camera_down") == 0
    code, answer, _ = call(url + "/pos", json.dumps(scan(sku="Kiwi")).encode())
    assert code == 202 and json.loads(answer) == {"accepted": 1}  # nothing to say: no field


def test_health_names_the_latest_unverifiable_scan_from_any_source_and_the_camera_down_ones():
    m = metrics()
    box = PosInbox(100, m, 0.0, 300.0, verify=lambda event: scan_warning(event, Catalogue()))
    assert box.unverifiable_status() == {
        "by_reason": {"camera_down": 0, "unknown_barcode": 0, "unknown_sku": 0},
        "last": None,
    }
    event = PosEvent(ts=time.time(), type=PosEventType.SCAN, barcode="0000999", txn="T7", line=12)
    assert box.put([event], "file") == [(0, scan_warning(event, Catalogue()))]
    status = box.unverifiable_status()
    assert status["by_reason"]["unknown_barcode"] == 1 and status["last"]["source"] == "file"
    assert status["last"]["barcode"] == "0000999" and status["last"]["txn"] == "T7"
    assert status["last"]["detail"].startswith("line 12: barcode '0000999' is not in the gallery's catalogue")
    down = ScanWarning(Unverifiable.CAMERA_DOWN, "scan of Kiwi at 1.000: the camera was down, not judged")
    box.unverifiable(dataclasses.replace(event, barcode=None, sku="Kiwi"), down, None)
    status = box.unverifiable_status()
    assert status["by_reason"] == {"camera_down": 1, "unknown_barcode": 1, "unknown_sku": 0}
    assert status["last"]["reason"] == "camera_down" and status["last"]["source"] is None
    health_pos = {"last_event": None, "age_s": None, "silent": False, "file": None, "unverifiable": status}
    assert_valid(SchemaName.HEALTH, health_pos, "/properties/pos", what="/health pos")


@pytest.fixture
def worker(tmp_path):
    m = metrics()
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    w = LaneWorker(
        SimpleNamespace(version=3),
        LaneConfig(),
        None,
        None,
        PosInbox(10, m, 0.0, 300.0),
        log,
        None,
        m,  # type: ignore[arg-type]
    )
    yield w, m
    log.close()


def test_double_scans_are_timed_apart_from_the_loss_alerts_the_latency_rule_watches(worker):
    """A double scan is written up to the void window (10 s by default) after its scan; counted in the
    loss-alert latency it made the p95 rule fire with no lane behind."""
    w, m = worker
    now = time.time()
    late = dataclasses.replace(alert(1), type=EventType.DOUBLE_SCAN, t_start=now - 9.0, t_end=now - 9.0)
    prompt = dataclasses.replace(alert(2), t_start=now - 1.5, t_end=now - 0.6)
    w._emit(LaneResult(events=[late, prompt], passes=[], warnings=[], unseen_scans=[]))
    assert observed(m.alert_latency) == 1 and observed(m.double_scan_latency) == 1
    text = m.render()
    assert sample(text, "reid_alert_latency_seconds_bucket", le="5.0") == 1
    assert sample(text, "reid_alert_latency_seconds_sum") < 9
    assert sample(text, "reid_double_scan_latency_seconds_bucket", le="7.5") == 0
    assert sample(text, "reid_double_scan_latency_seconds_bucket", le="10.0") == 1
    assert m.events.value("double_scan") == 1 and m.events.value("non_scan") == 1
