"""`reid edge` caps glibc's malloc arenas: threads that allocate together share two arenas instead
of one each (up to 8 per core), whose freed memory would otherwise stay resident. Each case runs in
a fresh interpreter, as the cap is set before the service's threads start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Eight threads allocate at once, then glibc's malloc_info lists the arenas (one <heap> each).
ARENAS_USED = """
import ctypes, re, sys, tempfile, threading
from retail_reid.pipeline.edge.malloc_arenas import cap_malloc_arenas
print(cap_malloc_arenas())
together = threading.Barrier(8)
def allocate():
    together.wait()
    kept = [bytearray(1000) for _ in range(20000)]
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile("r") as report:
    out = ctypes.c_void_p(libc.fopen(report.name.encode(), b"w"))
    libc.malloc_info(0, out)
    libc.fclose(out)
    print(len(re.findall("<heap nr=", report.read())))
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only"
)


def _arenas(**env: str) -> tuple[bool, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", ARENAS_USED], env={**environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_the_service_caps_the_arenas_its_threads_spread_over():
    assert _arenas() == (True, 2)


def test_malloc_arena_max_in_the_environment_wins():
    assert _arenas(MALLOC_ARENA_MAX="3") == (False, 3)
