"""The deal snapshot: each deal's (or list entry's) stage and since when, as last read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlite_utils import Database

from sync.state.sql import chunks, marks, now_text


class Snapshot:
    def __init__(self, db: Database):
        self.db = db

    def rows(self, keys: Sequence[str]) -> dict[str, dict]:
        """The snapshot rows for these deal keys."""
        found: dict[str, dict] = {}
        for chunk in chunks(keys):
            for row in self.db.query(f"select * from deals where key in ({marks(chunk)})", chunk):
                found[row["key"]] = row
        return found

    def save(self, rows: Iterable[dict]) -> None:
        stamped = [{**row, "seen_at": now_text()} for row in rows]
        if stamped:
            self.db.table("deals").upsert_all(stamped, pk="key")

    def count(self) -> int:
        return self.db.execute("select count(*) from deals").fetchone()[0]
