"""The service's HTTP API, on the standard library's threading server (a handful of routes, no
framework needed on the edge box):

    POST /pos                    one POS event or a list (token when configured)  202 / 400 / 401 / 411 / 413 / 503
    GET  /events?since=N&limit=M alerts with seq > N, oldest first (token)          200 / 400 / 401
    GET  /health                 camera, frame rates, gallery, model, POS, webhook  200 (503 if the lane has stopped)
    GET  /metrics                Prometheus text format (token)                      200 / 401
    GET  /evidence/RUN/FILE      an alert's crop or clip (token, always; one byte range) 200 / 206 / 401 / 404 / 416
    POST /admin/gallery/refresh  switch to a newly published gallery now (token)    200 / 401

With several lanes in one service the lane's routes take its name: POST /lanes/LANE/pos, GET
/lanes/LANE/events, GET /lanes/LANE/evidence/RUN/FILE (a single lane answers them too, and keeps the
short routes); /health and /metrics cover every lane.

With a token configured every route but GET /health needs it (`reads_need_token`, default true;
false leaves the GET routes open, as before).

Limits: bodies over `max_body_bytes` are refused (413), a body must state its length once (411,
400), a request must be in within `request_timeout_s` of connecting however it trickles in, at
most `max_connections` are served at once, a new connection takes the slot of the oldest one
still sending its request, and beyond that it gets 503 with Retry-After (never a reset). Bodies
are parsed as JSON only; nothing is unpickled or evaluated.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

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
EVICT_AFTER_S = 0.25  # a connection still sending its request after this long may lose its slot to a new one
MAX_CLOSING = 512  # refused connections being read before closing; beyond it the oldest is closed at once
EVIDENCE_ROUTE = "/evidence/"
LANES_ROUTE = "/lanes/"  # several lanes: /lanes/NAME/pos, /lanes/NAME/events, /lanes/NAME/evidence/...
EVIDENCE_TYPES = {  # crops, and clips of alert passes (older lanes wrote AVI)
    ".jpg": "image/jpeg",
    ".mp4": "video/mp4",
    ".avi": "video/x-msvideo",
}
MAX_PARAM_DIGITS = 18  # a query number longer than this is out of range (and never converted)
BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 33\r\nRetry-After: 1\r\n\r\n"
    b'{"error": "too many connections"}'
)


@dataclass(frozen=True)
class LaneRoutes:
    """What one lane's routes reach: its POS inbox, alert log, metrics and evidence folder."""

    inbox: PosInbox
    alerts: AlertLog
    metrics: EdgeMetrics
    evidence_root: Path | None = None  # STATE/evidence: crops and clips served at /evidence/...


@dataclass(frozen=True)
class ApiContext:
    """What the routes reach: the (single) lane's parts, the service's health, and with several
    lanes each lane's parts by name (then the short routes /pos, /events, /evidence are refused)."""

    inbox: PosInbox
    alerts: AlertLog
    metrics: EdgeMetrics
    health: Callable[[], tuple[int, dict]]  # (HTTP status, body)
    refresh_gallery: Callable[[], dict]
    evidence_root: Path | None = None  # STATE/evidence: crops and clips served at /evidence/...
    lanes: Mapping[str, LaneRoutes] = field(default_factory=dict)  # by name, served at /lanes/NAME/...

    def route(self, path: str) -> tuple[LaneRoutes | None, str]:
        """The lane a path addresses and the path left (`/pos`, `/events`, `/evidence/...`); None
        when it names no known lane, or uses a short route while the service has several lanes."""
        if path.startswith(LANES_ROUTE):
            name, _, rest = path.removeprefix(LANES_ROUTE).partition("/")
            return self.lanes.get(name), "/" + rest
        if len(self.lanes) > 1:
            return None, path
        return LaneRoutes(self.inbox, self.alerts, self.metrics, self.evidence_root), path


@dataclass
class _Connection:
    """A connection being served: still reading its request (until `deadline`), or answering it."""

    sock: socket.socket
    started: float
    deadline: float
    reading: bool = True
    cut: bool = False  # shut down by the server: no longer counted


class ApiServer(ThreadingHTTPServer):
    """Connections are served on threads, at most `max_connections` at once. A request must be in
    (headers and body) within `request_timeout_s` of connecting, however it trickles in: the
    server's loop cuts off those past their deadline. When every slot is taken, a new connection
    takes the slot of the oldest one still sending its request (slow clients cannot starve the
    rest); only when all are being answered is it refused with 503 and Retry-After, its request
    read (bounded) before closing so the client gets the answer rather than a reset."""

    daemon_threads = False  # server_close() waits for requests being served (each bounded by request_timeout_s)
    request_queue_size = 128  # connections the kernel holds until accepted (a burst queues instead of failing)

    def __init__(self, config: HttpConfig, context: ApiContext):
        self.config = config
        self.context = context
        self._lock = threading.Lock()
        self._connections: dict[int, _Connection] = {}
        self._closing: deque[tuple[socket.socket, float]] = deque()  # refused: (socket, close by)
        super().__init__((config.host, config.port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:
        now = time.monotonic()
        with self._lock:
            live = [c for c in self._connections.values() if not c.cut]
            if len(live) >= self.config.max_connections:
                slow = [c for c in live if c.reading and now - c.started >= EVICT_AFTER_S]
                if not slow:
                    self._refuse_busy(request, now)
                    return
                self._cut(min(slow, key=lambda c: c.started), "a newer connection needed its slot")
            self._connections[id(request)] = _Connection(request, now, now + self.config.request_timeout_s)
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.pop(id(request), None)

    def done_reading(self, request: socket.socket) -> None:
        """The request is in: the connection is answered now, no longer cut for being slow."""
        with self._lock:
            connection = self._connections.get(id(request))
            if connection is not None:
                connection.reading = False

    def service_actions(self) -> None:
        """Run by serve_forever between requests (every poll interval): cut off requests past their
        deadline, and close refused connections once their request is read or their time is up."""
        now = time.monotonic()
        with self._lock:
            for c in self._connections.values():
                if c.reading and not c.cut and now >= c.deadline:
                    self._cut(c, f"request not received within {self.config.request_timeout_s:g} s")
        for _ in range(len(self._closing)):
            sock, close_by = self._closing.popleft()
            if not _drained(sock) and now < close_by:
                self._closing.append((sock, close_by))
            else:
                sock.close()

    def _cut(self, connection: _Connection, why: str) -> None:
        connection.cut = True
        log.debug("connection cut off: %s", why)  # debug: a slow-client flood would flood the log too
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once, and it ends

    def _refuse_busy(self, request: socket.socket, now: float) -> None:
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(BUSY)
            request.shutdown(socket.SHUT_WR)
        self._closing.append((request, now + DISCARD_TIMEOUT_S))
        while len(self._closing) > MAX_CLOSING:
            self._closing.popleft()[0].close()

    def handle_error(self, request, client_address) -> None:
        """A client that went away (or was cut off) mid-answer is not a server error."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("%s: connection ended: %s", client_address[0], error)
        else:
            log.exception("%s: request failed", client_address[0])

    def server_close(self) -> None:
        super().server_close()
        while self._closing:
            self._closing.popleft()[0].close()


def _drained(sock: socket.socket) -> bool:
    """Read what a refused client has sent so far, without waiting; True once it has closed its side."""
    try:
        for _ in range(16):
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    return False


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "reid-edge"
    sys_version = ""

    def setup(self) -> None:
        # per connection; typeshed declares StreamRequestHandler.timeout a ClassVar, socketserver reads self.timeout
        self.timeout = self.server.config.request_timeout_s  # type: ignore[misc]
        super().setup()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self.server.done_reading(self.connection)
        url = urlsplit(self.path)
        ctx = self.server.context
        if url.path == "/health":  # always open: liveness checks (Docker, systemd, a load balancer) hold no token
            code, body = ctx.health()
            self._json(code, body)
            return
        lane, path = ctx.route(url.path)
        evidence = path.startswith(EVIDENCE_ROUTE)
        if (self.server.config.reads_need_token or evidence) and not self._authorized():
            return
        if url.path == "/metrics":
            self._send(200, ctx.metrics.render().encode(), CONTENT_TYPE)
        elif lane is None or not (evidence or path == "/events"):
            self._json(404, {"error": self._no_such(url.path)})
        elif evidence:
            self._evidence(lane, path, url.path)
        else:
            self._events(lane, parse_qs(url.query, keep_blank_values=True))

    def _no_such(self, path: str) -> str:
        lanes = self.server.context.lanes
        if len(lanes) > 1 and not path.startswith(LANES_ROUTE):
            names = ", ".join(lanes)
            return f"no such resource: {path[:200]} (several lanes here: /lanes/LANE{path[:200]}; lanes: {names})"
        return f"no such resource: {path[:200]}"

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        lane, rest = self.server.context.route(path)
        pos = lane if rest == "/pos" else None
        if pos is None and path != "/admin/gallery/refresh":
            self._refuse(404, {"error": self._no_such(path)})
            return
        if not self._authorized():
            return
        body = self._body(pos)
        self.server.done_reading(self.connection)
        if body is None:
            return
        if pos is not None:
            self._pos(pos, body)
        else:
            self._json(200, self.server.context.refresh_gallery())

    def _pos(self, ctx: LaneRoutes, body: bytes) -> None:
        try:
            events = parse_pos_body(
                body,
                self.server.config.max_events_per_post,
                ctx.inbox.check,
                max_bytes=self.server.config.max_body_bytes,
            )
        except PosError as e:
            ctx.metrics.pos_rejected.inc("http")
            log.warning("POST /pos refused: %s", e)
            self._json(400, {"error": str(e)})
            return
        try:
            unverifiable = ctx.inbox.put(events, "http")
        except InboxFull as e:
            self._json(503, {"error": str(e)}, {"Retry-After": "1"})
            return
        answer: dict[str, object] = {"accepted": len(events)}
        if unverifiable:  # taken, but the camera cannot check these scans: the POS learns it at once
            answer["unverifiable"] = [{"index": i, "reason": w.reason, "detail": w.text} for i, w in unverifiable]
        self._json(202, answer)

    def _evidence(self, lane: LaneRoutes, lane_path: str, url_path: str) -> None:
        """A file under the lane's evidence folder (an alert's `evidence` path is its URL path, after
        /lanes/LANE with several lanes). Anything else, whatever the spelling (`..`, encoded, links
        out of the folder), is 404."""
        root = lane.evidence_root
        path = evidence_file(root, unquote(lane_path)) if root is not None else None
        if path is None:
            self._json(404, {"error": f"no such evidence file: {url_path[:200]}"})
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            self._json(404, {"error": f"no such evidence file: {url_path[:200]}"})
            return
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                self._json(404, {"error": f"no such evidence file: {url_path[:200]}"})
                return
            size = info.st_size
            span = byte_range(self.headers.get("Range"), size)
            if span is UNSATISFIABLE:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = span if span is not None else (0, size - 1)
            self.send_response(206 if span is not None else 200)
            self.send_header("Content-Type", EVIDENCE_TYPES[path.suffix.lower()])
            self.send_header("Accept-Ranges", "bytes")  # a browser's <video> seeks a clip by ranges
            if span is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Cache-Control", "private, max-age=86400")  # evidence files never change
            self.end_headers()
            f.seek(first)
            left = last - first + 1
            while left > 0 and (chunk := f.read(min(65536, left))):
                self.wfile.write(chunk)
                left -= len(chunk)

    def _events(self, lane: LaneRoutes, query: dict[str, list[str]]) -> None:
        try:
            since = _int_param(query, "since", 0, 0, None)
            limit = _int_param(query, "limit", EVENTS_LIMIT_DEFAULT, 1, EVENTS_LIMIT_MAX)
        except ValueError as e:
            self._json(400, {"error": str(e)})
            return
        alerts = lane.alerts
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
        self._refuse(
            401,
            {"error": "a bearer token is required (Authorization: Bearer TOKEN); it was missing or wrong"},
            {"WWW-Authenticate": 'Bearer realm="reid-edge"'},
        )
        return False

    def _refuse(self, code: int, obj: dict, headers: dict[str, str] | None = None) -> None:
        """Answer a request whose body is not wanted, then read (a bounded part of) that body so
        the client gets the answer rather than a connection reset."""
        self.server.done_reading(self.connection)
        self.close_connection = True
        self._json(code, obj, headers)
        length = self.headers.get("Content-Length", "")
        if self.command == "POST" and length.strip().isdigit():
            self._discard(int(length))

    def _body(self, lane: LaneRoutes | None) -> bytes | None:
        """The request body, or None after answering why it cannot be taken."""
        limit = self.server.config.max_body_bytes
        self.close_connection = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._json(411, {"error": "send the body with a Content-Length; chunked bodies are not accepted"})
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            self._json(400, {"error": f"Content-Length given {len(lengths)} times; give it once"})
            return None
        length = lengths[0] if lengths else None
        if length is None:
            self._json(411, {"error": "Content-Length is required"})
            return None
        if not length.strip().isdigit() or len(length.strip()) > MAX_PARAM_DIGITS:
            self._json(400, {"error": f"Content-Length {length!r} is not a number of bytes"})
            return None
        n = int(length)
        if n > limit:
            if lane is not None:
                lane.metrics.pos_rejected.inc("http")
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


UNSATISFIABLE = (-1, -1)  # a Range no byte of the file is in: 416
RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes of one `Range: bytes=...` request (RFC 9110), UNSATISFIABLE when it
    starts past the end, None when there is none or it is not a single range (served whole, as
    the RFC lets a server do)."""
    match = RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    start, end = match.groups()
    if not start:  # the last `end` bytes
        return (max(size - int(end), 0), size - 1) if int(end) and size else UNSATISFIABLE
    first, last = int(start), min(int(end), size - 1) if end else size - 1
    if end and int(end) < first:
        return None  # not a valid range: ignored
    return (first, last) if first < size else UNSATISFIABLE


def evidence_file(root: Path, url_path: str) -> Path | None:
    """The file an `/evidence/...` URL path names under `root` (STATE/evidence), or None if it
    names anything else: an empty, `.` or `..` part, a backslash or NUL, a type not served, or a
    place outside `root` once links are resolved."""
    parts = url_path.removeprefix(EVIDENCE_ROUTE).split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    path = root.joinpath(*parts)
    if path.suffix.lower() not in EVIDENCE_TYPES:
        return None
    try:
        if not path.resolve(strict=True).is_relative_to(root.resolve(strict=True)):
            return None
    except (OSError, RuntimeError):  # missing, or a link loop
        return None
    return path


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int | None) -> int:
    values = query.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"query parameter '{name}' must be a whole number, got {values[-1][:40]!r}")
    if len(text.lstrip("-").lstrip("0")) > MAX_PARAM_DIGITS:
        raise ValueError(f"query parameter '{name}' must be at most {MAX_PARAM_DIGITS} digits, got {len(text)}")
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"query parameter '{name}' must be {bound}, got {value}")
    return value
