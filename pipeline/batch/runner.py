"""The batch driver: decide what is left to do, run it on Ray actors, write the chain summary.

Ray is an optional extra (`pip install 'retail-reid[ray]'`); without an address `ray.init()`
starts Ray on this machine, so a laptop or one server needs no cluster. On a cluster every node
must reach the manifest's files and OUT at the same paths (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from retail_reid.errors import ReidError
from retail_reid.pipeline.batch.chunks import Chunk, ChunkPlan, ChunkRun, plan_chunks
from retail_reid.pipeline.batch.manifest import Recording
from retail_reid.pipeline.batch.outputs import RECORDINGS, WORK, inputs_digest, is_complete
from retail_reid.pipeline.batch.ray_watchdog import ray_dies_with_this_process
from retail_reid.pipeline.batch.summary import write_chain_summary
from retail_reid.pipeline.batch.worker import GallerySpec, Outcome, ReplayWorker, Status
from retail_reid.pipeline.pos import read_pos_log

LOCK = ".batch.lock"


class BatchError(ReidError, RuntimeError):
    """The batch as a whole cannot run (Ray missing or unreachable, gallery unusable, OUT busy)."""


@dataclass(frozen=True)
class BatchOptions:
    workers: int | None = None  # default: as many as Ray has CPUs for
    address: str | None = None  # None: start Ray here (or use the one this process already started)
    threads: int = 1  # inference threads (and Ray CPUs) per worker
    chunk_s: float = 0.0  # recordings longer than 1.5 times this are split into chunks this long; 0: never
    overlap_s: float = 120.0  # each chunk replays this much before and after the frames it owns
    progress: bool = False


# A Ray started here (no --address) serves this machine alone: keep its processes on the loopback
# address rather than the machine's network address (Ray's default on Linux).
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def require_ray(local: bool = True):
    """The ray module, imported only when a batch has work (the [ray] extra is optional). `local`:
    the Ray this process starts binds to 127.0.0.1 (read when ray is first imported)."""
    if local:
        os.environ.update(LOCAL_ONLY_ENV)
    try:
        import ray
    except ImportError:
        raise BatchError("Ray is not installed: pip install 'retail-reid[ray]'") from None
    return ray


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One batch at a time per OUT: two drivers would replay the same recordings into it."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(f"{out}: another replay-batch is writing there") from None
        yield


def gallery_identity(spec: GallerySpec) -> str:
    """What the outputs depend on in the gallery: its model and published version (for a folder,
    opened here, so a wrong path fails before any worker starts) or the bundle's checksum."""
    import hashlib

    if spec.bundle is not None:
        if not spec.bundle.is_file():
            raise BatchError(f"{spec.bundle}: gallery bundle not found")
        h = hashlib.sha256()
        with open(spec.bundle, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return f"bundle:{h.hexdigest()}:{spec.model or ''}"
    from retail_reid.gallery import Gallery

    assert spec.path is not None  # the command takes a gallery folder or a bundle
    g = Gallery.open(spec.path, model=spec.model)
    return f"gallery:{spec.path.resolve()}:{g.embedder.fingerprint}:{g.version}"


def _video_shape(video: Path) -> tuple[int, float]:
    """Frames the container lists and its frame rate (0 frames when it cannot be opened: the worker
    then names the problem)."""
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            return 0, 0.0
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


def _plan(recording: Recording, options: BatchOptions) -> tuple[int, ChunkPlan | None]:
    """The recording's frame count, and its chunks when it is long enough to split."""
    frames, fps = _video_shape(recording.video)
    if options.chunk_s <= 0 or frames <= 0 or not 0 < fps < 1000 or recording.video.is_dir():
        return frames, None
    try:
        pos, _ = read_pos_log(recording.pos)
    except ReidError:
        return frames, None  # the whole replay reports it
    return frames, plan_chunks(frames, fps, pos, recording.config, options.chunk_s, options.overlap_s)


def run_batch(recordings: list[Recording], spec: GallerySpec, out: str | Path, options: BatchOptions) -> dict:
    """Replay every recording not already complete in OUT; write OUT/summary.json and OUT/index.html.
    Returns the chain summary."""
    out = Path(out)
    with _exclusive(out):
        shutil.rmtree(out / WORK, ignore_errors=True)  # work of killed workers: never complete
        for trash in (out / RECORDINGS).glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        identity = gallery_identity(spec)
        digests = {r.id: inputs_digest(r, identity) for r in recordings}
        outcomes = {
            r.id: Outcome(id=r.id, status=Status.REUSED) for r in recordings if is_complete(out, r.id, digests[r.id])
        }
        todo = [r for r in recordings if r.id not in outcomes]
        run = RunTiming()
        if todo:
            outcomes.update(_run_on_ray(_Batch(todo, digests, spec, out, options, run)))
        shutil.rmtree(out / WORK, ignore_errors=True)
        return write_chain_summary(recordings, [outcomes[r.id] for r in recordings], out, asdict(run))


@dataclass
class RunTiming:
    """How this run went, for the summary: workers, their start-up, and the replay itself (from the
    first recording handed out to the last result), which is what throughput is measured over."""

    workers: int = 0
    start_seconds: float = 0.0
    replay_seconds: float = 0.0


@dataclass
class _Batch:
    """What is left to replay in this run, and how."""

    todo: list[Recording]
    digests: dict[str, str]  # inputs hash by recording id
    spec: GallerySpec
    out: Path
    options: BatchOptions
    run: RunTiming


def _run_on_ray(batch: _Batch) -> dict[str, Outcome]:
    options = batch.options
    ray = require_ray(local=options.address is None)
    if ray.is_initialized():  # a Ray this process started already (a test's): used, left running
        return _schedule(ray, batch)
    local = options.address is None
    with ray_dies_with_this_process() if local else contextlib.nullcontext():
        try:
            # No dashboard: a batch has no one to show it to, and it is one process fewer to leave behind.
            ray.init(address=options.address, log_to_driver=False, include_dashboard=False if local else None)
        except Exception as e:  # Ray raises several kinds (ConnectionError, RuntimeError, its own) for one fact
            where = options.address or "this machine"
            raise BatchError(f"cannot start or reach Ray at {where}: {type(e).__name__}: {e}") from None
        try:
            return _schedule(ray, batch)
        finally:
            ray.shutdown()


@dataclass
class _Job:
    """One call on a worker: a whole recording, a chunk of one, or the merge of its chunks."""

    recording: Recording
    chunk: Chunk | None = None
    merge: bool = False


@dataclass
class _Split:
    """A chunked recording in progress."""

    plan: ChunkPlan
    runs: dict[int, ChunkRun]
    failed: bool = False


def _schedule(ray, batch: _Batch) -> dict[str, Outcome]:
    """Longest recordings first (shortest total time), one call in flight per worker; a worker that
    dies fails its recording (the rerun redoes it) and is replaced. A chunk that cannot be cut
    exactly sends its recording back to be replayed whole."""
    todo, digests, spec, out, options, run = (
        batch.todo,
        batch.digests,
        batch.spec,
        batch.out,
        batch.options,
        batch.run,
    )
    planned = {r.id: _plan(r, options) for r in todo}
    splits = {rid: _Split(plan, {}) for rid, (_, plan) in planned.items() if plan is not None}
    queue: list[_Job] = []
    for r in sorted(todo, key=lambda r: planned[r.id][0], reverse=True):
        split = splits.get(r.id)
        queue += [_Job(r, chunk=c) for c in split.plan.chunks] if split else [_Job(r)]
    cpus = int(ray.available_resources().get("CPU", 1))
    n = max(1, min(options.workers or max(cpus // options.threads, 1), len(queue)))
    actor_class = ray.remote(num_cpus=options.threads)(ReplayWorker)

    def start_workers(count: int) -> list:
        """`count` workers, loading the gallery side by side."""
        started = [actor_class.remote(spec, options.threads) for _ in range(count)]
        for error in ray.get([a.load.remote() for a in started]):
            if error is not None:
                raise BatchError(f"worker cannot load the gallery: {error}")
        return started

    outcomes: dict[str, Outcome] = {}
    inflight = {}
    with (
        tqdm(total=len(todo), desc="recordings", unit="rec", disable=not options.progress) as rec_bar,
        tqdm(
            total=sum(f for f, _ in planned.values()), desc="frames", unit="frame", disable=not options.progress
        ) as frame_bar,
    ):
        started = time.perf_counter()
        actors = start_workers(n)
        ready = time.perf_counter()
        run.workers, run.start_seconds = n, round(ready - started, 3)

        def submit(actor) -> None:
            while queue:
                job = queue.pop(0)
                r = job.recording
                if r.id in outcomes or (r.id in splits and splits[r.id].failed and job.chunk is not None):
                    continue  # its recording has failed or is being replayed whole
                split = splits.get(r.id)
                if job.merge:
                    assert split is not None  # only a split recording has chunks to run or merge
                    runs = [split.runs[c.index] for c in split.plan.chunks]
                    ref = actor.merge.remote(r, split.plan, runs, out, digests[r.id])
                elif job.chunk is not None:
                    assert split is not None  # as above
                    ref = actor.run_chunk.remote(r, split.plan, job.chunk, out)
                else:
                    ref = actor.run.remote(r, out, digests[r.id])
                inflight[ref] = (actor, job)
                return

        def finish(r: Recording, outcome: Outcome) -> None:
            outcomes[r.id] = outcome
            rec_bar.update(1)
            if outcome.status is Status.FAILED:
                rec_bar.write(f"failed: {r.id}: {outcome.error}")

        for actor in actors:
            submit(actor)
        while inflight:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            actor, job = inflight.pop(ref)
            r = job.recording
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                result = Outcome(
                    id=r.id, status=Status.FAILED, error=f"worker died while replaying it ({type(e).__name__})"
                )
                actor = start_workers(1)[0] if queue else None
                actors += [actor] if actor is not None else []
            split = splits.get(r.id)
            if isinstance(result, ChunkRun):
                assert split is not None  # what a chunk's replay answers: its recording was split
                split.runs[result.chunk.index] = result
                frame_bar.update(result.chunk.own[1] - result.chunk.own[0])
                if len(split.runs) == len(split.plan.chunks) and not split.failed:
                    queue.insert(0, _Job(r, merge=True))
            elif result.status is Status.WHOLE:
                assert split is not None  # as above
                if not split.failed:
                    split.failed = True
                    rec_bar.write(f"{r.id}: replayed whole: {result.error}")
                    queue.insert(0, _Job(r))
            elif r.id not in outcomes:
                if split is not None:
                    split.failed = True
                finish(r, result)
                frame_bar.update(result.frames if split is None else 0)
            if actor is not None:
                submit(actor)
        run.replay_seconds = round(time.perf_counter() - ready, 3)
        _stop(ray, actors)
    return outcomes


def _stop(ray, actors: list) -> None:
    """Let live workers drop their scratch galleries, then end them (dead ones are gone already)."""
    for actor in actors:
        with contextlib.suppress(ray.exceptions.RayActorError):
            ray.get(actor.close.remote())
        ray.kill(actor)
