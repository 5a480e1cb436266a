"""The deal snapshot: each deal's (or list entry's) stage and since when, as last read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlite_utils import Database

from sync.state.sql import chunks, insert_many, marks, now_text


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
        """Insert or update these deals' rows (each row has every column but `seen_at`).

        Plain SQL, not sqlite-utils' upsert_all, which inspects every value: a backfill on an empty state saves
        every deal here on the main thread."""
        rows = list(rows)
        if not rows:
            return
        columns = [*rows[0], "seen_at"]
        seen = now_text()
        update = " on conflict (key) do update set " + ", ".join(f"{c} = excluded.{c}" for c in columns if c != "key")
        insert_many(self.db, f"insert into deals ({', '.join(columns)}) values ",
                    [(*map(row.__getitem__, columns[:-1]), seen) for row in rows], update)

    def count(self) -> int:
        return self.db.execute("select count(*) from deals").fetchone()[0]
