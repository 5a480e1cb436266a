"""Standing conditions (events held, events failed) and when each was last reported, so that a run says
so once a day or when the condition changes, not on every run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from sync.state.sql import time_text

REPEAT_EVERY = timedelta(days=1)


class Notices:
    def __init__(self, db: Database):
        self.db = db

    def last(self, name: str) -> str | None:
        """The value last reported for `name`, if any."""
        row = self.db.execute("select value from notices where name = ?", [name]).fetchone()
        return row[0] if row else None

    def due(self, name: str, value: str, now: datetime | None = None) -> bool:
        """Whether the condition `name`, now `value`, should be reported: it changed since it was last
        reported, or that was a day ago or more. Records the report when it is due."""
        now = now or datetime.now(UTC)
        row = self.db.execute("select value, reported_at from notices where name = ?", [name]).fetchone()
        if row is not None and row[0] == value and now - _parse(row[1]) < REPEAT_EVERY:
            return False
        with self.db.atomic():
            self.db.table("notices").upsert({"name": name, "value": value, "reported_at": time_text(now)},
                                            pk="name")
        return True

def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
