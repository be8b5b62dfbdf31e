"""One JSON object per line on stdout, with the role and the CloudEvent on every event line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from cqrs_common.tracing import TraceIdFilter

# Attributes a log call may pass through `extra=` that belong in the JSON line.
FIELDS = (
    "role",
    "ce_id",
    "ce_type",
    "ce_source",
    "subject",
    "ce_batch",
    "method",
    "path",
    "status",
    "duration_ms",
    "traceparent",
    "trace_id",
    "span_id",
    "outbox_id",
    "attempts",
    "reason",
)


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "severity": record.levelname,
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(role: str, level: str = "INFO") -> None:
    """Send every log record to stdout as JSON; idempotent, so app factories may call it."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "cqrs_json", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler.cqrs_json = True  # type: ignore[attr-defined]
        root.handlers = [handler]
    handler.setFormatter(JsonFormatter(role))
    if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
        handler.addFilter(TraceIdFilter())  # every line of a request carries its trace id
    root.setLevel(level)
