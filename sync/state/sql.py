"""Small helpers every part of the state shares: the stored time format and chunked `in (...)` queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sync.models import format_time

T = TypeVar("T")
CHUNK = 500  # ids per `in (...)`: well under SQLite's variable limit


def now_text() -> str:
    """The current time in the one form the state stores (ISO 8601 UTC, microseconds, `Z`)."""
    return time_text(datetime.now(UTC))


def time_text(moment: datetime) -> str:
    return format_time(moment)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def marks(chunk: Sequence[object]) -> str:
    """`?,?,?` for a chunk's `in (...)`."""
    return ",".join("?" * len(chunk))
