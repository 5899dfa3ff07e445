"""`Supervisor`: watches the service's threads so that none dies unnoticed.

Every thread of the service is a `Worker`; one that ends with an exception while not asked to stop
has died. The supervisor (the main thread, which only waits for SIGTERM) looks at them every half
second: a death is logged, counted (`reid_thread_deaths_total{thread=...}`) and named in /health
(503) until the thread runs again; it is restarted after a back-off (`restart_backoff_s`, doubling
per death of that thread within `RESTART_WINDOW_S`, at most `MAX_BACKOFF_S`). A thread that dies
more than `restart_limit` times within the window, or that stopped on a configuration or input
error (a `ReidError`, e.g. a zone outside the frame: a restart would not help), makes the service
stop, and the process exits non-zero so that systemd restarts it (or, for exit 2, does not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from retail_reid.errors import ReidError
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.worker import Worker

log = logging.getLogger("reid.edge")

RESTART_WINDOW_S = 600.0  # deaths of a thread counted towards restart_limit: those of the last 10 minutes
MAX_BACKOFF_S = 60.0


@dataclass
class _Watched:
    """One thread under watch: where its deaths are counted, and its recent deaths."""

    worker: Worker
    metrics: EdgeMetrics
    lane: str  # "" for the service's own threads (gallery, http)
    deaths: deque[float] = field(default_factory=deque)  # monotonic times within the window
    restart_at: float | None = None  # dead, restarted at this monotonic time
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.lane}: {self.worker.name}" if self.lane else self.worker.name


class Supervisor:
    def __init__(self, backoff_s: float, limit: int):
        self.backoff_s = backoff_s
        self.limit = limit
        self._watched: list[_Watched] = []
        self._lock = threading.Lock()  # `check` (main thread) against `problems` (HTTP threads)
        self.fatal: BaseException | None = None  # why the service must stop: a user error, or too many deaths

    def watch(self, worker: Worker, metrics: EdgeMetrics, lane: str = "") -> None:
        self._watched.append(_Watched(worker=worker, metrics=metrics, lane=lane))

    def check(self, now: float | None = None) -> bool:
        """Note new deaths and restart the threads whose back-off has passed; False once the service
        must stop (`fatal` says why)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for w in self._watched:
                if w.restart_at is None and w.worker.failure is not None and not w.worker.alive:
                    self._died(w, now)
                elif w.restart_at is not None and now >= w.restart_at and self.fatal is None:
                    w.restart_at, w.error = None, ""
                    log.warning("%s thread: restarting", w.label)
                    w.metrics.thread_restarts.inc(w.worker.name)
                    w.worker.restart()
        return self.fatal is None

    def _died(self, w: _Watched, now: float) -> None:
        failure = w.worker.failure
        assert failure is not None
        w.metrics.thread_deaths.inc(w.worker.name)
        w.error = f"{type(failure).__name__}: {failure}" if not isinstance(failure, ReidError) else str(failure)
        while w.deaths and now - w.deaths[0] > RESTART_WINDOW_S:
            w.deaths.popleft()
        w.deaths.append(now)
        if isinstance(failure, ReidError):
            self.fatal = failure
            w.restart_at = float("inf")
            return
        if len(w.deaths) > self.limit:
            self.fatal = RuntimeError(
                f"{w.label} thread died {len(w.deaths)} times within {RESTART_WINDOW_S:.0f} s "
                f"(restart_limit {self.limit}); stopping ({w.error})"
            )
            log.error("%s", self.fatal)
            w.restart_at = float("inf")
            return
        wait = min(self.backoff_s * 2 ** (len(w.deaths) - 1), MAX_BACKOFF_S)
        w.restart_at = now + wait
        log.error("%s thread died (%s); restarting in %.1f s", w.label, w.error, wait)

    def problems(self, lane: str | None) -> list[str]:
        """What health says about the dead threads of `lane` (None: the service's own threads)."""
        with self._lock:
            return [
                f"{w.worker.name} thread died ({w.error})"
                + ("" if w.restart_at == float("inf") else f"; restart {len(w.deaths)} of {self.limit} pending")
                for w in self._watched
                if w.restart_at is not None and (w.lane or None) == lane
            ]
