"""Durable file writes: write to a temporary name, fsync, rename, fsync the directory, so that a
reader or a crash sees either the old file or the whole new one. Used by the gallery's writer and
by the edge service's state files (alert log cursor, webhook cursor); and appending whole lines
(`append_lines`: the edge's alert log and POS record)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from retail_reid.faults import checkpoint

log = logging.getLogger("reid.durable")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A sibling name unique to this process, hidden so no reader mistakes it for the real file."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_durably(path: Path, data: bytes, step: str) -> None:
    """Write `data` to `path` and fsync it; callers write to a temporary name and rename it into place."""
    checkpoint(step)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def append_lines(fd: int, data: bytes, size: int, path: Path) -> None:
    """Append whole lines to the file `path` open at `fd` (O_APPEND), whose whole lines end at
    `size`, and fsync them. If the disk takes less (full), the file is cut back to `size`, so it
    only ever holds whole lines, and the OSError is raised."""
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            log.error("%s: cannot cut a partly written line back (%s)", path, e.strerror or e)
        raise


def replace_atomically(path: Path, data: bytes, step: str) -> None:
    """Make `path` hold `data`, all or nothing, surviving a crash at any point."""
    tmp = temp_name(path)
    try:
        write_durably(tmp, data, step)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    """Delete a directory by first renaming it aside, so a crash never leaves it half deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
