"""`retail_reid.pipeline.edge.alert_log`: numbering across restarts, a torn last line, and a write
refused by the kernel (a full disk), which costs the evidence crops but never an alert."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edge_fixtures import REPO, alert

from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.records import BasketEvent


def test_alert_log_numbers_continue_across_restarts_and_since_reads_any_point(tmp_path):
    path = tmp_path / "events.jsonl"
    log = AlertLog(path, "lane-1", "lane-1-aaaa")
    for i in range(300):
        log.append(
            alert(i)
            if i % 7
            else BasketEvent(txn="T1", seen={"A": 1}, scanned={"A": 1}, jaccard=1, dice=1, overlap=1, tversky=1),
            gallery_version=3,
        )
    log.close()
    log = AlertLog(path, "lane-1", "lane-1-bbbb")  # a restart: a new id prefix, the numbers go on
    assert log.last_seq == 300
    assert log.append(alert(9999), 4) == 301
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 302))
    assert records[0]["id"] == "lane-1-aaaa-1" and records[-1]["id"] == "lane-1-bbbb-301"
    assert records[1]["type"] == "non_scan" and records[1]["gallery_version"] == 3 and records[1]["track_id"] == 1
    assert {k: records[1][k] for k in alert(1).to_dict()} == alert(
        1
    ).to_dict()  # the replay's format, plus the envelope
    for since in (0, 1, 2, 150, 227, 299, 300, 301, 5000):
        assert [r["seq"] for r in log.read_after(since, 50)] == list(range(since + 1, min(since + 51, 302)))
    log.close()


def test_a_torn_last_line_is_moved_aside_not_read_as_an_alert(tmp_path):
    path = tmp_path / "events.jsonl"
    log = AlertLog(path, "l", "l-x")
    log.append(alert(1), 1)
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "id": "l-x-2", "type": "non_')
    log = AlertLog(path, "l", "l-y")
    assert log.last_seq == 1 and path.read_bytes().endswith(b"\n")
    [aside] = tmp_path.glob("events.jsonl.torn-*")
    assert aside.read_bytes() == b'{"seq": 2, "id": "l-x-2", "type": "non_'
    assert log.append(alert(2), 1) == 2
    log.close()


# A child process with a file-size limit (RLIMIT_FSIZE): the kernel refuses the writes, part way
# through a line, exactly as a full disk does, and the limit can be lifted again ("disk freed").
DISK_FULL_SCRIPT = r"""
import json, resource, signal, sys
from pathlib import Path
import numpy as np
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.evidence import EvidenceWriter
from retail_reid.pipeline.edge.metrics import EdgeMetrics, ServiceMetrics
from retail_reid.pipeline.types import Crop, ItemPass
from retail_reid.pipeline.records import Event, EventType
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
root = Path(sys.argv[1])
log = AlertLog(root / "events.jsonl", "l", "l-x")
ev = lambda i: Event(type=EventType.NON_SCAN, t_start=float(i), t_end=float(i) + 1, track_id=i)
log.append(ev(1), 1)
size = (root / "events.jsonl").stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
log.append(ev(2), 1); log.append(ev(3), 1)
full = {"size_kept": (root / "events.jsonl").stat().st_size == size, "unwritten": log.unwritten, "error": log.error,
        "readable": [r["seq"] for r in log.read_after(0, 10)]}
m = EdgeMetrics(ServiceMetrics(lambda: 1), lambda: 1, lambda: 0)
writer = EvidenceWriter(root, "evidence/run", on_failure=lambda reason: m.evidence_failures.inc())
crop = Crop(image=np.random.default_rng(0).integers(0, 255, (120, 80, 3), dtype=np.uint8), ts=0.0, box=(0, 0, 80, 120),
            quality=1.0)
passed = lambda track, crops: ItemPass(track_id=track, t_start=0.0, t_end=1.0, frames=3, crops=crops)
paths = writer(passed(5, (crop, crop)))
full.update(evidence=list(paths), evidence_error=writer.error, evidence_failures=m.evidence_failures.value(),
            evidence_files=sorted(p.name for p in (root / "evidence" / "run").iterdir()))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
log.retry()
freed = {"unwritten": log.unwritten, "error": log.error, "seqs": [r["seq"] for r in log.read_after(0, 10)],
         "tracks": [r["track_id"] for r in log.read_after(0, 10)], "evidence": list(writer(passed(6, (crop,))))}
print(json.dumps({"full": full, "freed": freed}))
"""


def test_a_full_disk_keeps_alerts_in_order_in_memory_and_costs_only_the_evidence(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    full, freed = result["full"], result["freed"]
    assert full["size_kept"] and full["unwritten"] == 2 and full["readable"] == [1]  # no torn line on disk
    assert "cannot write" in full["error"] and "2 alerts wait in memory" in full["error"]
    assert (
        full["evidence"] == []
        and full["evidence_failures"] == 1
        and "evidence crops not saved" in full["evidence_error"]
    )
    assert full["evidence_files"] == []  # no half-written JPEG left behind
    assert freed["unwritten"] == 0 and freed["error"] is None
    assert freed["seqs"] == [1, 2, 3] and freed["tracks"] == [1, 2, 3]
    assert freed["evidence"] == ["evidence/run/track00006_0.jpg"]
