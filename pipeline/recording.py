"""Where and when a recording was made (`reid replay --store --lane --start`, or a replay-batch
manifest's `store`, `lane` and `start`): kept in the replay's summary.json as `recording`, so its
alerts are dated by the recording's own time and labelled with its store and lane, as a live
lane's are, rather than by the day the replay ran."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from retail_reid.errors import ReidError


class RecordingError(ReidError, ValueError):
    """A recording's store, lane or start that cannot be used; the message names the field."""


@dataclass(frozen=True, kw_only=True)
class RecordingIdentity:
    store: str
    lane: str
    start: datetime  # the wall-clock time of the recording's first frame (video second 0), timezone-aware

    def __post_init__(self) -> None:
        for name in ("store", "lane"):
            if not getattr(self, name).strip():
                raise RecordingError(f"{name}: is empty")
        if self.start.tzinfo is None:
            raise RecordingError("start: has no timezone")

    def time_of(self, video_s: float) -> float:
        """Unix seconds of a time in the recording (seconds from its first frame)."""
        return self.start.timestamp() + video_s

    def to_dict(self) -> dict:
        return {"store": self.store, "lane": self.lane, "start": self.start.isoformat()}

    @classmethod
    def from_dict(cls, obj: object, where: str) -> RecordingIdentity:
        """A summary's `recording` back; RecordingError names `where` and the field."""
        if not isinstance(obj, dict):
            raise RecordingError(f"{where}: 'recording' is not an object")
        try:
            store, lane, start = obj["store"], obj["lane"], obj["start"]
        except KeyError as e:
            raise RecordingError(f"{where}: 'recording' has no {e}") from None
        if not all(isinstance(v, str) for v in (store, lane, start)):
            raise RecordingError(f"{where}: 'recording' fields must be strings")
        try:
            return cls(store=store, lane=lane, start=parse_start(start, "start"))
        except RecordingError as e:
            raise RecordingError(f"{where}: recording.{e}") from None


def parse_start(text: str, field: str) -> datetime:
    """An ISO 8601 date and time (`2026-11-30T09:00:00+01:00`, `...Z`); one without an offset is UTC."""
    value = text.strip()
    try:
        start = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise RecordingError(f"{field}: {text!r} is not an ISO 8601 date and time") from None
    return start if start.tzinfo is not None else start.replace(tzinfo=timezone.utc)
