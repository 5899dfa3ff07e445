"""The batch manifest: one row per recording (CSV with a header row, or JSON lines), parsed
strictly so a typo stops the batch before any work, with one line naming the line and the field.

Fields: `id` (the recording's output folder name), `video`, `pos` (the till's log), `config` (a
lane.toml: zone and settings, read by `pipeline.config`), `store`, `lane`, `start` (ISO 8601
date and time the recording starts; UTC without an offset), which each replay records in its
summary.json for the console (`pipeline.recording`). Relative paths are resolved against the manifest's folder.
Whether the video and POS log can be read is checked per recording when it runs, so a bad one
fails alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from retail_reid.bounded_json import parse_object
from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.pipeline.config import ConfigError, LaneConfig, load_config
from retail_reid.pipeline.recording import RecordingError, RecordingIdentity, parse_start
from retail_reid.userfiles import read_user_file

MAX_MANIFEST_BYTES = 64 * 2**20  # about 200,000 rows: far beyond a chain's day
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ManifestError(ReidError, ValueError):
    """A manifest that cannot be used; the message names the file, line and field."""


class Field(StrEnum):
    ID = "id"
    VIDEO = "video"
    POS = "pos"
    CONFIG = "config"
    STORE = "store"
    LANE = "lane"
    START = "start"


@dataclass(frozen=True)
class Recording:
    """One row of the manifest, paths resolved, lane config loaded."""

    id: str
    video: Path
    pos: Path
    config_path: Path
    config: LaneConfig
    store: str
    lane: str
    start: datetime  # timezone-aware: one given without an offset is UTC
    line: int

    @property
    def identity(self) -> RecordingIdentity:
        """Its store, lane and start, as its replay records them for the console."""
        return RecordingIdentity(store=self.store, lane=self.lane, start=self.start)


def read_manifest(path: str | Path) -> list[Recording]:
    """Every recording of a manifest (`.csv`, or `.jsonl`/`.ndjson` JSON lines); ManifestError names
    the first problem by file, line and field."""
    path = Path(path)
    with contextlib.suppress(OSError):  # a missing file is named by read_user_file below
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: manifest is larger than the {MAX_MANIFEST_BYTES} bytes allowed")
    data = read_user_file(path, "manifest", ManifestError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text (byte {e.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, text)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _json_rows(path, text)
    else:
        raise ManifestError(f"{path}: manifest must end in .csv or .jsonl (JSON lines), not {suffix or 'nothing'!r}")
    recordings: list[Recording] = []
    seen: dict[str, int] = {}
    configs: dict[Path, LaneConfig] = {}
    for line, row in rows:
        rec = _recording(path, line, row, configs)
        if rec.id in seen:
            raise ManifestError(f"{path}:{line}: field 'id': {rec.id!r} repeats line {seen[rec.id]}")
        seen[rec.id] = line
        recordings.append(rec)
    if not recordings:
        raise ManifestError(f"{path}: manifest lists no recordings")
    return recordings


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{path}: manifest is empty; the first line must name the columns")
        names = [h.strip() for h in header]
        _check_keys(path, 1, names)
        rows = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(names):
                raise ManifestError(f"{path}:{reader.line_num}: {len(cells)} fields, the header names {len(names)}")
            rows.append((reader.line_num, dict(zip(names, (c.strip() for c in cells), strict=True))))
    except csv.Error as e:
        raise ManifestError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        obj = parse_object(raw, f"{path}:{n}", max_bytes=MAX_MANIFEST_BYTES, error=ManifestError)
        _check_keys(path, n, list(obj))
        for key, value in obj.items():
            if not isinstance(value, str):
                raise ManifestError(f"{path}:{n}: field {key!r}: must be a string, got {type(value).__name__}")
        rows.append((n, obj))
    return rows


def _check_keys(path: Path, line: int, names: list[str]) -> None:
    known = {f.value for f in Field}
    for name in names:
        if name not in known:
            raise ManifestError(f"{path}:{line}: unknown field {name!r} (fields: {', '.join(f.value for f in Field)})")
    for f in Field:
        if f.value not in names:
            raise ManifestError(f"{path}:{line}: field {f.value!r} is missing")
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}:{line}: a field is named twice")


def _recording(path: Path, line: int, row: dict[str, str], configs: dict[Path, LaneConfig]) -> Recording:
    def where(f: Field) -> str:
        return f"{path}:{line}: field {f.value!r}"

    for f in Field:
        if not row[f.value].strip():
            raise ManifestError(f"{where(f)}: is empty")
    rid = row[Field.ID].strip()
    if not SAFE_ID.fullmatch(rid):
        raise ManifestError(
            f"{where(Field.ID)}: {rid!r} must be 1-128 letters, digits, '.', '_' or '-' (it names a folder)"
        )
    try:
        start = parse_start(row[Field.START], "start")
    except RecordingError:
        raise ManifestError(f"{where(Field.START)}: {row[Field.START]!r} is not an ISO 8601 date and time") from None
    base = path.parent

    def resolve(f: Field) -> Path:
        p = Path(row[f.value].strip()).expanduser()
        return p if p.is_absolute() else base / p

    config_path = resolve(Field.CONFIG)
    if config_path not in configs:
        try:
            config = load_config(config_path)
        except ConfigError as e:
            raise ManifestError(f"{where(Field.CONFIG)}: {e}") from None
        if config.zone is None:
            raise ManifestError(f"{where(Field.CONFIG)}: {config_path}: no 'zone = [x1, y1, x2, y2]'")
        configs[config_path] = config
    return Recording(
        id=rid,
        video=resolve(Field.VIDEO),
        pos=resolve(Field.POS),
        config_path=config_path,
        config=configs[config_path],
        store=row[Field.STORE].strip(),
        lane=row[Field.LANE].strip(),
        start=start,
        line=line,
    )
