"""Serving only files inside a folder the console was given: a path from an alert line or the
gallery database is checked before it is opened, so a crafted `..`, an absolute path or a symbolic
link that points elsewhere never reads a file outside the state, replay and gallery folders."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from retail_reid.images import IMAGE_SUFFIXES
from retail_reid.pipeline.evidence import CLIP_SUFFIXES as CLIPS

CLIP_SUFFIXES = frozenset(CLIPS)  # an alert's clip (the edge's [edge.clips]): MP4, or an older lane's AVI


def inside(root: Path, relpath: str, suffixes: frozenset[str] = IMAGE_SUFFIXES) -> Path | None:
    """The regular file `root/relpath` of a type in `suffixes` (images unless told), or None if the
    path leaves `root` in any way or names another type."""
    rel = PurePosixPath(relpath)
    if rel.is_absolute() or not rel.parts or any(part in ("", ".", "..") for part in rel.parts) or "\\" in relpath:
        return None
    if rel.suffix.lower() not in suffixes:
        return None
    base = root.resolve()
    try:
        path = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symbolic link loop
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path
