"""Where a batch writes, and how a rerun knows a recording is done.

A recording is replayed into a work folder (OUT/.work/ID.PID), its completion marker is written
there last, and only then is the folder renamed to OUT/recordings/ID: so a worker killed at any
point leaves either nothing under recordings/ or a stale folder without a marker that matches
its inputs, and the rerun redoes it. The marker holds a hash of everything the result depends on
(the manifest row, the lane config, the POS log, the video's identity and the gallery's), so a
changed input is replayed again rather than skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from retail_reid.durable import fsync_dir, remove_tree, replace_atomically
from retail_reid.pipeline.batch.manifest import Recording

MARKER = "batch-complete.json"
RECORDINGS = "recordings"
WORK = ".work"
REQUIRED = ("events.jsonl", "passes.jsonl", "summary.json", "report.html")  # what every replay writes
SAMPLE_BYTES = 1 << 20  # a video is identified by its size, mtime and its first and last MiB


def recording_dir(out: Path, recording_id: str) -> Path:
    return out / RECORDINGS / recording_id


def work_dir(out: Path, recording_id: str) -> Path:
    """A work folder only this process writes (a restarted worker gets a new pid)."""
    return out / WORK / f"{recording_id}.{os.getpid()}"


def chunk_folder(out: Path, recording_id: str, index: int) -> Path:
    """Where a worker replays one chunk of a long recording (hidden: no recording is named so)."""
    return out / WORK / f".{recording_id}.chunk{index:04d}.{os.getpid()}"


def _video_identity(path: Path, h: hashlib._Hash) -> None:
    """Size, mtime and the first and last MiB: hashing terabytes of a chain's video in full would
    cost as much as reading it; a re-encoded or replaced file changes these."""
    try:
        st = path.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        with open(path, "rb") as f:
            h.update(f.read(SAMPLE_BYTES))
            if st.st_size > SAMPLE_BYTES:
                f.seek(max(SAMPLE_BYTES, st.st_size - SAMPLE_BYTES))
                h.update(f.read(SAMPLE_BYTES))
    except OSError as e:
        h.update(f"unreadable:{type(e).__name__}".encode())


def _file_content(path: Path, h: hashlib._Hash) -> None:
    try:
        with open(path, "rb") as f:
            while block := f.read(SAMPLE_BYTES):
                h.update(block)
    except OSError as e:
        h.update(f"unreadable:{type(e).__name__}".encode())


def inputs_digest(recording: Recording, gallery_identity: str) -> str:
    """sha256 over what the recording's outputs depend on; an unreadable input hashes as such, so
    its failure is redone on every run."""
    h = hashlib.sha256()
    row = {k: v for k, v in asdict(recording).items() if k not in ("config", "line")}
    h.update(json.dumps(row, default=str, sort_keys=True).encode())
    h.update(json.dumps(asdict(recording.config), default=str, sort_keys=True).encode())
    h.update(gallery_identity.encode())
    _file_content(recording.pos, h)
    _video_identity(recording.video, h)
    return h.hexdigest()


def is_complete(out: Path, recording_id: str, digest: str) -> bool:
    """Outputs present (none deleted by hand since) and made from these very inputs."""
    folder = recording_dir(out, recording_id)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = all((folder / name).is_file() for name in REQUIRED)
    return files and isinstance(marker, dict) and marker.get("inputs_sha256") == digest


def publish(work: Path, out: Path, recording_id: str, digest: str) -> Path:
    """Write the marker into the finished work folder, then rename it into place (replacing a stale
    or incomplete earlier attempt)."""
    marker = {"id": recording_id, "inputs_sha256": digest, "finished_unix": round(time.time(), 3)}
    replace_atomically(work / MARKER, (json.dumps(marker, indent=1) + "\n").encode(), "batch-marker")
    final = recording_dir(out, recording_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_tree(final)
    os.replace(work, final)
    fsync_dir(final.parent)
    return final
