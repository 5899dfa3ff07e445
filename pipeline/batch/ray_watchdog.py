"""The Ray a batch starts dies with the batch, even under `kill -9`.

`ray.init()` fate-shares only the processes it starts itself (GCS, raylet, dashboard): Ray's
DashboardAgent and RuntimeEnvAgent, children of the raylet, outlive a killed driver (about 90 MB
each, deaf to SIGTERM). So before starting Ray the batch forks a small watchdog that notes, every
`POLL_S`, every process descending from the batch (each with its start time, so that a recycled
pid is never hit), and waits on a pipe that only the batch holds. A normal end says so through
the pipe; if the pipe closes without a word, the batch has died, and the watchdog SIGKILLs what it
noted and says so on stderr. Linux only (it reads /proc); elsewhere nothing is forked.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.5
GONE_WITHIN_S = 30.0  # the most the watchdog waits for the processes it killed to be gone
DONE = b"done"
PROC = Path("/proc")


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None once it is gone (or a zombie)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every live process below `root`: pid -> start time."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if (started := _start_time(pid)) is not None:
            found[pid] = started
            todo += children.get(pid, [])
    return found


def _watch(batch: int, pipe: int) -> None:
    """The watchdog's life: note the batch's processes until the pipe speaks or closes."""
    noted: dict[int, int] = {}
    while True:
        ready, _, _ = select.select([pipe], [], [], POLL_S)
        if not ready:
            noted.update(_descendants(batch))
            noted.pop(os.getpid(), None)
            continue
        if os.read(pipe, len(DONE)) == DONE:
            return
        killed = [pid for pid, started in noted.items() if _start_time(pid) == started]
        for pid in killed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(int(GONE_WITHIN_S / POLL_S)):  # until they have exited (a SIGKILL cannot be refused)
            if all(_start_time(pid) != noted[pid] for pid in killed):
                break
            time.sleep(POLL_S)
        print(
            f"reid replay-batch: process {batch} died; stopped the {len(killed)} Ray processes it left", file=sys.stderr
        )
        return


@contextlib.contextmanager
def ray_dies_with_this_process() -> Iterator[None]:
    """Around starting and using a local Ray: if this process is killed meanwhile, so is its Ray."""
    if not sys.platform.startswith("linux"):
        yield
        return
    read_end, write_end = os.pipe()
    batch = os.getpid()
    pid = os.fork()
    if pid == 0:  # the watchdog: its own session, so a Ctrl-C or a group kill meant for the batch spares it
        code = 0
        try:
            os.setsid()
            os.close(write_end)
            _watch(batch, read_end)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(read_end)
    try:
        yield
    finally:
        os.write(write_end, DONE)
        os.close(write_end)
        os.waitpid(pid, 0)
