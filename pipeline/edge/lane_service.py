"""One lane of the service: its state folder (locked while it runs), camera, POS intake, lane
thread, alert log, webhook and MQTT publisher, and its health. The gallery (and so the one ONNX
session) and the HTTP server are the service's, shared by every lane it runs (`EdgeService`).

The lanes share nothing else: each has its own threads and queues, so a lane whose camera is lost
only stops deciding on that lane (its health turns "degraded"); the others go on.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import time
from pathlib import Path

from retail_reid.durable import replace_atomically
from retail_reid.gallery import Gallery
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.camera import CameraFeed, FrameQueue
from retail_reid.pipeline.edge.clips import ClipEvidenceWriter, ClipRing
from retail_reid.pipeline.edge.http_api import LaneRoutes
from retail_reid.pipeline.edge.lane_worker import LaneWorker
from retail_reid.pipeline.edge.metrics import DROP_REASONS, EdgeMetrics, ServiceMetrics
from retail_reid.pipeline.edge.mqtt import MqttLink, MqttPublisher
from retail_reid.pipeline.edge.pos_intake import PosFileTailer, PosInbox
from retail_reid.pipeline.edge.pos_record import PosRecord
from retail_reid.pipeline.edge.settings import EdgeConfig, EdgeError
from retail_reid.pipeline.edge.webhook import WebhookSender
from retail_reid.pipeline.edge.worker import Worker
from retail_reid.pipeline.evidence import EvidenceWriter
from retail_reid.pipeline.lane import scan_warning
from retail_reid.pipeline.lane_references import lane_reference_sampler

log = logging.getLogger("reid.edge")

STUCK_AFTER_S = 30.0  # a lane thread silent this long is reported failing (HTTP 503: restart it)
LANE_STOP_TIMEOUT_S = 60.0

EVENTS_FILE = "events.jsonl"
READY_FILE = "service.json"
LOCK_FILE = "lock"
POS_OFFSET_FILE = "pos_file.offset.json"
EVIDENCE_FOLDER = "evidence"  # crops and clips, a folder per start; served at /evidence/...


class LaneService:
    """One lane's parts. `open` takes the state folder and builds them (what can fail, before any
    thread starts), `start` starts its threads, `stop_intake` and `finish` stop them in order."""

    def __init__(self, config: EdgeConfig, lane_config: LaneConfig, gallery: Gallery, service_metrics: ServiceMetrics):
        self.config = config
        self.lane_config = lane_config
        self.gallery = gallery
        self.service_metrics = service_metrics  # the service's registry, this lane's series bound in it
        self.state = Path(config.state_dir)
        self.started_at = time.time()
        self._lock_fd: int | None = None

    # --- start ---------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgeError(f"edge.state_dir: cannot create {self.state} ({e.strerror or e})") from None
        self._take_lock()
        try:
            self._build()
        except BaseException:
            self.release_lock()
            raise

    def _build(self) -> None:
        cfg = self.config
        # The gauges read parts made below, when scraped (after start).
        self.metrics = EdgeMetrics(
            self.service_metrics,
            lambda: float(self.camera.connected),
            lambda: self.webhook.pending() if self.webhook else 0,
            lambda: float(self.mqtt is not None and self.mqtt.connected),
            lane=cfg.lane,
        )
        # This start's name: in alert ids and the evidence folder, so neither repeats after a restart.
        run = secrets.token_hex(4)
        self.alerts = AlertLog(self.state / EVENTS_FILE, cfg.lane, f"{cfg.lane}-{run}")
        self.webhook = WebhookSender(self.alerts, cfg.webhook, self.state, self.metrics) if cfg.webhook.url else None
        self.frames = FrameQueue(cfg.camera.queue_frames, lambda: self.metrics.frames_dropped.inc("queue_full"))
        self.camera = CameraFeed(cfg.camera, self.frames, self.metrics)
        self.inbox = PosInbox(
            cfg.pos.queue_events,
            self.metrics,
            self.lane_config.events.clock_offset_s,
            cfg.pos.max_clock_skew_s,
            verify=lambda event: scan_warning(event, self.gallery),
        )
        try:
            self.pos_record = PosRecord(self.state)
        except OSError as e:
            raise EdgeError(f"{self.state}: cannot keep the POS record there ({e.strerror or e})") from None
        folder = f"{EVIDENCE_FOLDER}/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(self.started_at))}-{run}"
        min_free = int(cfg.evidence_min_free_mb * 1e6)
        self.clip_ring = ClipRing(cfg.clips) if cfg.evidence and cfg.clips.enabled else None
        self.evidence: EvidenceWriter | None
        if self.clip_ring is not None:
            offset = self.lane_config.events.clock_offset_s
            self.evidence = ClipEvidenceWriter(
                self.state, folder, self.clip_ring, offset, min_free, on_failure=self._evidence_failed
            )
        else:
            self.evidence = (
                EvidenceWriter(self.state, folder, min_free, on_failure=self._evidence_failed) if cfg.evidence else None
            )
        sampler = lane_reference_sampler(self.state, self.lane_config, self.gallery, cfg.lane)
        self.worker = LaneWorker(
            self.gallery,
            self.lane_config,
            self.camera,
            self.frames,
            self.inbox,
            self.alerts,
            self.evidence,
            self.metrics,
            clip_ring=self.clip_ring,
            references=sampler,
            labels=None if sampler is None else sampler.labels,
            pos_record=self.pos_record,
        )
        self.mqtt = (
            MqttLink(
                cfg.mqtt, cfg.lane, self.inbox, cfg.http.max_events_per_post, self.metrics, cfg.http.max_body_bytes
            )
            if cfg.mqtt.host
            else None
        )
        self.mqtt_publisher = (
            MqttPublisher(self.alerts, self.mqtt, self.state, self.metrics) if self.mqtt is not None else None
        )
        self.tailer = (
            PosFileTailer(
                cfg.pos.file, self.inbox, self.state / POS_OFFSET_FILE, cfg.pos.poll_s, cfg.pos.from_start, self.metrics
            )
            if cfg.pos.file
            else None
        )

    @property
    def routes(self) -> LaneRoutes:
        return LaneRoutes(self.inbox, self.alerts, self.metrics, self.state / EVIDENCE_FOLDER)

    def start(self) -> list[Worker]:
        """Start the lane's threads; returns them, for the supervisor."""
        if self.mqtt is not None:
            self.mqtt.start()
        parts: list[Worker] = [
            p for p in (self.worker, self.camera, self.webhook, self.mqtt_publisher, self.tailer) if p is not None
        ]
        for part in parts:
            part.start()
        return parts

    def write_ready(self, url: str, port: int) -> None:
        """STATE/service.json: the pid and address while the service runs."""
        ready = {
            "pid": os.getpid(),
            "lane": self.config.lane,
            "url": url,
            "port": port,
            "started_at": round(self.started_at, 3),
        }
        replace_atomically(self.state / READY_FILE, (json.dumps(ready) + "\n").encode(), "edge-ready")

    def _evidence_failed(self, reason: str) -> None:
        """Crops not saved: the alert goes out without them; counted, and logged when the reason changes."""
        self.metrics.evidence_failures.inc()
        if self.evidence is not None and reason != self.evidence.error:
            log.warning("lane %s: %s; alerts go out without them", self.config.lane, reason)

    def _take_lock(self) -> None:
        path = self.state / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EdgeError(
                f"{self.state}: in use by another reid edge (pid {holder}); each lane needs its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- stop ----------------------------------------------------------------------------------

    def stop_intake(self) -> None:
        """No more POS events from the file, no more frames: what the lane has is all it decides."""
        if self.tailer is not None:
            self.tailer.stop()
        self.camera.stop()

    def finish(self, grace_s: float) -> None:
        """The lane decides what is pending and writes it; the webhook and MQTT get `grace_s` to deliver."""
        self.worker.stop(LANE_STOP_TIMEOUT_S)
        if self.webhook is not None:
            self.webhook.stop(grace_s)
            if self.webhook.pending():
                log.warning(
                    "lane %s: webhook: %d alerts not delivered yet; they are sent after the restart",
                    self.config.lane,
                    self.webhook.pending(),
                )
        if self.mqtt_publisher is not None:
            self.mqtt_publisher.stop(grace_s)
            self.mqtt.stop()  # type: ignore[union-attr]
        self.alerts.close()
        self.pos_record.close()
        (self.state / READY_FILE).unlink(missing_ok=True)
        self.release_lock()

    # --- health --------------------------------------------------------------------------------

    def health(self, gallery_error: str | None, dead_threads: list[str]) -> tuple[bool, dict]:
        """(failing, body): "ok", or "degraded" with the problems named, or "failing" when the lane
        thread hangs or a thread has died (`dead_threads`, the supervisor's words)."""
        now = time.time()
        problems: list[str] = []
        camera = self.camera.status()
        if not camera["connected"]:
            problems.append(f"camera {camera['state']}" + (f": {camera['error']}" if camera["error"] else ""))
        lane = self.worker.status()
        if lane["frame_size_error"]:
            problems.append(lane["frame_size_error"])
        last_pos = self.inbox.last()
        last_pos_at = last_pos["received_at"] if last_pos else self.started_at
        silent = now - last_pos_at > self.config.pos.silent_after_s and (self.worker.last_pass_at or 0) > last_pos_at
        if silent:
            problems.append(f"POS silent for {now - last_pos_at:.0f} s while items pass")
        if gallery_error:
            problems.append(f"gallery: {gallery_error}")
        for part, name in (
            (self.evidence, "evidence"),
            (self.alerts, "alert log"),
            (self.tailer, "POS file"),
            (self.pos_record, "POS record"),
        ):
            if part is not None and part.error:
                problems.append(f"{name}: {part.error}")
        webhook = self.webhook.status() if self.webhook else None
        if webhook and webhook["error"]:
            problems.append(f"webhook: {webhook['error']} ({webhook['pending']} alerts pending)")
        if webhook and webhook["dead_letters"]:
            problems.append(
                f"webhook: {webhook['dead_letters']} alerts refused for good wait in the dead letters "
                "(reid edge dead-letters)"
            )
        mqtt = self.mqtt_publisher.status() if self.mqtt_publisher else None
        if mqtt and mqtt["error"]:
            problems.append(f"mqtt: {mqtt['error']} ({mqtt['pending']} alerts pending)")
        stuck = self.worker.alive and time.monotonic() - self.worker.beat > STUCK_AFTER_S
        if stuck:
            problems.insert(0, f"lane thread silent for over {STUCK_AFTER_S:.0f} s")
        problems[:0] = dead_threads
        failing = stuck or bool(dead_threads)
        embedder = self.gallery.embedder
        body = {
            "status": "failing" if failing else ("degraded" if problems else "ok"),
            "problems": problems,
            "lane": self.config.lane,
            "uptime_s": round(now - self.started_at, 1),
            "camera": camera,
            "frames": {
                "read_fps": camera["fps"],
                "processed_fps": lane["fps"],
                "read": int(self.metrics.frames_read.value()),
                "processed": lane["frames_processed"],
                "dropped": int(sum(self.metrics.frames_dropped.value(r) for r in DROP_REASONS)),
                "dropped_by": {r: int(self.metrics.frames_dropped.value(r)) for r in DROP_REASONS},
                "waiting": lane["frames_waiting"],
            },
            "lane_state": {"zone": lane["zone"], "item_passes": lane["passes"], "pos_waiting": lane["pos_waiting"]},
            "gallery": {"path": self.config.gallery, "version": self.gallery.version, "error": gallery_error},
            "model": {"path": str(embedder.path), "fingerprint": embedder.fingerprint},
            "pos": {
                "last_event": last_pos,
                "age_s": round(now - last_pos_at, 1) if last_pos else None,
                "silent": silent,
                "file": self.tailer.status() if self.tailer else None,
                "unverifiable": self.inbox.unverifiable_status(),
            },
            "alerts": {"last_seq": self.alerts.last_seq, "unwritten": self.alerts.unwritten, "lost": self.alerts.lost},
            "webhook": webhook,
            "mqtt": mqtt,
            "evidence": None if self.evidence is None else {"error": self.evidence.error},
        }
        return failing, body
