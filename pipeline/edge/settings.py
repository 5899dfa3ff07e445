"""The service's settings: the `[edge]` tables of lane.toml, beside the lane's own settings
(zone, detector, tracker, ...) that `retail_reid.pipeline.config` reads. One file per lane, so an operator
edits one place; declared the same way (pipeline/setting_types.py): an unknown key, a wrong type, a number
that is not finite or out of its range names the file and key.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from dataclasses import field
from pathlib import Path
from typing import Annotated

from pydantic import Field, TypeAdapter
from pydantic.dataclasses import dataclass

from retail_reid.errors import ReidError
from retail_reid.pipeline.config import LaneConfig, from_table, read_toml
from retail_reid.pipeline.setting_types import SETTINGS, ConfigError, Flag, Real, Text, Whole, at_most, rule, settings


class EdgeError(ReidError):
    """The service cannot start or go on as configured; the message names the file or setting."""


SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64  # the Standard Webhooks range


def signing_key(secret: str) -> bytes | None:
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64), or None if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        return None
    return key if MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES else None


Seconds = Annotated[Real, Field(gt=0, le=3600)]  # a wait, a timeout or a back-off
Timeout = Annotated[Real, Field(gt=0, le=600)]  # waiting for a peer (larger ones overflow socket timeouts)
Megabytes = Annotated[Real, Field(ge=0, le=10_000_000)]


@settings("edge.camera")
@dataclass(frozen=True, config=SETTINGS)
class CameraConfig:
    """Where frames come from, and how hard to try when they stop."""

    source: Text = ""  # camera index ("0"), stream URL ("rtsp://...", "http://..."), or a video file / image folder
    loop: Flag = False  # video files only: start again at the end (soak tests, demos)
    open_timeout_s: Timeout = 5.0  # streams: give up connecting after this long
    read_timeout_s: Timeout = 5.0  # streams: a stream silent this long is lost
    reconnect_min_s: Seconds = 0.5  # first wait before reconnecting; doubles per failure ...
    reconnect_max_s: Seconds = 30.0  # ... up to this
    # frames waiting for the lane; beyond it the oldest is dropped
    queue_frames: Annotated[Whole, Field(ge=1, le=256)] = 8
    folder_fps: Annotated[Real, Field(gt=0, le=120)] = 15.0  # image folders only: the rate they are played at
    drop_frames: Flag = True  # video files and folders: false hands every frame to the lane, late if it lags (tests)

    def __post_init__(self) -> None:
        rule(bool(self.source), "source", "is required (a camera index, a stream URL or a video file)")
        at_most(self.reconnect_min_s, self.reconnect_max_s, "reconnect_min_s", "reconnect_max_s")

    @property
    def is_stream(self) -> bool:
        """A live camera or stream (stamped with wall-clock time), not a file played at its frame rate."""
        return self.source.isdigit() or "://" in self.source


@settings("edge.http")
@dataclass(frozen=True, config=SETTINGS)
class HttpConfig:
    host: Text = "127.0.0.1"  # loopback unless configured; any other address needs a token
    port: Annotated[Whole, Field(ge=0, le=65535)] = 8750  # 0: any free port (written to STATE/service.json)
    token: Text = ""  # bearer token for POST /pos, admin endpoints and (reads_need_token) GET routes; empty: none
    token_file: Text = ""  # or read the token from this file (a Docker or systemd secret)
    max_body_bytes: Annotated[Whole, Field(ge=1024, le=16 << 20)] = 65536  # larger POST bodies are refused (413) unread
    max_events_per_post: Annotated[Whole, Field(ge=1, le=100_000)] = 1000
    # requests served at once; a new one takes the slot of one still sending (else 503)
    max_connections: Annotated[Whole, Field(ge=1, le=1024)] = 16
    reads_need_token: Flag = True  # with a token set, GET routes need it too (all but /health)
    request_timeout_s: Timeout = 10.0  # a request (headers and body) not in this long after connecting is cut off

    def __post_init__(self) -> None:
        rule(not (self.token and self.token_file), "token", "give token or token_file, not both")


@settings("edge.pos")
@dataclass(frozen=True, config=SETTINGS)
class PosConfig:
    file: Text = ""  # a JSON-lines file the POS appends to (as well as, or instead of, POST /pos)
    poll_s: Annotated[Real, Field(ge=0.01, le=60)] = 0.2  # how often the file is checked for new lines
    from_start: Flag = False  # the first time: read the file from its start (else only lines appended from now on)
    # events further than this from now (POS clock) are refused: a clock is wrong
    max_clock_skew_s: Annotated[Real, Field(gt=0, le=86400)] = 300.0
    # events waiting for the lane; beyond it POST /pos answers 503
    queue_events: Annotated[Whole, Field(ge=10, le=1_000_000)] = 10000
    # health reports the POS silent when items pass and no event came for this long
    silent_after_s: Annotated[Real, Field(gt=0, le=86400)] = 300.0


@settings("edge.webhook")
@dataclass(frozen=True, config=SETTINGS)
class WebhookConfig:
    url: Text = ""  # alerts are POSTed here, one JSON object each; empty: no webhook
    token: Text = ""  # sent as "Authorization: Bearer ..." to the receiver
    token_file: Text = ""
    timeout_s: Timeout = 5.0
    backoff_min_s: Seconds = 0.5  # wait after the first failure; doubles per failure ...
    backoff_max_s: Seconds = 60.0  # ... up to this
    # attempts refused for good (3xx, 4xx but 408/429) before an alert is set aside
    dead_letter_after: Annotated[Whole, Field(ge=1, le=1000)] = 5
    secret: Text = ""  # "whsec_<base64>": sign each POST (Standard Webhooks: webhook-id, -timestamp, -signature)
    secret_file: Text = ""  # or read the secret from this file

    def __post_init__(self) -> None:
        rule(
            not self.url or self.url.startswith(("http://", "https://")),
            "url",
            f"must be an http:// or https:// URL, got {self.url!r}",
        )
        rule(not (self.token and self.token_file), "token", "give token or token_file, not both")
        rule(not (self.secret and self.secret_file), "secret", "give secret or secret_file, not both")
        rule(
            not self.secret or signing_key(self.secret) is not None,
            "secret",
            f"must be 'whsec_' followed by the base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes "
            "(e.g. python -c \"import base64, os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\")",
        )
        at_most(self.backoff_min_s, self.backoff_max_s, "backoff_min_s", "backoff_max_s")


@settings("edge.mqtt")
@dataclass(frozen=True, config=SETTINGS)
class MqttConfig:
    """An MQTT broker to publish alerts and availability to, and to take POS events from (the `mqtt` extra)."""

    host: Text = ""  # the broker; empty: no MQTT
    port: Annotated[Whole, Field(ge=1, le=65535)] = 1883
    client_id: Text = ""  # default reid-edge-<lane>
    username: Text = ""
    password: Text = ""
    password_file: Text = ""  # or read the password from this file
    tls: Flag = False  # connect with TLS (port 8883 usually), checking the broker's certificate
    ca_file: Text = ""  # ... against this CA bundle (empty: the system's)
    topic_prefix: Text = ""  # default reid/<lane>: <prefix>/alerts, <prefix>/availability, <prefix>/pos
    pos: Flag = False  # take POS events published to <prefix>/pos
    keepalive_s: Annotated[Whole, Field(ge=5, le=3600)] = 30
    timeout_s: Timeout = 5.0  # wait this long for the broker's acknowledgement of an alert
    backoff_min_s: Seconds = 0.5  # wait after a failed publish; doubles per failure ...
    backoff_max_s: Seconds = 30.0  # ... up to this
    reconnect_max_s: Annotated[Real, Field(ge=1, le=3600)] = 30.0  # longest wait between attempts to reconnect

    def __post_init__(self) -> None:
        rule(not (self.password and self.password_file), "password", "give password or password_file, not both")
        rule(
            not self.topic_prefix
            or (not any(c in self.topic_prefix for c in "+#\0") and "//" not in self.topic_prefix),
            "topic_prefix",
            f"must be a topic without wildcards (+, #), got {self.topic_prefix!r}",
        )
        at_most(self.backoff_min_s, self.backoff_max_s, "backoff_min_s", "backoff_max_s")


@settings("edge.clips")
@dataclass(frozen=True, config=SETTINGS)
class ClipConfig:
    """Clips of alert passes: a bounded ring of recent frames, written as a short H.264 MP4 per alert."""

    enabled: Flag = False  # off by default: a JPEG per frame costs CPU, and clips cost disk
    # the clip starts this long before the item entered the zone ...
    before_s: Annotated[Real, Field(ge=0, le=30)] = 2.0
    # ... and ends this long after it left (the alert is decided about then)
    after_s: Annotated[Real, Field(ge=0, le=5)] = 0.5
    # frames kept in memory; a pass longer than this keeps only its end
    ring_s: Annotated[Real, Field(gt=0, le=300)] = 20.0
    ring_mb: Annotated[Real, Field(ge=1, le=2048)] = 64.0  # ... and at most this many MB of them (JPEG)
    quality: Annotated[Whole, Field(ge=10, le=100)] = 70  # JPEG quality of the kept frames
    # clips on disk (all starts); beyond it the oldest clips are removed
    max_disk_mb: Annotated[Real, Field(gt=0, le=10_000_000)] = 500.0

    def __post_init__(self) -> None:
        rule(
            self.before_s + self.after_s < self.ring_s,
            "ring_s",
            f"must be above before_s + after_s ({self.before_s + self.after_s}), got {self.ring_s}",
        )


@settings("edge")
@dataclass(frozen=True, config=SETTINGS)
class EdgeConfig:
    lane: Text = "lane"  # this lane's name, in alerts, alert ids and metrics
    gallery: Text = ""  # gallery folder (reid gallery init / import-folder)
    model: Text = ""  # embedder model file; empty: the gallery's own
    state_dir: Text = ""  # events.jsonl, delivery cursor, POS file offset, evidence crops
    gallery_poll_s: Annotated[Real, Field(ge=0.1, le=3600)] = 2.0  # how often to look for a new gallery version
    evidence: Flag = True  # save the crops of alert passes
    # ... only while the disk keeps this much free (the alerts need room too)
    evidence_min_free_mb: Megabytes = 200.0
    # at SIGTERM, time left to the webhook to deliver what is pending
    shutdown_grace_s: Annotated[Real, Field(ge=0, le=300)] = 5.0
    # a thread that died is restarted after this; doubles per death (at most 60 s) ...
    restart_backoff_s: Annotated[Real, Field(ge=0.1, le=60)] = 1.0
    # ... more deaths of one thread within 10 minutes stop the service (exit 1)
    restart_limit: Annotated[Whole, Field(ge=0, le=100)] = 5
    camera: CameraConfig = field(default_factory=CameraConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    pos: PosConfig = field(default_factory=PosConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)

    def __post_init__(self) -> None:
        rule(
            bool(self.lane) and self.lane.replace("-", "").replace("_", "").isalnum(),
            "lane",
            f"must be letters, digits, '-' or '_', got {self.lane!r}",
        )
        rule(bool(self.gallery), "gallery", "is required (the gallery folder)")
        rule(bool(self.state_dir), "state_dir", "is required (a folder this lane alone writes to)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token: str, token_file: str, key: str) -> str:
    """The token itself, or the first line of its file."""
    if not token_file:
        return token
    try:
        text = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"edge.{key}_file: cannot read {token_file} ({e.strerror or e})") from None
    if not text:
        raise ConfigError(f"edge.{key}_file: {token_file} is empty")
    return text


def _resolve(base: Path, value: str) -> str:
    return value if not value or Path(value).is_absolute() else str(base / value)


def load_edge_config(path: str | Path) -> tuple[EdgeConfig, LaneConfig]:
    """The `[edge]` tables and the lane settings of a single-lane lane.toml (one without `[[lane]]`)."""
    return lane_named(load_edge_lanes(path), None, path)


def lane_named(
    lanes: list[tuple[EdgeConfig, LaneConfig]], name: str | None, path: str | Path
) -> tuple[EdgeConfig, LaneConfig]:
    """The lane called `name` (None: the only one), for commands that work on one lane's state."""
    if name is None and len(lanes) == 1:
        return lanes[0]
    names = [edge.lane for edge, _ in lanes]
    if name is None:
        raise ConfigError(f"{path}: has {len(lanes)} lanes; name one with --lane ({', '.join(names)})")
    if name not in names:
        raise ConfigError(f"{path}: no lane named {name!r} (lanes: {', '.join(names)})")
    return lanes[names.index(name)]


# In a `[[lane]]` table these keys are the lane's `[edge]` settings (`name` is `edge.lane`); every other
# key is a lane setting (zone, exclude, detector, tracker, events, crops). The rest of `[edge]` (gallery,
# model, gallery_poll_s, http, shutdown_grace_s) is the process's, shared by all lanes.
LANE_EDGE_KEYS = frozenset(
    {"name", "state_dir", "evidence", "evidence_min_free_mb", "camera", "pos", "webhook", "mqtt", "clips"}
)


def lane_toml_schema() -> dict:
    """The JSON Schema of a lane.toml, from the declarations: the lane's settings (all that
    `reid replay --config` reads), the `[edge]` tables and the `[[lane]]` tables (a lane's name, its
    own `[edge]` keys and its lane settings)."""
    lane = TypeAdapter(LaneConfig).json_schema()
    edge = TypeAdapter(EdgeConfig).json_schema()
    defs = {**lane.pop("$defs"), **edge.pop("$defs"), "EdgeConfig": edge}
    name = {"type": "string", "minLength": 1, "description": "the lane's name (edge.lane)"}
    own = {key: edge["properties"][key] for key in sorted(LANE_EDGE_KEYS - {"name"})}
    one_lane = {
        "type": "object",
        "description": "one lane of several in one process, laid over the file's shared tables",
        "properties": {"name": name, **own, **lane["properties"]},
        "required": ["name"],
        "additionalProperties": False,
    }
    lane["properties"] |= {
        "edge": {"$ref": "#/$defs/EdgeConfig", "description": "the service's settings (reid edge only)"},
        "lane": {"type": "array", "items": one_lane, "minItems": 1},
    }
    return {**lane, "$defs": defs}


def _merged(base: dict, over: dict) -> dict:
    """`base` with `over` laid on it, tables merged key by key: a lane inherits the shared tables."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_edge_lanes(path: str | Path) -> list[tuple[EdgeConfig, LaneConfig]]:
    """Every lane of a lane.toml: the file itself for a single lane, or one per `[[lane]]` table, each
    laid over the file's shared tables (so `[edge.webhook]` at the top routes every lane's alerts
    unless a lane sets its own). A lane's state_dir defaults to `edge.state_dir/<name>`. Names and
    state folders must differ; the error names the file and the `[[lane]]` table."""
    p = Path(path)
    data = read_toml(p)
    tables = data.pop("lane", None)
    if tables is None:
        return [_parse(p, data, data.pop("edge", None))]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{p}: lane: must be [[lane]] tables, one per lane")
    shared = data.pop("edge", None)
    if not isinstance(shared, dict):
        raise ConfigError(f"{p}: no [edge] table (the service's settings: gallery, [edge.http], ...)")
    lanes: list[tuple[EdgeConfig, LaneConfig]] = []
    for i, table in enumerate(tables, 1):
        where = f"{p}: [[lane]] {i}"
        own = {k: v for k, v in table.items() if k in LANE_EDGE_KEYS}
        name = own.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f'{where}: name: is required (the lane\'s name, e.g. name = "lane-{i}")')
        own["lane"] = name
        if "state_dir" not in own:
            if not shared.get("state_dir"):
                raise ConfigError(f"{where} ({name}): state_dir: is required (or set edge.state_dir for all lanes)")
            own["state_dir"] = str(Path(shared["state_dir"]) / name)
        settings = _merged(data, {k: v for k, v in table.items() if k not in LANE_EDGE_KEYS})
        try:
            lanes.append(_parse(p, settings, _merged(shared, own)))
        except ConfigError as e:
            raise ConfigError(f"{where} ({name}): {str(e).removeprefix(f'{p}: ')}") from None
    # What a lane alone may hold: its name, its state, the POS file it reads, its MQTT identity and topics.
    owned = {
        "name": lambda e: e.lane,
        "state_dir": lambda e: e.state_dir,
        "pos.file": lambda e: e.pos.file,
        "mqtt.client_id": lambda e: e.mqtt.host and e.mqtt.client_id,
        "mqtt.topic_prefix": lambda e: e.mqtt.host and e.mqtt.topic_prefix,
    }
    for key, value in owned.items():
        seen = [value(edge) for edge, _ in lanes]
        twice = sorted({v for v in seen if v and seen.count(v) > 1})
        if twice:
            raise ConfigError(f"{p}: [[lane]] {key}: {twice[0]!r} is given to two lanes; each lane needs its own")
    return lanes


def _parse(p: Path, data: dict, edge_data: object) -> tuple[EdgeConfig, LaneConfig]:
    """One lane's `[edge]` tables and lane settings, checked. Relative paths are taken from the
    file's folder; tokens are read from their files here, so a missing secret fails at start."""
    base = p.parent
    try:
        if not isinstance(edge_data, dict):
            raise ConfigError("no [edge] table (the service's settings: gallery, state_dir, [edge.camera] source, ...)")
        lane = from_table(LaneConfig, data)
        if lane.zone is None:
            raise ConfigError("zone: is required for the service ('zone = [x1, y1, x2, y2]' in frame pixels)")
        edge = from_table(EdgeConfig, edge_data)
        camera = (
            edge.camera
            if edge.camera.is_stream
            else dataclasses.replace(edge.camera, source=_resolve(base, edge.camera.source))
        )
        http = dataclasses.replace(
            edge.http,
            token=read_token(edge.http.token, _resolve(base, edge.http.token_file), "http.token"),
            token_file="",
        )
        if not http.token and not _is_loopback(http.host):
            raise ConfigError(
                f"edge.http.host: {http.host} is reachable from other machines; set edge.http.token or token_file"
            )
        webhook = dataclasses.replace(
            edge.webhook,
            token=read_token(edge.webhook.token, _resolve(base, edge.webhook.token_file), "webhook.token"),
            token_file="",
            secret=read_token(edge.webhook.secret, _resolve(base, edge.webhook.secret_file), "webhook.secret"),
            secret_file="",
        )
        pos = dataclasses.replace(edge.pos, file=_resolve(base, edge.pos.file))
        mqtt = dataclasses.replace(
            edge.mqtt,
            password=read_token(edge.mqtt.password, _resolve(base, edge.mqtt.password_file), "mqtt.password"),
            password_file="",
            ca_file=_resolve(base, edge.mqtt.ca_file),
        )
        edge = dataclasses.replace(
            edge,
            gallery=_resolve(base, edge.gallery),
            model=_resolve(base, edge.model),
            state_dir=_resolve(base, edge.state_dir),
            camera=camera,
            http=http,
            pos=pos,
            webhook=webhook,
            mqtt=mqtt,
        )
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    model = lane.detector.onnx.model
    if model and not Path(model).is_absolute():
        onnx = dataclasses.replace(lane.detector.onnx, model=str(base / model))
        lane = dataclasses.replace(lane, detector=dataclasses.replace(lane.detector, onnx=onnx))
    return edge, lane
