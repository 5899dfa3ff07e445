"""A batch worker: loads the embedder and the gallery once, then replays recordings one after
another. Plain Python; the runner wraps it as a Ray actor, so this module imports without Ray."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.pipeline.batch.chunks import (
    CHUNK_POS,
    CHUNK_VIDEO,
    Chunk,
    ChunkError,
    ChunkPlan,
    ChunkRun,
    merge_chunks,
    write_chunk_inputs,
)
from retail_reid.pipeline.batch.manifest import Recording
from retail_reid.pipeline.batch.outputs import chunk_folder, publish, work_dir
from retail_reid.pipeline.replay import replay

if TYPE_CHECKING:
    from retail_reid.gallery import Gallery


@dataclass(frozen=True)
class GallerySpec:
    """The one gallery of a batch: a folder every worker reads, or a bundle (`reid gallery export`)
    each worker imports once into a local temporary gallery."""

    path: Path | None = None
    bundle: Path | None = None
    model: Path | None = None  # embedder model; default: the gallery's own (for a bundle: the shipped one)


class Status(StrEnum):
    DONE = "done"  # replayed in this run
    REUSED = "reused"  # complete from an earlier run, skipped
    FAILED = "failed"
    WHOLE = "whole"  # a chunk that cannot be cut exactly: replay the recording whole (never final)


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one recording."""

    id: str
    status: Status
    error: str | None = None
    seconds: float = 0.0
    frames: int = 0
    worker: str = ""


def open_gallery(spec: GallerySpec, scratch: Path) -> Gallery:
    """The gallery to match against; a bundle is imported into `scratch` first."""
    from retail_reid.gallery import Gallery
    from retail_reid.gallery.bundle import import_bundle
    from retail_reid.gallery.store import GalleryStore

    if spec.bundle is None:
        assert spec.path is not None  # the command takes a gallery folder or a bundle
        return Gallery.open(spec.path, model=spec.model)
    root = scratch / "gallery"
    GalleryStore.init(root, model=spec.model, operator="replay-batch")
    import_bundle(root, spec.bundle, operator="replay-batch")
    return Gallery.open(root, model=spec.model)


class ReplayWorker:
    """One per worker process: `load()` once, then `run()` per recording."""

    def __init__(self, spec: GallerySpec, threads: int = 1):
        self.spec = spec
        self.threads = threads
        self.gallery: Gallery | None = None  # load() opens it
        self.scratch: Path | None = None

    def load(self) -> str | None:
        """Open the gallery (and the embedder with it); the error's message if that fails, so the
        driver can stop the batch in one line rather than with a worker's traceback."""
        os.environ["REID_THREADS"] = str(self.threads)
        import cv2

        cv2.setNumThreads(self.threads)
        self.scratch = Path(tempfile.mkdtemp(prefix="reid-batch-worker-"))
        try:
            self.gallery = open_gallery(self.spec, self.scratch)
        except ReidError as e:
            return str(e)
        return None

    def pid(self) -> int:
        return os.getpid()

    def _loaded(self) -> Gallery:
        assert self.gallery is not None  # the runner calls load() before any recording
        return self.gallery

    def run(self, recording: Recording, out: Path, digest: str) -> Outcome:
        """Replay one recording into a work folder and publish it; any failure stays with this recording."""
        return self._publishing(
            recording,
            out,
            digest,
            lambda work: replay(
                recording.video, recording.pos, self._loaded(), work, recording.config, recording=recording.identity
            ),
        )

    def run_chunk(self, recording: Recording, plan: ChunkPlan, chunk: Chunk, out: Path) -> ChunkRun | Outcome:
        """Replay one time chunk of a long recording; the merge publishes the recording."""
        start = time.perf_counter()
        folder = chunk_folder(out, recording.id, chunk.index)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            shift = write_chunk_inputs(recording.video, recording.pos, plan, chunk, folder)
            replay(
                folder / CHUNK_VIDEO,
                folder / CHUNK_POS,
                self._loaded(),
                folder / "out",
                recording.config,
                recording=recording.identity,  # the merged summary keeps the first chunk's
            )
        except ChunkError as e:
            shutil.rmtree(folder, ignore_errors=True)
            return Outcome(id=recording.id, status=Status.WHOLE, error=str(e))
        except Exception as e:
            shutil.rmtree(folder, ignore_errors=True)
            return self._failed(recording, f"chunk {chunk.index}: {_message(e)}", start)
        return ChunkRun(chunk=chunk, folder=folder / "out", start=shift)

    def merge(self, recording: Recording, plan: ChunkPlan, runs: list[ChunkRun], out: Path, digest: str) -> Outcome:
        """Merge a recording's replayed chunks into its outputs and publish them."""
        try:
            return self._publishing(
                recording,
                out,
                digest,
                lambda work: merge_chunks(
                    runs, plan, recording.video, recording.pos, recording.config, self.gallery, work
                ),
            )
        finally:
            for run in runs:
                shutil.rmtree(run.folder.parent, ignore_errors=True)

    def _publishing(self, recording: Recording, out: Path, digest: str, make) -> Outcome:
        """`make(work)` writes a recording's outputs into a fresh work folder, which is then published."""
        start = time.perf_counter()
        work = work_dir(out, recording.id)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            summary = make(work)
            publish(work, out, recording.id, digest)
        except Exception as e:  # a recording no reader foresaw must still fail alone
            return self._failed(recording, _message(e), start)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return Outcome(
            id=recording.id,
            status=Status.DONE,
            seconds=round(time.perf_counter() - start, 3),
            frames=summary["frames_processed"],
            worker=_name(),
        )

    def _failed(self, recording: Recording, error: str, start: float) -> Outcome:
        return Outcome(
            id=recording.id,
            status=Status.FAILED,
            error=error,
            seconds=round(time.perf_counter() - start, 3),
            worker=_name(),
        )

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _name() -> str:
    """This worker as host:pid, for the summary."""
    return f"{os.uname().nodename}:{os.getpid()}"


def _message(e: Exception) -> str:
    """A user's mistake as its own one line; anything else with its kind, so it can be told apart."""
    return str(e) if isinstance(e, ReidError) else f"{type(e).__name__}: {e}"
