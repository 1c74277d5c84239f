"""Structured JSON logs in Cloud Logging's shape.

Cloud Functions ships each stdout line to Cloud Logging, which parses JSON lines and reads
`severity` and `message`. Every line carries the current app, environment, deployment id
and event id (bound per event with `log_context`), so one filter shows a deployment's story:
`jsonPayload.deployment_id="hello-staging-…"`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from shared.config import ENV_LOG_LEVEL

CONTEXT_FIELDS = ("app", "environment", "deployment_id", "event_id")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039 - never mutated
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        context = _context.get()
        for name in CONTEXT_FIELDS:
            entry[name] = context.get(name)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind app / environment / deployment_id / event_id (and more) for the lines logged inside."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context (e.g. the deployment id once it is known)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


_configured = False


def get_logger(name: str) -> logging.Logger:
    """A logger whose lines are Cloud Logging JSON. Pass extra fields as `extra={"fields": {...}}`."""
    global _configured
    if not _configured:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        root = logging.getLogger("pipeline")
        root.handlers[:] = [handler]
        root.setLevel(os.environ.get(ENV_LOG_LEVEL, "INFO").upper())
        root.propagate = False
        _configured = True
    return logging.getLogger(f"pipeline.{name}")
