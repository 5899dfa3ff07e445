"""Fault injection at the writer's steps, so tests can kill a writer exactly there (kill -9) or make a
write fail as a full disk would. Inert unless the environment variables are set."""

from __future__ import annotations

import errno
import os
import signal

STOP_ENV = "REID_GALLERY_STOP_AT"  # the writer stops itself (SIGSTOP) on reaching this step
FAIL_ENV = "REID_GALLERY_FAIL_AT"  # the write at this step fails with ENOSPC

# The writer's steps, in the order a change reaches them.
STEPS = ("image", "version", "commit", "switch", "prune")


def checkpoint(step: str) -> None:
    """Called by the writer just before it does `step`."""
    if os.environ.get(FAIL_ENV) == step:
        raise OSError(errno.ENOSPC, f"No space left on device (injected by {FAIL_ENV}={step})")
    if os.environ.get(STOP_ENV) == step:
        os.kill(os.getpid(), signal.SIGSTOP)
