"""A network camera on loopback for tests: frames of a video served as an MJPEG stream over HTTP."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2


class MjpegCamera:
    """A network camera on loopback: the scenario's frames as an MJPEG stream over HTTP, in real
    time from `origin` (looped); `unplug()` drops the connections and refuses new ones, `plug()` restores."""

    def __init__(self, video: Path):
        cap = cv2.VideoCapture(str(video))
        self.fps = cap.get(cv2.CAP_PROP_FPS)
        self.jpegs = []
        while True:
            ok, image = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        cap.release()
        self.port = 0
        self.origin = 0.0
        self._live = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def plug(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                last = -1
                try:
                    while owner._live.is_set():
                        i = int((time.time() - owner.origin) * owner.fps)  # a camera shows now, and never ends:
                        if i == last:  # the scenario plays in a loop
                            time.sleep(0.005)
                            continue
                        jpeg, last = owner.jpegs[i % len(owner.jpegs)], i
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                            + jpeg
                            + b"\r\n"
                        )
                except OSError:
                    return

            def log_message(self, *args):
                pass

        if not self.origin:
            self.origin = time.time()
        self._live.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def unplug(self) -> None:
        self._live.clear()
        self._server.shutdown()
        self._server.server_close()  # waits for the streaming handlers, which end their connections

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"
