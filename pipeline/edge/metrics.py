"""Prometheus metrics, written by hand: the text format is a few lines per metric, and the edge
box then needs no client library. Label sets are fixed when a metric is made (event types, POS
sources), so the number of series, and the memory they take, never grows with time."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from retail_reid.pipeline.edge import process_stats
from retail_reid.pipeline.types import EventType, Unverifiable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a frame takes milliseconds, a frame with embeddings up to a few hundred.
PROCESSING_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Seconds from a frame's capture to the lane having processed it: how far the lane runs behind.
FRAME_AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Seconds from an item leaving the zone to its alert being written (target: p95 under 1 s).
ALERT_LATENCY_BUCKETS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 5.0, 10.0)
# Seconds from a second scan to its double-scan event: it waits out the void window (10 s by
# default) first, since a void may still cancel the scan, so it has buckets of its own.
DOUBLE_SCAN_LATENCY_BUCKETS = (1.0, 2.5, 5.0, 7.5, 9.0, 10.0, 12.5, 15.0, 20.0, 30.0, 60.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


V = TypeVar("V")  # what a metric keeps per series


class _Metric(Generic[V]):
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = (), values: Iterable[tuple[str, ...]] = ()):
        self.name, self.help, self.label_names = name, help_text, labels
        self.lane = ""  # set: every series carries lane="..." (a service of several lanes)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], V] = {}
        for v in values if labels else [()]:
            self._series[tuple(v)] = self._zero()

    def _zero(self) -> V:
        raise NotImplementedError

    def _key(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        if labels not in self._series:
            raise KeyError(f"{self.name}: no series {labels!r} (known: {sorted(self._series)})")
        return labels

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self.samples()]

    def _lane_label(self) -> str:
        return f'lane="{_escape(self.lane)}"' if self.lane else ""

    def samples(self) -> list[str]:
        """The sample lines, without HELP and TYPE."""
        with self._lock:
            return [line for labels, value in self._series.items() for line in self._sample_lines(labels, value)]

    def _sample_lines(self, labels: tuple[str, ...], value: V) -> list[str]:
        raise NotImplementedError


class _Scalar(_Metric[float]):
    """A metric of one number per series."""

    def _zero(self) -> float:
        return 0.0

    def _sample_lines(self, labels: tuple[str, ...], value: float) -> list[str]:
        name = f"{self.name}{_labels(self.label_names, labels, self._lane_label())}"
        return [f"{name} {_number(value)}"]


class Counter(_Scalar):
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            key = self._key(labels)
            self._series[key] += amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._series[self._key(labels)]


class Gauge(_Scalar):
    """A value that is set, or read from a function when scraped."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None):
        super().__init__(name, help_text)
        self._read = read

    def set(self, value: float) -> None:
        with self._lock:
            self._series[()] = float(value)

    def value(self) -> float:
        if self._read is not None:
            return float(self._read())
        with self._lock:
            return self._series[()]

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels((), (), self._lane_label())} {_number(self.value())}"]


class ReadCounter(Gauge):
    """A counter kept elsewhere (the kernel's CPU time), read when scraped."""

    kind = "counter"


@dataclass
class _Observed:
    counts: list[int]  # per bucket (made cumulative when rendered)
    total: float = 0.0  # sum of the values
    n: int = 0  # how many


class Histogram(_Metric[_Observed]):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        self.buckets = (*sorted(buckets), math.inf)
        super().__init__(name, help_text)

    def _zero(self) -> _Observed:
        return _Observed([0] * len(self.buckets))

    def observe(self, value: float) -> None:
        with self._lock:
            state = self._series[()]
            for i, upper in enumerate(self.buckets):
                if value <= upper:
                    state.counts[i] += 1
                    break
            state.total += value
            state.n += 1

    def count(self) -> int:
        with self._lock:
            return self._series[()].n

    def _sample_lines(self, labels: tuple[str, ...], value: _Observed) -> list[str]:
        counts, total, n = value.counts, value.total, value.n
        lines, running, lane = [], 0, self._lane_label()
        for upper, c in zip(self.buckets, counts, strict=True):
            running += c
            lines.append(f"{self.name}_bucket{_labels(('le',), (_number(upper),), lane)} {running}")
        rest = _labels((), (), lane)
        return [*lines, f"{self.name}_sum{rest} {_number(total)}", f"{self.name}_count{rest} {n}"]


M = TypeVar("M", bound=_Metric)


class Registry:
    """The metrics in the order /metrics lists them."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: M) -> M:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics.append(metric)
        return metric

    @property
    def metrics(self) -> list[_Metric]:
        return list(self._metrics)

    def render(self) -> str:
        return "\n".join(line for m in self._metrics for line in m.render()) + "\n"


POS_SOURCES = ("http", "file", "mqtt")
# Series of the whole process, not of a lane: with several lanes they carry no lane label, listed once.
SHARED = frozenset({"reid_gallery_version", "reid_gallery_reloads_total", "reid_gallery_reload_failures_total"})
DROP_REASONS = ("queue_full", "frame_size", "decode_late")
# The `Worker` names: each lane's threads, then the service's own (counted on the first lane's metrics).
THREADS = ("camera", "lane", "webhook", "mqtt", "pos-file", "gallery", "http")


class EdgeMetrics:
    """Every metric the lane service exports; the parts update the ones they own."""

    def __init__(
        self,
        gallery_version: Callable[[], float],
        camera_connected: Callable[[], float],
        webhook_pending: Callable[[], float],
        mqtt_connected: Callable[[], float] = lambda: 0.0,
        lane: str = "",
    ):
        """`lane`: this lane's name as a label on its series, for a service of several lanes (empty:
        one lane, no label, as before)."""
        r = self.registry = Registry()
        self.frames_read = r.add(Counter("reid_frames_read_total", "Frames read from the camera."))
        self.frames_processed = r.add(Counter("reid_frames_processed_total", "Frames run through the lane."))
        self.frames_dropped = r.add(
            Counter(
                "reid_frames_dropped_total",
                "Frames not processed: the lane fell behind (queue_full), "
                "the frame size changed (frame_size), or a video file played live could not be "
                "decoded in time (decode_late).",
                ("reason",),
                [(x,) for x in DROP_REASONS],
            )
        )
        self.processing = r.add(
            Histogram("reid_frame_processing_seconds", "Time to run one frame through the lane.", PROCESSING_BUCKETS)
        )
        self.frame_age = r.add(
            Histogram(
                "reid_frame_age_seconds",
                "From a frame's capture to the lane having processed it "
                "(queue wait included): how far the lane runs behind real time.",
                FRAME_AGE_BUCKETS,
            )
        )
        self.alert_latency = r.add(
            Histogram(
                "reid_alert_latency_seconds",
                "From an item leaving the zone (its last frame) to its loss alert being written "
                "(double scans are in reid_double_scan_latency_seconds).",
                ALERT_LATENCY_BUCKETS,
            )
        )
        self.double_scan_latency = r.add(
            Histogram(
                "reid_double_scan_latency_seconds",
                "From a second scan of an item already paid for to its double_scan event being written "
                "(after the void window).",
                DOUBLE_SCAN_LATENCY_BUCKETS,
            )
        )
        self.events = r.add(
            Counter(
                "reid_events_total", "Alerts and basket lines written, by type.", ("type",), [(t,) for t in EventType]
            )
        )
        self.pos_received = r.add(
            Counter(
                "reid_pos_events_total", "POS events accepted, by source.", ("source",), [(s,) for s in POS_SOURCES]
            )
        )
        self.pos_rejected = r.add(
            Counter(
                "reid_pos_rejected_total",
                "POS payloads or lines refused as malformed, by source.",
                ("source",),
                [(s,) for s in POS_SOURCES],
            )
        )
        self.pos_unverifiable = r.add(
            Counter(
                "reid_pos_unverifiable_total",
                "Scans the camera cannot check, by reason: made while the camera was down (camera_down, not "
                "judged), of a barcode the gallery's catalogue lacks (unknown_barcode) or of a SKU the gallery "
                "has no photos of (unknown_sku).",
                ("reason",),
                [(r,) for r in Unverifiable],
            )
        )
        self.camera_reconnects = r.add(
            Counter("reid_camera_reconnects_total", "Times the camera or stream was lost and reopened.")
        )
        self.evidence_failures = r.add(
            Counter("reid_evidence_failures_total", "Alerts written without their crops (disk full or unwritable).")
        )
        self.gallery_reloads = r.add(
            Counter("reid_gallery_reloads_total", "Newly published gallery versions switched to.")
        )
        self.gallery_reload_failures = r.add(
            Counter("reid_gallery_reload_failures_total", "Gallery versions that could not be switched to.")
        )
        self.webhook_delivered = r.add(Counter("reid_webhook_delivered_total", "Alerts the webhook receiver accepted."))
        self.webhook_failures = r.add(
            Counter("reid_webhook_failures_total", "Webhook attempts that failed (to be retried).")
        )
        self.webhook_dead_lettered = r.add(
            Counter(
                "reid_webhook_dead_letters_total",
                "Alerts the webhook receiver refused for good, set aside in the dead letters so later ones go on.",
            )
        )
        self.thread_deaths = r.add(
            Counter(
                "reid_thread_deaths_total",
                "Service threads that ended with an error, by thread (each is restarted after a back-off).",
                ("thread",),
                [(t,) for t in THREADS],
            )
        )
        self.thread_restarts = r.add(
            Counter(
                "reid_thread_restarts_total",
                "Service threads restarted after they died, by thread.",
                ("thread",),
                [(t,) for t in THREADS],
            )
        )
        self.mqtt_delivered = r.add(Counter("reid_mqtt_delivered_total", "Alerts the MQTT broker acknowledged."))
        self.mqtt_failures = r.add(
            Counter("reid_mqtt_failures_total", "MQTT publish attempts that failed (to be retried).")
        )
        r.add(
            Gauge(
                "reid_mqtt_connected",
                "1 while connected to the MQTT broker (0 also when none is configured).",
                mqtt_connected,
            )
        )
        r.add(Gauge("reid_webhook_pending", "Alerts written but not yet delivered to the webhook.", webhook_pending))
        r.add(Gauge("reid_gallery_version", "Gallery version in use.", gallery_version))
        r.add(Gauge("reid_camera_connected", "1 while frames are arriving from the camera.", camera_connected))
        # The standard process metrics, as the official Prometheus clients name them.
        r.add(ReadCounter("process_cpu_seconds_total", "User and system CPU time, seconds.", process_stats.cpu_seconds))
        r.add(Gauge("process_resident_memory_bytes", "Resident memory, bytes.", process_stats.resident_memory_bytes))
        r.add(Gauge("process_virtual_memory_bytes", "Virtual memory, bytes.", process_stats.virtual_memory_bytes))
        r.add(Gauge("process_open_fds", "Open file descriptors.", process_stats.open_fds))
        r.add(Gauge("process_max_fds", "Most open file descriptors allowed.", process_stats.max_fds))
        r.add(Gauge("process_start_time_seconds", "Start time, Unix seconds.", process_stats.start_time_seconds))

        for m in r.metrics:
            if not (m.name in SHARED or m.name.startswith("process_")):
                m.lane = lane

    def render(self) -> str:
        return self.registry.render()


def render_lanes(lanes: list[EdgeMetrics]) -> str:
    """One /metrics text for several lanes: each metric's HELP and TYPE once, then its series of
    every lane (lane label); the process's own series (no lane label) from the first lane's set."""
    lines: list[str] = []
    for i, metric in enumerate(lanes[0].registry.metrics):
        lines += metric.render()
        if metric.lane:
            lines += [line for other in lanes[1:] for line in other.registry.metrics[i].samples()]
    return "\n".join(lines) + "\n"
