"""The service: one process running one lane, or several (`[[lane]]` tables in lane.toml). It opens
the gallery once (one ONNX session, used by every lane's thread at once: onnxruntime's `run` is
thread-safe and the embedder keeps no state between calls) with one watcher, so a newly published
version is seen by every lane; it serves one HTTP API; each lane has its own parts (`LaneService`).

Threads per lane: camera -> frame queue -> lane; HTTP and the POS file -> POS inbox -> lane; lane
-> alert log -> webhook / MQTT. Shared: the gallery watcher and the HTTP server. The state folder
(one per lane, locked while the service runs) holds everything that must survive a restart:
events.jsonl, the webhook cursor, the POS file position, evidence crops, and service.json (pid and
address while running).

Every thread is a `Worker` under the `Supervisor` (the main thread): one that dies is named in
/health (503) and counted until it is restarted after a back-off; too many deaths, or a
configuration error in a thread, stop the service with a non-zero exit status.

Stopping (SIGTERM or SIGINT): the HTTP server and the POS files stop taking events, the cameras
stop, each lane processes what is queued, decides everything pending and writes it, the webhooks
get `shutdown_grace_s` to deliver (all lanes at once), and the process exits 0. Undelivered alerts
wait on disk.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from retail_reid.errors import ReidError
from retail_reid.gallery import Gallery
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.edge.gallery_watch import GalleryWatcher
from retail_reid.pipeline.edge.http_api import ApiContext, ApiServer
from retail_reid.pipeline.edge.lane_service import LaneService
from retail_reid.pipeline.edge.metrics import ServiceMetrics
from retail_reid.pipeline.edge.settings import EdgeConfig, EdgeError
from retail_reid.pipeline.edge.supervisor import Supervisor
from retail_reid.pipeline.edge.worker import Worker

log = logging.getLogger("reid.edge")


class HttpThread(Worker):
    """The HTTP server's accept loop (`ApiServer.shutdown` ends it)."""

    def __init__(self, server: ApiServer):
        super().__init__("http")
        self.server = server

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.2)


class EdgeService:
    def __init__(self, lanes: list[tuple[EdgeConfig, LaneConfig]]):
        """`lanes`: from `load_edge_lanes`; the first lane's gallery, model, gallery_poll_s, http and
        shutdown_grace_s are the service's (the loader gives every lane the same)."""
        if not lanes:
            raise EdgeError("no lane to run")
        self.lane_configs = lanes
        self.config = lanes[0][0]
        self.started_at = time.time()
        self.stopping = threading.Event()
        self.lanes: list[LaneService] = []
        self.supervisor = Supervisor(self.config.restart_backoff_s, self.config.restart_limit)

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Open what can fail first (gallery, state folders, alert logs, HTTP port), then start the threads."""
        self._open_gallery()
        try:
            self._open_lanes()
            self._open_http()
        except BaseException:
            for lane in self.lanes:
                lane.release_lock()
            raise
        self._start_threads()
        url = f"http://{self.config.http.host}:{self.http.port}"
        for lane in self.lanes:
            lane.write_ready(url, self.http.port)
            log.info(
                "lane %s: listening on %s; camera %s; gallery %s version %d",
                lane.config.lane,
                url,
                lane.config.camera.source,
                self.config.gallery,
                self.gallery.version,
            )

    def _open_gallery(self) -> None:
        # no onnxruntime arena: a lane's memory stays flat over weeks (docs/edge.md, "Memory over a day")
        self.gallery = Gallery.open(self.config.gallery, model=self.config.model or None, arena=False)
        # Its first run allocates: not on the first alert's time.
        self.gallery.embedder.embed([np.zeros((64, 64, 3), np.uint8)])

    def _open_lanes(self) -> None:
        """Each lane's state folder (locked) and parts; one watcher for all lanes, its counters the
        process's series (no lane label)."""
        # Several lanes: each lane's series carry a lane label.
        self.metrics = ServiceMetrics(lambda: self.gallery.version, labelled=len(self.lane_configs) > 1)
        for edge, lane_config in self.lane_configs:
            lane = LaneService(edge, lane_config, self.gallery, self.metrics)
            lane.open()
            self.lanes.append(lane)
        self.watcher = GalleryWatcher(self.gallery, self.config.gallery_poll_s, self.lanes[0].metrics)

    def _open_http(self) -> None:
        cfg = self.config
        first = self.lanes[0].routes
        context = ApiContext(
            first.inbox,
            first.alerts,
            first.metrics,
            self.health,
            self._refresh_gallery,
            first.evidence_root,
            lanes={lane.config.lane: lane.routes for lane in self.lanes},
        )
        try:
            self.http = ApiServer(cfg.http, context)
        except OSError as e:
            raise EdgeError(
                f"edge.http: cannot listen on {cfg.http.host}:{cfg.http.port} ({e.strerror or e})"
            ) from None

    def _start_threads(self) -> None:
        """Every thread, each under the supervisor."""
        for lane in self.lanes:
            for worker in lane.start():
                self.supervisor.watch(worker, lane.metrics, lane.config.lane)
        service_metrics = self.lanes[0].metrics
        for worker in (self.watcher, HttpThread(self.http)):
            worker.start()
            self.supervisor.watch(worker, service_metrics)

    def _refresh_gallery(self) -> dict:
        switched = self.watcher.check()
        return {"switched": switched, "version": self.gallery.version, "error": self.watcher.error}

    # --- run and stop --------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, restarting threads that die, until one dies too often;
        then stop in order. Returns the exit status (1: a thread died too often); a thread that
        stopped on a user error (e.g. a zone outside the frame) raises it after the shutdown."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.start()
        while not self.stopping.wait(0.5):
            if not self.supervisor.check():
                break
        self.shutdown()
        if isinstance(self.supervisor.fatal, ReidError):
            raise self.supervisor.fatal
        return 0 if self.supervisor.fatal is None else 1

    def shutdown(self) -> None:
        log.info("stopping: finishing in-flight work")
        self.http.shutdown()
        self.http.server_close()  # waits for requests being served: a POS event answered 202 is in the inbox
        for lane in self.lanes:
            lane.stop_intake()
        self.watcher.stop()
        with ThreadPoolExecutor(len(self.lanes)) as pool:  # the lanes' grace periods run side by side
            list(pool.map(lambda lane: lane.finish(self.config.shutdown_grace_s), self.lanes))
        log.info("stopped")

    # --- health --------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict]:
        """(HTTP status, body). One lane: the lane's document (200 while it runs, 503 when its
        thread has stopped or hangs). Several: the service's status, each lane's problems named
        after it, and every lane's document under "lanes"; a lost camera degrades its lane only,
        and only a stopped lane thread (a restart is needed) makes it 503."""
        shared = self.supervisor.problems(None)  # the gallery watcher's and the HTTP server's
        reports = [
            lane.health(self.watcher.error, self.supervisor.problems(lane.config.lane) + shared) for lane in self.lanes
        ]
        failing = any(f for f, _ in reports)
        if len(reports) == 1:
            return (503 if failing else 200), reports[0][1]
        problems = [f"{body['lane']}: {p}" for _, body in reports for p in body["problems"]]
        first = reports[0][1]
        body = {
            "status": "failing" if failing else ("degraded" if problems else "ok"),
            "problems": problems,
            "uptime_s": round(time.time() - self.started_at, 1),
            "gallery": first["gallery"],
            "model": first["model"],
            "lanes": [body for _, body in reports],
        }
        return (503 if failing else 200), body
