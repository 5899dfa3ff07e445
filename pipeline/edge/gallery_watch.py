"""Following the gallery while the lane runs: operators publish new versions (`reid gallery add`,
`import-folder`, `rollback`), and this thread switches the service to them.

`Gallery.refresh` loads the new version beside the one in use and swaps one reference, so the
loading happens here, off the lane thread: the lane never waits and drops no frame for it, and a
pass being recognised finishes on the version it began with. A version the service cannot use
(built with another model, or unreadable) is reported in health and the current one kept.
"""

from __future__ import annotations

import logging
import threading

from retail_reid.gallery import Gallery, GalleryError
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.worker import Worker

log = logging.getLogger("reid.edge.gallery")


class GalleryWatcher(Worker):
    def __init__(self, gallery: Gallery, poll_s: float, metrics: EdgeMetrics):
        super().__init__("gallery")
        self.gallery = gallery
        self.poll_s = poll_s
        self.metrics = metrics
        self.error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time (the thread, or POST /admin/gallery/refresh)

    def check(self) -> bool:
        """Switch to a newer published version if there is one; True if switched."""
        with self._lock:
            before = self.gallery.version
            try:
                switched = self.gallery.refresh()
            except GalleryError as e:
                if str(e) != self.error:
                    log.error("gallery: staying on version %d: %s", before, e)
                    self.metrics.gallery_reload_failures.inc()
                self.error = str(e)
                return False
            except OSError as e:  # a disk or permission fault while loading: try again next time
                message = (
                    f"{self.gallery.root}: cannot load the new version ({e.strerror or e}); staying on version {before}"
                )
                if message != self.error:
                    log.error("gallery: %s", message)
                    self.metrics.gallery_reload_failures.inc()
                self.error = message
                return False
            self.error = None
            if switched:
                self.metrics.gallery_reloads.inc()
                log.info("gallery: switched from version %d to %d", before, self.gallery.version)
            return switched

    def run(self) -> None:
        while not self.wait(self.poll_s):
            self.check()
