"""`retail_reid.pipeline.edge.metrics`: the Prometheus text the service serves."""

from __future__ import annotations

import pytest
from edge_fixtures import metrics, sample
from prometheus_client.parser import text_string_to_metric_families

from retail_reid.pipeline.edge.metrics import ServiceMetrics, observed


def test_metrics_are_valid_prometheus_text():
    m = metrics()
    m.frames_read.inc(amount=3)
    m.events.inc("non_scan")
    m.frames_dropped.inc("queue_full")
    for v in (0.001, 0.03, 0.03, 7.0):
        m.processing.observe(v)
    text = m.render()
    assert "# TYPE reid_frames_read_total counter\nreid_frames_read_total 3.0\n" in text
    assert (
        sample(text, "reid_events_total", type="non_scan") == 1
        and sample(text, "reid_events_total", type="basket") == 0
    )
    assert sample(text, "reid_frames_dropped_total", reason="queue_full") == 1
    assert sample(text, "reid_frame_processing_seconds_bucket", le="0.002") == 1
    assert sample(text, "reid_frame_processing_seconds_bucket", le="0.05") == 3
    assert sample(text, "reid_frame_processing_seconds_bucket", le="+Inf") == 4 == observed(m.processing)
    assert sample(text, "reid_frame_processing_seconds_count") == 4
    assert sample(text, "reid_gallery_version") == 7 and sample(text, "process_resident_memory_bytes") > 0
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["reid_frames_read"] == "counter" and types["reid_frame_processing_seconds"] == "histogram"
    assert not any(name.endswith("_created") for name in types)  # no _created series beside the counters
    with pytest.raises(KeyError, match="reid_events: no series 'no_such_type'"):
        m.events.inc("no_such_type")  # label sets are fixed: series cannot pile up


def test_each_service_has_a_registry_of_its_own():
    """Two services in one process (tests, several services) neither collide nor share counts."""
    first, second = metrics(), metrics(gallery_version=9)
    first.camera_reconnects.inc()
    assert sample(first.render(), "reid_camera_reconnects_total") == 1
    assert sample(second.render(), "reid_camera_reconnects_total") == 0
    assert sample(second.render(), "reid_gallery_version") == 9


def test_lanes_of_one_service_share_its_registry():
    service = ServiceMetrics(lambda: 4, labelled=True)
    north, south = (metrics(lane=n, service=service) for n in ("north", "south"))
    north.frames_read.inc()
    text = south.render()
    assert sample(text, "reid_frames_read_total", lane="north") == 1
    assert sample(text, "reid_frames_read_total", lane="south") == 0
    north.gallery_reloads.inc()  # the whole service's: one series, no lane label
    assert south.gallery_reloads.value() == 1 and sample(south.render(), "reid_gallery_reloads_total") == 1
