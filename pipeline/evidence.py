"""Evidence crops: the JPEG crops of each pass that raises an alert, written under ROOT/FOLDER and
named by track (`FOLDER/track00012_0.jpg`), with paths relative to ROOT as the alert's `evidence`.

One writer for the replay (ROOT the output folder, FOLDER "crops") and the edge service (ROOT the
state folder, FOLDER a folder per service start, since track ids start again at 1). They differ in
what a failed write means. The replay passes no `on_failure`: a crop that cannot be written is an
EvidenceError, as the run's outputs would be incomplete. The edge passes one: pictures are the
first thing to give up when the disk fills (below `min_free_bytes` free, or on any write error), so
the alert goes out without them, `on_failure` counts the miss, and `error` says why in health.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2

from retail_reid.errors import ReidError
from retail_reid.pipeline.types import ItemPass

JPEG_QUALITY = 90


class EvidenceError(ReidError, OSError):
    """An evidence crop that cannot be written; the message names the folder."""


class EvidenceWriter:
    """Writes a pass's crops; called with the `ItemPass`, returns the paths written, relative to `root`."""

    def __init__(
        self,
        root: Path,
        folder: str,
        min_free_bytes: int = 0,
        on_failure: Callable[[str], None] | None = None,
    ):
        self.root = root
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self.on_failure = on_failure
        self.error: str | None = None  # why the latest pass's crops were not saved; None once they are again

    def __call__(self, item: ItemPass) -> tuple[str, ...]:
        written: list[Path] = []
        try:
            target = self.root / self.folder
            target.mkdir(parents=True, exist_ok=True)
            if self.min_free_bytes > 0:
                free = shutil.disk_usage(target).free
                if free < self.min_free_bytes:
                    raise OSError(
                        errno.ENOSPC,
                        f"only {free / 1e6:.0f} MB free, under the {self.min_free_bytes / 1e6:.0f} MB kept for alerts",
                    )
            names = []
            for i, crop in enumerate(item.crops):
                ok, jpeg = cv2.imencode(".jpg", crop.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise OSError(errno.EIO, "the crop could not be encoded as JPEG")
                name = f"{self.folder}/track{item.track_id:05d}_{i}.jpg"
                path = self.root / name
                written.append(path)
                path.write_bytes(jpeg.tobytes())
                names.append(name)
        except OSError as e:
            for path in written:
                path.unlink(missing_ok=True)
            reason = f"{self.root / self.folder}: evidence crops not saved ({e.strerror or e})"
            if self.on_failure is None:
                raise EvidenceError(reason) from None
            self.on_failure(reason)
            self.error = reason
            return ()
        self.error = None
        return tuple(names)
