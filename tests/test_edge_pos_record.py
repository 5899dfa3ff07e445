"""`retail_reid.pipeline.edge.pos_record`: the lane's record of the POS events it received
(STATE/pos.jsonl), a POS log in its own right, bounded by rotation, with a torn last line cut off at
the next start and a write the disk refuses cut back to whole lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edge_fixtures import REPO

from retail_reid.pipeline.edge.pos_record import PosRecord
from retail_reid.pipeline.pos import (
    POS_RECORD_FILE,
    POS_RECORD_OLDER,
    EntryMethod,
    PosEvent,
    PosEventType,
    read_pos_log,
)


def _scan(i: int) -> PosEvent:
    return PosEvent(ts=1_767_000_000.0 + i, type=PosEventType.SCAN, sku=f"SKU-{i}", txn="T1")


def test_the_record_is_a_pos_log_of_what_was_received(tmp_path):
    record = PosRecord(tmp_path)
    weighed = PosEvent(
        ts=1_767_000_001.5, type=PosEventType.SCAN, sku="Banana", entry=EntryMethod.WEIGHED, weight_kg=1.2
    )
    received = [PosEvent(ts=1_767_000_000.25, type=PosEventType.TXN_START, txn="T1"), weighed, _scan(3)]
    record.append(received[:2])
    record.append([])
    record.append(received[2:])
    record.close()
    events, warnings = read_pos_log(tmp_path / POS_RECORD_FILE)
    assert warnings == [] and [e.to_json() for e in events] == [e.to_json() for e in received]


def test_the_record_is_rotated_so_two_files_hold_the_latest_events(tmp_path):
    line = len(_scan(10).to_json()) + 1
    record = PosRecord(tmp_path, max_bytes=3 * line)
    for i in range(10, 18):  # 8 events, 3 to a file
        record.append([_scan(i)])
    record.close()
    older, newer = (read_pos_log(tmp_path / name)[0] for name in (POS_RECORD_OLDER, POS_RECORD_FILE))
    assert [e.sku for e in older] == ["SKU-13", "SKU-14", "SKU-15"] and [e.sku for e in newer] == ["SKU-16", "SKU-17"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [POS_RECORD_OLDER, POS_RECORD_FILE]


def test_a_torn_last_line_is_cut_off_at_the_next_start(tmp_path):
    record = PosRecord(tmp_path)
    record.append([_scan(1)])
    record.close()
    with open(tmp_path / POS_RECORD_FILE, "ab") as f:
        f.write(b'{"ts": 1767000002, "type": "sc')
    record = PosRecord(tmp_path)
    record.append([_scan(3)])
    record.close()
    events, warnings = read_pos_log(tmp_path / POS_RECORD_FILE)
    assert warnings == [] and [e.sku for e in events] == ["SKU-1", "SKU-3"]


# A child process with a file-size limit (RLIMIT_FSIZE): the kernel refuses the write part way
# through, as a full disk does; then the limit is lifted ("disk freed").
DISK_FULL_SCRIPT = r"""
import json, resource, signal, sys
from pathlib import Path
from retail_reid.pipeline.edge.pos_record import PosRecord
from retail_reid.pipeline.pos import PosEvent, PosEventType
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
root = Path(sys.argv[1])
scan = lambda i: PosEvent(ts=1767000000.0 + i, type=PosEventType.SCAN, sku=f"SKU-{i}", txn="T1")
record = PosRecord(root)
record.append([scan(1)])
size = record.path.stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 30, hard))
record.append([scan(2), scan(3)])
full = {"size_kept": record.path.stat().st_size == size, "error": record.error}
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
record.append([scan(4)])
print(json.dumps({"full": full, "freed_error": record.error}))
"""


def test_a_write_the_disk_refuses_is_cut_back_and_the_next_one_is_recorded(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["full"]["size_kept"] and "2 POS events not recorded" in result["full"]["error"]
    assert result["freed_error"] is None
    events, warnings = read_pos_log(tmp_path / POS_RECORD_FILE)
    assert warnings == [] and [e.sku for e in events] == ["SKU-1", "SKU-4"]
