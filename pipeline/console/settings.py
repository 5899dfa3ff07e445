"""What `reid console` serves and where: the alert folders, the gallery, the operators file, the
console's own data folder, and the address it listens on (loopback unless the operator means otherwise)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from retail_reid.errors import ReidError

MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # one request's body: a few product photos
LOOPBACK_NAMES = ("localhost",)
SESSION_IDLE_S = 30 * 60.0  # a console session unused this long ends (--session-idle-minutes)


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


@dataclass(frozen=True)
class ConsoleSettings:
    """Everything the web application needs; built by the CLI (or a test)."""

    lanes: tuple[Path, ...]  # `reid edge` state folders
    replays: tuple[Path, ...]  # `reid replay` output folders
    gallery: Path
    users: Path
    data: Path  # the console's own folder: verdicts database, session key, upload staging
    references: tuple[Path, ...] = ()  # lane-references folders (`reid edge`'s STATE/lane-references, replays')
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    secure_cookies: bool = False  # set when served over HTTPS (behind a TLS proxy)
    session_idle_s: float = SESSION_IDLE_S

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
        if not 60 <= self.session_idle_s <= 12 * 3600:
            raise ConsoleError(f"--session-idle-minutes must be in [1, 720], got {self.session_idle_s / 60:g}")
        if self.max_upload_bytes < 1:
            raise ConsoleError(f"--max-upload-mb must be positive, got {self.max_upload_bytes} bytes")
