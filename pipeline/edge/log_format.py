"""How `reid edge` writes its log lines: `text` (for people) or `json` (one JSON object per line,
for Loki, Elasticsearch, journald's JSON readers): `ts` (Unix seconds), `time` (ISO 8601, UTC),
`level`, `logger`, `message`, and `exception` (the traceback) when there is one."""

from __future__ import annotations

import json
import logging
import time

from retail_reid.compat import StrEnum

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(StrEnum):
    """`--log-format`: lines for people, or one JSON object per line for log collectors."""

    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Log to stderr at `level` in `fmt`, replacing any handlers already on the root logger."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
