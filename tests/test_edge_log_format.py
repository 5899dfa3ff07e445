"""`retail_reid.pipeline.edge.log_format`: JSON log lines on request."""

from __future__ import annotations

import json
import logging

from retail_reid.pipeline.edge.log_format import LogFormat, configure_logging


def test_json_log_lines_are_one_object_per_line_with_the_exception(capsys):
    try:
        configure_logging("info", LogFormat.JSON)
        log = logging.getLogger("reid.edge.test")
        log.info("camera %s: reconnected\nafter %d tries", "rtsp://cam", 3)
        log.debug("not at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("lane: the thread stopped")
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 2
        first, second = (json.loads(line) for line in lines)
        assert first["message"] == "camera rtsp://cam: reconnected\nafter 3 tries" and first["level"] == "info"
        assert first["logger"] == "reid.edge.test" and first["time"].endswith("Z") and first["ts"] > 1e9
        assert second["level"] == "error" and "ValueError: boom" in second["exception"]
        configure_logging("warning", LogFormat.TEXT)
        log.warning("plain")
        assert capsys.readouterr().err.rstrip().endswith("WARNING reid.edge.test: plain")
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
