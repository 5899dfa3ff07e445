"""The service's HTTP API, on the standard library's threading server (a handful of routes, no
framework needed on the edge box):

    POST /pos                    one POS event or a list (token when configured)  202 / 400 / 401 / 411 / 413 / 503
    GET  /events?since=N&limit=M alerts with seq > N, oldest first                  200 / 400
    GET  /health                 camera, frame rates, gallery, model, POS, webhook  200 (503 if the lane has stopped)
    GET  /metrics                Prometheus text format                              200
    POST /admin/gallery/refresh  switch to a newly published gallery now (token)    200 / 401

Limits: bodies over `max_body_bytes` are refused unread (413), a body must state its length (411),
at most `max_connections` requests are served at once (503 beyond), and a client that stalls for
`request_timeout_s` is cut off. Bodies are parsed as JSON only; nothing is unpickled or evaluated.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.metrics import CONTENT_TYPE, EdgeMetrics
from retail_reid.pipeline.edge.pos_intake import InboxFull, PosInbox, parse_pos_body
from retail_reid.pipeline.edge.settings import HttpConfig
from retail_reid.pipeline.pos import PosError

log = logging.getLogger("reid.edge.http")

EVENTS_LIMIT_DEFAULT = 100
EVENTS_LIMIT_MAX = 1000
MAX_DISCARD_BYTES = 1 << 20  # of a refused body, read at most this much before closing ...
DISCARD_TIMEOUT_S = 1.0  # ... waiting at most this long for each piece
BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 33\r\nRetry-After: 1\r\n\r\n"
    b'{"error": "too many connections"}'
)


@dataclass(frozen=True)
class ApiContext:
    """What the routes reach: the POS inbox, the alert log, the metrics, and the service's health."""

    inbox: PosInbox
    alerts: AlertLog
    metrics: EdgeMetrics
    health: Callable[[], tuple[int, dict]]  # (HTTP status, body)
    refresh_gallery: Callable[[], dict]


class ApiServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests being served (each bounded by request_timeout_s)

    def __init__(self, config: HttpConfig, context: ApiContext):
        self.config = config
        self.context = context
        self._slots = threading.BoundedSemaphore(config.max_connections)
        super().__init__((config.host, config.port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:  # type: ignore[override]
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "reid-edge"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.config.request_timeout_s
        super().setup()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        ctx = self.server.context
        if url.path == "/health":
            code, body = ctx.health()
            self._json(code, body)
        elif url.path == "/metrics":
            self._send(200, ctx.metrics.render().encode(), CONTENT_TYPE)
        elif url.path == "/events":
            self._events(parse_qs(url.query, keep_blank_values=True))
        else:
            self._json(404, {"error": f"no such resource: {url.path}"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/pos", "/admin/gallery/refresh"):
            self._json(404, {"error": f"no such resource: {path}"})
            return
        if not self._authorized():
            return
        body = self._body()
        if body is None:
            return
        if path == "/pos":
            self._pos(body)
        else:
            self._json(200, self.server.context.refresh_gallery())

    def _pos(self, body: bytes) -> None:
        ctx = self.server.context
        try:
            events = parse_pos_body(body, self.server.config.max_events_per_post, ctx.inbox.check)
        except PosError as e:
            ctx.metrics.pos_rejected.inc("http")
            log.warning("POST /pos refused: %s", e)
            self._json(400, {"error": str(e)})
            return
        try:
            ctx.inbox.put(events, "http")
        except InboxFull as e:
            self._json(503, {"error": str(e)}, {"Retry-After": "1"})
            return
        self._json(202, {"accepted": len(events)})

    def _events(self, query: dict[str, list[str]]) -> None:
        try:
            since = _int_param(query, "since", 0, 0, None)
            limit = _int_param(query, "limit", EVENTS_LIMIT_DEFAULT, 1, EVENTS_LIMIT_MAX)
        except ValueError as e:
            self._json(400, {"error": str(e)})
            return
        alerts = self.server.context.alerts
        records = alerts.read_after(since, limit)
        self._json(
            200,
            {"events": records, "next_since": records[-1]["seq"] if records else since, "last_seq": alerts.last_seq},
        )

    # --- plumbing ------------------------------------------------------------------------------

    def _authorized(self) -> bool:
        token = self.server.config.token
        if not token:
            return True
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return True
        self.close_connection = True
        self._json(
            401,
            {"error": "a bearer token is required (Authorization: Bearer TOKEN); it was missing or wrong"},
            {"WWW-Authenticate": 'Bearer realm="reid-edge"'},
        )
        return False

    def _body(self) -> bytes | None:
        """The request body, or None after answering why it cannot be taken."""
        limit = self.server.config.max_body_bytes
        self.close_connection = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._json(411, {"error": "send the body with a Content-Length; chunked bodies are not accepted"})
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            self._json(411, {"error": "Content-Length is required"})
            return None
        if not length.strip().isdigit():
            self._json(400, {"error": f"Content-Length {length!r} is not a number of bytes"})
            return None
        n = int(length)
        if n > limit:
            if urlsplit(self.path).path == "/pos":
                self.server.context.metrics.pos_rejected.inc("http")
            self._json(
                413, {"error": f"body of {n} bytes; at most {limit} are accepted (send fewer events per request)"}
            )
            self._discard(n)
            return None
        data = self.rfile.read(n)
        if len(data) < n:
            self._json(400, {"error": f"body ended after {len(data)} of the {n} bytes Content-Length announced"})
            return None
        return data

    def _discard(self, n: int) -> None:
        """Read (a bounded part of) a refused body before closing, so the client gets the answer
        instead of a connection reset; a client that sends it slowly is not waited for."""
        self.wfile.flush()
        self.connection.settimeout(DISCARD_TIMEOUT_S)
        remaining = min(n, MAX_DISCARD_BYTES)
        try:
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _json(self, code: int, obj: dict, headers: dict[str, str] | None = None) -> None:
        self._send(code, (json.dumps(obj) + "\n").encode(), "application/json", headers)

    def _send(self, code: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int | None) -> int:
    values = query.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"query parameter '{name}' must be a whole number, got {values[-1]!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"query parameter '{name}' must be {bound}, got {value}")
    return value
