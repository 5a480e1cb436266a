"""How log lines look: a UTC timestamp and a level on every line, as text or as one JSON object per line.

Both formatters see each record after the RedactingFilter of sync.redact has rendered and masked it, so a
secret cannot reach either format; fields added here (run id, command, counts) are ids and numbers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from sync.redact import RedactingFilter, Redactor

FORMATS = ("text", "json")


def new_run_id() -> str:
    """A random UUID that ties together the lines of one run and its healthcheck pings (healthchecks.io
    wants a UUID)."""
    return str(uuid.uuid4())


def utc_time(record: logging.LogRecord) -> str:
    """The record's time in UTC, ISO 8601 with milliseconds: 2026-11-28T19:30:15.123Z."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-11-28T19:30:15.123Z INFO message` — readable in a terminal, a cron log or the journal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{utc_time(record)} {record.levelname} {record.getMessage()}"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, run_id, command, and counts when the line has them
    (pass them as `extra={"counts": {...}}`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": utc_time(record), "level": record.levelname,
                                 "message": record.getMessage()}
        for key in ("run_id", "command"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        counts = getattr(record, "counts", None)
        if isinstance(counts, Mapping):
            entry["counts"] = {str(k): v for k, v in counts.items() if isinstance(v, int | float)}
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class RunFields(logging.Filter):
    """Stamps every record with the run id and the command, whoever logged it (worker threads included):
    those of the run in progress (see `running`: `run --backfill` runs a "backfill"), else the values given
    here (the command line's)."""

    def __init__(self, run_id: str | None = None, command: str | None = None):
        super().__init__()
        self.run_id, self.command = run_id, command

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _current["run_id"] or self.run_id
        record.command = _current["command"] or self.command
        return True


# The run in progress. A process runs one command at a time (`schedule` one tick at a time), and the
# backfill's worker threads log too, so this is process-wide rather than a context variable.
_current: dict[str, str | None] = {"run_id": None, "command": None}


@contextmanager
def running(run_id: str, command: str) -> Iterator[None]:
    """Lines logged inside carry this run id and command."""
    before = dict(_current)
    _current.update(run_id=run_id, command=command)
    try:
        yield
    finally:
        _current.update(before)


def make_handler(stream: TextIO, log_format: str, redactor: Redactor,
                 fields: RunFields | None = None) -> logging.Handler:
    """A stream handler that masks secrets first, then stamps the run's fields, then formats."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redactor))
    handler.addFilter(fields or RunFields())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler
