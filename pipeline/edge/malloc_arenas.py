"""A cap on glibc's malloc arenas for the long-running lane service.

glibc gives a thread that allocates while another holds the allocator's lock an arena of its own,
up to 8 per core, each grown in 64 MB heaps whose freed pages are seldom handed back. `reid edge`
runs several threads per lane (camera, lane, HTTP, webhook, MQTT, ONNX Runtime's pool) that pass
frames and crops between them, so how much freed memory stays resident grows with the number of
arenas those threads spread over. Two arenas give that a fixed bound (docs/edge.md, "Memory over a
day"). `MALLOC_ARENA_MAX` in the environment, read by glibc itself, wins; elsewhere (musl, macOS)
there is nothing to cap.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
EDGE_ARENAS = 2


def cap_malloc_arenas(arenas: int = EDGE_ARENAS) -> bool:
    """Cap the arenas of this process (call before threads start); whether the cap was set here."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library the process runs on
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, arenas))
