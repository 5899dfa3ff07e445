"""The standard process metrics against what the kernel reports by other routes (/proc/self/stat,
/proc/self/status, /proc/self/limits), and their place in the service's /metrics text."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retail_reid.pipeline.edge import process_stats
from retail_reid.pipeline.edge.metrics import EdgeMetrics

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
REPO = Path(__file__).resolve().parents[1]


def _stat_cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def test_cpu_time_agrees_with_proc_stat_and_grows_with_work():
    before = process_stats.cpu_seconds()
    sum(i * i for i in range(3_000_000))
    after = process_stats.cpu_seconds()
    assert after > before
    assert process_stats.cpu_seconds() == pytest.approx(_stat_cpu_seconds(), abs=0.05)


def test_memory_agrees_with_proc_status():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss = int(status["VmRSS"].split()[0]) * 1024
    assert process_stats.resident_memory_bytes() == pytest.approx(rss, abs=8 << 20)
    assert process_stats.virtual_memory_bytes() >= process_stats.resident_memory_bytes()


def test_open_fds_counts_files_and_max_fds_is_the_soft_limit(tmp_path):
    base = process_stats.open_fds()
    fds = [os.open(tmp_path / f"f{i}", os.O_CREAT | os.O_WRONLY) for i in range(3)]
    try:
        assert process_stats.open_fds() == base + 3
    finally:
        for fd in fds:
            os.close(fd)
    assert process_stats.open_fds() == base
    limits = next(
        line for line in Path("/proc/self/limits").read_text().splitlines() if line.startswith("Max open files")
    )
    soft = limits.split()[3]
    assert process_stats.max_fds() == (float(soft) if soft != "unlimited" else pytest.approx(float("nan"), nan_ok=True))


def test_start_time_is_when_the_process_started():
    code = "from retail_reid.pipeline.edge.process_stats import start_time_seconds; print(start_time_seconds())"
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    after = time.time()
    # The boot time is whole seconds and the start time counts clock ticks: within a second either way.
    assert before - 1.0 <= float(out.stdout) <= after + 1.0


def test_the_exporter_lists_the_standard_process_metrics():
    text = EdgeMetrics(lambda: 1, lambda: 1.0, lambda: 0).render()
    for name, kind in (
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ):
        assert f"# TYPE {name} {kind}\n{name} " in text, name
        value = float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[1])
        assert value > 0, name
