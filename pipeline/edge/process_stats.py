"""The standard Prometheus process metrics (process_cpu_seconds_total, process_open_fds, ...),
read from /proc/self as the official client libraries do, so dashboards and alert rules written
for any exporter work on the lane service too. Linux only: elsewhere a value is NaN."""

from __future__ import annotations

import os
import resource

NAN = float("nan")
STAT_STARTTIME = 21  # /proc/self/stat field 22 (1-based): start time in clock ticks after boot


def cpu_seconds() -> float:
    """User plus system CPU time of this process, in seconds."""
    t = os.times()
    return t.user + t.system


def resident_memory_bytes() -> float:
    """This process's resident set size."""
    return _statm(1)


def virtual_memory_bytes() -> float:
    return _statm(0)


def _statm(field: int) -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return float(int(f.read().split()[field]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return NAN


def open_fds() -> float:
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return NAN


def max_fds() -> float:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return NAN if soft == resource.RLIM_INFINITY else float(soft)


def start_time_seconds() -> float:
    """When this process started, in Unix seconds: its start in ticks after boot, plus the boot time."""
    try:
        with open("/proc/self/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        with open("/proc/stat", encoding="ascii", errors="replace") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        return boot + int(fields[STAT_STARTTIME - 2]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return NAN
