"""Structured logs: one JSON object per line on stderr, with the request id when there is one.

Never logs secrets: keys appear only as their id or a 3-character prefix (see
`tokentrail.control.keys.fingerprint`), provider credentials never.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_EXTRA_FIELDS = ("request_id", "status", "key_id", "latency_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("tokentrail")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
