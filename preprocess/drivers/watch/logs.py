"""The daemon's logs: one line per event, as text or as JSON (``--log-format json``).

Code logs an event name as the message and its fields in ``extra={"fields": {...}}``:
``log.info("commit", extra={"fields": {"snapshot": sid, "items": 12}})`` becomes
``{"ts": "...", "level": "info", "logger": "preprocess.drivers.watch", "event": "commit", "snapshot": ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.pipeline.process import BatchResult

LOGGER = "preprocess.drivers.watch"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _text(value: object) -> str:
    """A field's value in a text line: a file name never raw (:func:`preprocess.core.names.quote`), and
    quoted when it holds a space or ``=`` so that no value reads as another field; a list or tuple is its
    items joined by commas (``/healthz,/readyz``), not Python's repr."""
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = value if isinstance(value, str) else str(value)
    return names.quote(text, always=any(c.isspace() or c == "=" for c in text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, names.text(value) if isinstance(value, str) else value)  # JSON is UTF-8 text
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).isoformat(sep=" ", timespec="seconds")
        fields = " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items() if v is not None)
        line = f"{ts} {record.levelname.lower():7} {names.line(record.getMessage())}"
        line += f" {fields}" if fields else ""
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_files(logger: logging.Logger, result: BatchResult, duplicates: list[str]) -> None:
    """``--log-level debug``: one line per file of a batch, with what became of it."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for row in result.items:
        logger.debug("file", extra={"fields": {
            "path": row.source_path, "outcome": row.status, "format": row.format, "quality": row.quality,
            "similarity": round(float(row.similarity), 5), "bytes": row.bytes, "source_bytes": row.source_bytes,
            "probes": row.probes}})
    for fr in result.failures:
        logger.debug("file", extra={"fields": {"path": fr.source_path, "outcome": "failed", "code": fr.code}})
    for path in duplicates:
        logger.debug("file", extra={"fields": {"path": path, "outcome": "duplicate"}})


def configure(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    """Send the daemon's (and watchdog's warnings') log lines to ``stream`` (stderr) in ``fmt``."""
    from preprocess.core.errors import ConfigError

    if fmt not in ("text", "json"):
        raise ConfigError(f"--log-format {fmt!r} is not one of text, json", code=ErrorCode.WATCH_OPTION)
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"--log-level {level!r} is not one of debug, info, warning, error",
                          code=ErrorCode.WATCH_OPTION)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    wd = logging.getLogger("watchdog")
    wd.handlers[:] = [handler]
    wd.setLevel(logging.WARNING)
    wd.propagate = False
    return logger
