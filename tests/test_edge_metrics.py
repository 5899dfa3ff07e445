"""`retail_reid.pipeline.edge.metrics`: the Prometheus text the service serves."""

from __future__ import annotations

import pytest
from edge_fixtures import metrics


def test_metrics_are_valid_prometheus_text():
    m = metrics()
    m.frames_read.inc(amount=3)
    m.events.inc("non_scan")
    m.frames_dropped.inc("queue_full")
    for v in (0.001, 0.03, 0.03, 7.0):
        m.processing.observe(v)
    text = m.render()
    assert "# TYPE reid_frames_read_total counter\nreid_frames_read_total 3\n" in text
    assert 'reid_events_total{type="non_scan"} 1\n' in text and 'reid_events_total{type="basket"} 0\n' in text
    assert 'reid_frames_dropped_total{reason="queue_full"} 1\n' in text
    assert 'reid_frame_processing_seconds_bucket{le="0.002"} 1\n' in text
    assert 'reid_frame_processing_seconds_bucket{le="0.05"} 3\n' in text
    assert (
        'reid_frame_processing_seconds_bucket{le="+Inf"} 4\n' in text
        and "reid_frame_processing_seconds_count 4\n" in text
    )
    assert "reid_gallery_version 7\n" in text and "process_resident_memory_bytes " in text
    for line in text.splitlines():  # every sample line is NAME{labels} NUMBER
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value.replace("+Inf", "inf"))
            assert name.split("{")[0].replace("_", "").isalnum()
    with pytest.raises(KeyError):
        m.events.inc("no_such_type")  # label sets are fixed: series cannot pile up
