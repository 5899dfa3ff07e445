"""Prometheus metrics through prometheus_client: one registry per service (not the library's global
one, so several services, or tests, in one process never collide), holding this service's metric
families and the library's standard process collector (process_cpu_seconds_total,
process_resident_memory_bytes, ...). Label sets are fixed when a lane's series are made (event
types, POS sources), so the number of series, and the memory they take, never grows with time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from retail_reid.pipeline.records import EventType
from retail_reid.pipeline.types import Unverifiable

# No `_created` series next to every counter and histogram: the dashboard and rules do not use them,
# and they would double the series scraped (a process-wide switch of the library).
prometheus_client.disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what `generate_latest` writes
# Seconds: a frame takes milliseconds, a frame with embeddings up to a few hundred.
PROCESSING_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Seconds from a frame's capture to the lane having processed it: how far the lane runs behind.
FRAME_AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Seconds from an item leaving the zone to its alert being written (target: p95 under 1 s).
ALERT_LATENCY_BUCKETS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 5.0, 10.0)
# Seconds from a second scan to its double-scan event: it waits out the void window (10 s by
# default) first, since a void may still cancel the scan, so it has buckets of its own.
DOUBLE_SCAN_LATENCY_BUCKETS = (1.0, 2.5, 5.0, 7.5, 9.0, 10.0, 12.5, 15.0, 20.0, 30.0, 60.0)

POS_SOURCES = ("http", "file", "mqtt")
DROP_REASONS = ("queue_full", "frame_size", "decode_late")
# The `Worker` names: each lane's threads, then the service's own (counted on the first lane's metrics).
THREADS = ("camera", "lane", "webhook", "mqtt", "pos-file", "gallery", "http")


M = TypeVar("M", Counter, Gauge, Histogram)


def _series(family: M, lane: dict[str, str]) -> M:
    """The family's series of one lane (the family itself where series carry no lane label)."""
    return family.labels(**lane) if lane else family


def observed(metric: Counter | Histogram) -> float:
    """A counter's count or a histogram's number of observations (prometheus_client has no getter:
    read through its public `collect`)."""
    samples = (s for family in metric.collect() for s in family.samples)
    return next(s.value for s in samples if s.name.endswith(("_total", "_count")))


class LaneCounter:
    """One lane's series of a counter family: one per label value, all made up front, so an unknown
    value is an error rather than a new series."""

    def __init__(self, family: Counter, lane: dict[str, str], label: str = "", values: Iterable[str] = ()):
        self.name = next(iter(family.describe())).name
        if label:
            self._by_value = {str(v): family.labels(**{label: v}, **lane) for v in values}
        else:
            self._by_value = {"": _series(family, lane)}

    def _get(self, value: str) -> Counter:
        try:
            return self._by_value[value]
        except KeyError:
            raise KeyError(f"{self.name}: no series {value!r} (known: {sorted(self._by_value)})") from None

    def inc(self, value: str = "", amount: float = 1.0) -> None:
        self._get(value).inc(amount)

    def value(self, value: str = "") -> float:
        return observed(self._get(value))


class ServiceMetrics:
    """The metric families of one service and the registry /metrics renders. With several lanes
    (`labelled`) a lane's series carry lane="NAME"; the gallery's and the process's are the whole
    service's, without that label."""

    def __init__(self, gallery_version: Callable[[], float], labelled: bool = False):
        r = self.registry = CollectorRegistry()
        lane = ("lane",) if labelled else ()
        self.labelled = labelled

        def counter(name: str, help_text: str, label: str = "") -> Counter:
            return Counter(name, help_text, (label, *lane) if label else lane, registry=r)

        def histogram(name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, help_text, lane, registry=r, buckets=buckets)

        def gauge(name: str, help_text: str) -> Gauge:
            return Gauge(name, help_text, lane, registry=r)

        self.frames_read = counter("reid_frames_read_total", "Frames read from the camera.")
        self.frames_processed = counter("reid_frames_processed_total", "Frames run through the lane.")
        self.frames_dropped = counter(
            "reid_frames_dropped_total",
            "Frames not processed: the lane fell behind (queue_full), the frame size changed (frame_size), "
            "or a video file played live could not be decoded in time (decode_late).",
            "reason",
        )
        self.processing = histogram(
            "reid_frame_processing_seconds", "Time to run one frame through the lane.", PROCESSING_BUCKETS
        )
        self.frame_age = histogram(
            "reid_frame_age_seconds",
            "From a frame's capture to the lane having processed it "
            "(queue wait included): how far the lane runs behind real time.",
            FRAME_AGE_BUCKETS,
        )
        self.alert_latency = histogram(
            "reid_alert_latency_seconds",
            "From an item leaving the zone (its last frame) to its loss alert being written "
            "(double scans are in reid_double_scan_latency_seconds).",
            ALERT_LATENCY_BUCKETS,
        )
        self.double_scan_latency = histogram(
            "reid_double_scan_latency_seconds",
            "From a second scan of an item already paid for to its double_scan event being written "
            "(after the void window).",
            DOUBLE_SCAN_LATENCY_BUCKETS,
        )
        self.events = counter("reid_events_total", "Alerts and basket lines written, by type.", "type")
        self.pos_received = counter("reid_pos_events_total", "POS events accepted, by source.", "source")
        self.pos_rejected = counter(
            "reid_pos_rejected_total", "POS payloads or lines refused as malformed, by source.", "source"
        )
        self.pos_unverifiable = counter(
            "reid_pos_unverifiable_total",
            "Scans the camera cannot check, by reason: made while the camera was down (camera_down, not "
            "judged), of a barcode the gallery's catalogue lacks (unknown_barcode) or of a SKU the gallery "
            "has no photos of (unknown_sku).",
            "reason",
        )
        self.camera_reconnects = counter(
            "reid_camera_reconnects_total", "Times the camera or stream was lost and reopened."
        )
        self.evidence_failures = counter(
            "reid_evidence_failures_total", "Alerts written without their crops (disk full or unwritable)."
        )
        self.webhook_delivered = counter("reid_webhook_delivered_total", "Alerts the webhook receiver accepted.")
        self.webhook_failures = counter("reid_webhook_failures_total", "Webhook attempts that failed (to be retried).")
        self.webhook_dead_lettered = counter(
            "reid_webhook_dead_letters_total",
            "Alerts the webhook receiver refused for good, set aside in the dead letters so later ones go on.",
        )
        self.thread_deaths = counter(
            "reid_thread_deaths_total",
            "Service threads that ended with an error, by thread (each is restarted after a back-off).",
            "thread",
        )
        self.thread_restarts = counter(
            "reid_thread_restarts_total", "Service threads restarted after they died, by thread.", "thread"
        )
        self.mqtt_delivered = counter("reid_mqtt_delivered_total", "Alerts the MQTT broker acknowledged.")
        self.mqtt_failures = counter("reid_mqtt_failures_total", "MQTT publish attempts that failed (to be retried).")
        self.mqtt_connected = gauge(
            "reid_mqtt_connected", "1 while connected to the MQTT broker (0 also when none is configured)."
        )
        self.webhook_pending = gauge("reid_webhook_pending", "Alerts written but not yet delivered to the webhook.")
        self.camera_connected = gauge("reid_camera_connected", "1 while frames are arriving from the camera.")
        # The whole service's, one series whatever the lanes.
        self.gallery_reloads = Counter(
            "reid_gallery_reloads_total", "Newly published gallery versions switched to.", registry=r
        )
        self.gallery_reload_failures = Counter(
            "reid_gallery_reload_failures_total", "Gallery versions that could not be switched to.", registry=r
        )
        Gauge("reid_gallery_version", "Gallery version in use.", registry=r).set_function(gallery_version)
        ProcessCollector(registry=r)  # the standard process_* metrics, read from /proc (Linux)

    def render(self) -> str:
        """The /metrics text: every lane's series and the process's."""
        return prometheus_client.generate_latest(self.registry).decode()


class EdgeMetrics:
    """One lane's series of every metric the service exports; the lane's parts update the ones they own."""

    def __init__(
        self,
        service: ServiceMetrics,
        camera_connected: Callable[[], float],
        webhook_pending: Callable[[], float],
        mqtt_connected: Callable[[], float] = lambda: 0.0,
        lane: str = "",
    ):
        """`lane`: this lane's name, its series' lane label where `service` is labelled."""
        s = self.service = service
        bound = {"lane": lane} if service.labelled else {}

        def counter(family: Counter, label: str = "", values: Iterable[str] = ()) -> LaneCounter:
            return LaneCounter(family, bound, label, values)

        self.frames_read = counter(s.frames_read)
        self.frames_processed = counter(s.frames_processed)
        self.frames_dropped = counter(s.frames_dropped, "reason", DROP_REASONS)
        self.processing = _series(s.processing, bound)
        self.frame_age = _series(s.frame_age, bound)
        self.alert_latency = _series(s.alert_latency, bound)
        self.double_scan_latency = _series(s.double_scan_latency, bound)
        self.events = counter(s.events, "type", EventType)
        self.pos_received = counter(s.pos_received, "source", POS_SOURCES)
        self.pos_rejected = counter(s.pos_rejected, "source", POS_SOURCES)
        self.pos_unverifiable = counter(s.pos_unverifiable, "reason", Unverifiable)
        self.camera_reconnects = counter(s.camera_reconnects)
        self.evidence_failures = counter(s.evidence_failures)
        self.gallery_reloads = LaneCounter(s.gallery_reloads, {})
        self.gallery_reload_failures = LaneCounter(s.gallery_reload_failures, {})
        self.webhook_delivered = counter(s.webhook_delivered)
        self.webhook_failures = counter(s.webhook_failures)
        self.webhook_dead_lettered = counter(s.webhook_dead_lettered)
        self.thread_deaths = counter(s.thread_deaths, "thread", THREADS)
        self.thread_restarts = counter(s.thread_restarts, "thread", THREADS)
        self.mqtt_delivered = counter(s.mqtt_delivered)
        self.mqtt_failures = counter(s.mqtt_failures)
        for family, read in (
            (s.mqtt_connected, mqtt_connected),
            (s.webhook_pending, webhook_pending),
            (s.camera_connected, camera_connected),
        ):
            _series(family, bound).set_function(read)

    def render(self) -> str:
        """The service's /metrics text (every lane's)."""
        return self.service.render()
