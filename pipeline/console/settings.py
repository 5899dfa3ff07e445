"""What `reid console` serves and where: the alert folders, the gallery, the operators file, the
console's own data folder, and the address it listens on (loopback unless the operator means otherwise)."""

from __future__ import annotations

import ipaddress
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass as settings_dataclass

from retail_reid.errors import ReidError
from retail_reid.pipeline.setting_types import SETTINGS, Flag, Real, Whole, settings

MAX_UPLOAD_MB = 32.0  # one request's body: a few product photos
SESSION_IDLE_MINUTES = 30.0  # a console session unused this long ends (--session-idle-minutes)
LOOPBACK_NAMES = ("localhost",)
# The command-line flag of each setting whose name does not give it
FLAGS = {"lanes": "--state", "replays": "--replay", "references": "--lane-references"}


class ConsoleError(ReidError):
    """A console setting or input that cannot be used; the message names it."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @classmethod
    def parse(cls, text: str, what: str = "--bind") -> Bind:
        """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8600`)."""
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConsoleError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8600")
        return cls(host, int(port))


def flag(key: str) -> str:
    """The `reid console` flag that gives a setting."""
    return FLAGS.get(key, "--" + key.replace("_", "-"))


@settings(error=ConsoleError, key=flag)
@settings_dataclass(frozen=True, config=SETTINGS)
class ConsoleSettings:
    """Everything the web application needs; built by the CLI (or a test). A number out of its
    limits is a ConsoleError naming the flag."""

    lanes: tuple[Path, ...]  # `reid edge` state folders
    replays: tuple[Path, ...]  # `reid replay` output folders
    gallery: Path
    users: Path
    data: Path  # the console's own folder: verdicts database, session key, upload staging
    references: tuple[Path, ...] = ()  # lane-references folders (`reid edge`'s STATE/lane-references, replays')
    max_upload_mb: Annotated[Real, Field(gt=0, le=1024)] = MAX_UPLOAD_MB  # one request's body, at most
    threads: Annotated[Whole, Field(ge=1, le=256)] = 4  # requests served at once
    secure_cookies: Flag = False  # set when served over HTTPS (behind a TLS proxy)
    # a signed-in session unused this long ends (every session ends 12 h after sign-in)
    session_idle_minutes: Annotated[Real, Field(ge=1, le=720)] = SESSION_IDLE_MINUTES
    time_zone: str = "UTC"  # the zone the pages write times in (an IANA name: Europe/Paris); UTC on hover

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The operator's time zone, or a ConsoleError naming --time-zone."""
        try:
            return zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConsoleError(
                f"--time-zone {self.time_zone!r}: not an IANA time zone name (e.g. Europe/Paris, America/New_York)"
            ) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def session_idle_s(self) -> float:
        return self.session_idle_minutes * 60

    def check(self) -> None:
        """Refuse missing folders now, with their names, rather than at the first page."""
        if not self.lanes and not self.replays:
            raise ConsoleError("give at least one --state LANE_DIR or --replay OUT_DIR")
        for flag, folders in (("--state", self.lanes), ("--replay", self.replays)):
            for folder in folders:
                if not folder.is_dir():
                    raise ConsoleError(f"{flag} {folder}: no such folder")
        for folder in self.replays:
            if not (folder / "events.jsonl").is_file():
                raise ConsoleError(f"--replay {folder}: no events.jsonl (not a `reid replay` output folder)")
        for folder in self.references:
            if not (folder / "products").is_dir():
                raise ConsoleError(f"--lane-references {folder}: not a lane-references folder (no products/)")
        if not self.gallery.is_dir():
            raise ConsoleError(f"--gallery {self.gallery}: no such folder")
        self.zone  # noqa: B018 (refused now, with its flag, rather than at the first page)
