"""Durable file writes (write to a temporary name, fsync, rename, fsync the directory) and the
content-addressed image store: a reader or a crash sees either the old file or the whole new one."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from gallery.faults import checkpoint

IMAGES_DIR = "images"

# Image formats recognised by their first bytes, so the stored file gets a truthful extension.
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A sibling name unique to this process, hidden so no reader mistakes it for the real file."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, step: str) -> None:
    """Write `data` to `path` and fsync it; callers write to a temporary name and rename it into place."""
    checkpoint(step)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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


def image_extension(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return ".img"


def image_relpath(sha256: str, ext: str) -> str:
    """Where a photo with this content lives, relative to the gallery directory."""
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256}{ext}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_image(root: Path, relpath: str, data: bytes) -> bool:
    """Put a photo into the content-addressed store; True if it was not there before."""
    path = root / relpath
    if path.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, data, "image")
    return True


def remove_tree(path: Path) -> None:
    """Delete a directory by first renaming it aside, so a crash never leaves it half deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
