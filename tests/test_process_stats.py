"""The standard process metrics of the service's /metrics (prometheus_client's process collector)
against what the kernel reports by other routes (/proc/self/stat, /proc/self/status,
/proc/self/limits), so dashboards and alert rules written for any exporter work on the lane service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edge_fixtures import metrics, sample

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
REPO = Path(__file__).resolve().parents[1]


def _exported(name: str) -> float:
    return sample(metrics().render(), name)


def _stat_cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def test_cpu_time_agrees_with_proc_stat_and_grows_with_work():
    before = _exported("process_cpu_seconds_total")
    sum(i * i for i in range(3_000_000))
    after = _exported("process_cpu_seconds_total")
    assert after > before
    assert _exported("process_cpu_seconds_total") == pytest.approx(_stat_cpu_seconds(), abs=0.05)


def test_memory_agrees_with_proc_status():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss = int(status["VmRSS"].split()[0]) * 1024
    assert _exported("process_resident_memory_bytes") == pytest.approx(rss, abs=8 << 20)
    assert _exported("process_virtual_memory_bytes") >= _exported("process_resident_memory_bytes")


def test_open_fds_counts_files_and_max_fds_is_the_soft_limit(tmp_path):
    m = metrics()  # made once: its own files are open before the count starts
    base = sample(m.render(), "process_open_fds")
    fds = [os.open(tmp_path / f"f{i}", os.O_CREAT | os.O_WRONLY) for i in range(3)]
    try:
        assert sample(m.render(), "process_open_fds") == base + 3
    finally:
        for fd in fds:
            os.close(fd)
    assert sample(m.render(), "process_open_fds") == base
    limits = next(
        line for line in Path("/proc/self/limits").read_text().splitlines() if line.startswith("Max open files")
    )
    soft = limits.split()[3]
    if soft != "unlimited":
        assert sample(m.render(), "process_max_fds") == float(soft)


def test_start_time_is_when_the_process_started():
    code = (
        "import sys; sys.path.insert(0, 'tests'); from edge_fixtures import metrics, sample; "
        "print(sample(metrics().render(), 'process_start_time_seconds'))"
    )
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    after = time.time()
    # The boot time is whole seconds and the start time counts clock ticks: within a second either way.
    assert before - 1.0 <= float(out.stdout) <= after + 1.0


def test_the_exporter_lists_the_standard_process_metrics():
    text = metrics().render()
    for name, kind in (
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ):
        assert f"# TYPE {name} {kind}\n{name} " in text, name
        assert sample(text, name) > 0, name
