"""Evidence crops for the live lane: the JPEG crops of each pass that raises an alert, under
STATE/evidence/<run>/ (a folder per service start, since track ids start again at 1).

Pictures are the first thing to give up when the disk fills: below `min_free_bytes` free, or on
any write error, the alert goes out without them (and the miss is counted and shown in health),
so a full disk never stops alerts or the lane, and the room left is kept for the alert log.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import cv2
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.types import ItemPass

log = logging.getLogger("reid.edge.evidence")

JPEG_QUALITY = 90


class EvidenceWriter:
    """A `save_evidence` callable for the lane's EventBuilder; paths are relative to `root`."""

    def __init__(self, root: Path, folder: str, min_free_bytes: int, metrics: EdgeMetrics):
        self.root = root
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self.metrics = metrics
        self.error: str | None = None

    def __call__(self, item: ItemPass) -> tuple[str, ...]:
        written: list[Path] = []
        try:
            target = self.root / self.folder
            target.mkdir(parents=True, exist_ok=True)
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
            self.metrics.evidence_failures.inc()
            reason = f"{self.root / self.folder}: evidence crops not saved ({e.strerror or e})"
            if reason != self.error:
                log.warning("%s; alerts go out without them", reason)
            self.error = reason
            return ()
        self.error = None
        return tuple(names)
