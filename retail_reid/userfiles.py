"""Reading a file that a user named: an error that says which file and what went wrong, never a
traceback. Shared by every reader of user input (images, POS logs, events, truth files)."""

from __future__ import annotations

from pathlib import Path

from retail_reid.errors import ReidError


def read_user_file(path: str | Path, what: str, error: type[ReidError]) -> bytes:
    """The file's bytes; `what` names it in messages ("POS log", "image"), `error` is raised."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory, not a file ({what} expected)") from None
    except OSError as e:
        raise error(f"{p}: cannot read {what} ({e.strerror or e})") from None
