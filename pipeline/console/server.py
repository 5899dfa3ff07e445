"""Serving the console with waitress (a production WSGI server, pure Python). Request bodies are
capped by waitress itself: a `Content-Length` over the cap is answered 413 before any of the body
is read, and a chunked body is cut off once it passes the cap."""

from __future__ import annotations

from flask import Flask
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from retail_reid.pipeline.console.settings import Bind, ConsoleError, ConsoleSettings

HEADER_BYTES = 64 * 1024  # request line and headers


def make_server(app: Flask, settings: ConsoleSettings, bind: Bind) -> BaseWSGIServer | MultiSocketServer:
    """A server listening on `bind` (port 0: a free port); `.run()` serves, `.close()` stops."""
    try:
        return create_server(
            app,
            host=bind.host,
            port=bind.port,
            threads=settings.threads,
            ident="reid-console",
            max_request_body_size=settings.max_upload_bytes,
            max_request_header_size=HEADER_BYTES,
        )
    except OSError as e:
        raise ConsoleError(f"--bind {bind.host}:{bind.port}: cannot listen there ({e.strerror or e})") from None
