"""Small helpers every part of the state shares: the stored time format, chunked `in (...)` queries and multi-row
inserts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlite_utils import Database

from sync.models import format_time

T = TypeVar("T")
CHUNK = 500  # ids per `in (...)`: well under SQLite's variable limit
INSERT_ROWS = 256  # rows per multi-row insert at most (see insert_many)


def now_text() -> str:
    """The current time in the one form the state stores (ISO 8601 UTC, microseconds, `Z`)."""
    return time_text(datetime.now(UTC))


def time_text(moment: datetime) -> str:
    return format_time(moment)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[list[T]]:
    """The items `size` at a time for `in (...)`, each chunk padded to a power of two or `size` by repeating its
    last item (the same rows match).

    One `in (...)` of each length is one statement to SQLite, and the connection keeps the last 128 it prepared:
    at a few hundred parameters about 100 KB each, so a run that asked for every length up to 500 would hold
    megabytes of them. A few lengths keep that to a few statements, however long the run."""
    for start in range(0, len(items), size):
        chunk = list(items[start:start + size])
        width = size if len(chunk) > size // 2 else 1 << (len(chunk) - 1).bit_length()
        yield chunk + chunk[-1:] * (width - len(chunk))


def marks(chunk: Sequence[object]) -> str:
    """`?,?,?` for a chunk's `in (...)`."""
    return ",".join("?" * len(chunk))


def insert_many(db: Database, head: str, rows: Sequence[Sequence[object]], tail: str = "") -> None:
    """`head` ("insert into t (a, b) values ") for many rows of values, as a few multi-row statements: up to
    INSERT_ROWS rows at a time, what is left by halves (128, 64, ... 1).

    Not executemany: SQLite runs each step without the GIL, and a step per row had the main thread wait for
    the GIL again after every row while the threads reading Attio held it; each statement is such a wait, so
    they are long. Few statement shapes, so the connection's statement cache stays small. A statement has at
    most the variables this SQLite allows (999 before 3.32, as some distributions still ship it)."""
    if not rows:
        return
    one = f"({marks(rows[0])})"
    start, size = 0, rows_per_statement(db, len(rows[0]))
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        chunk = rows[start:start + size]
        db.execute(head + ", ".join([one] * size) + tail, [value for row in chunk for value in row])
        start += size


def rows_per_statement(db: Database, columns: int) -> int:
    """INSERT_ROWS, or the largest power of two whose rows of `columns` values this SQLite takes at once."""
    allowed = db.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(columns, 1)
    return min(INSERT_ROWS, 1 << max(allowed.bit_length() - 1, 0))
