"""Backfill resume points: which backfills are under way and which of their deals are done."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlite_utils import Database

from sync.state.sql import chunks, insert_many, marks, now_text


class Backfills:
    def __init__(self, db: Database):
        self.db = db

    def start(self, backfill_id: str, since: str, until: str | None) -> bool:
        """Record a backfill; return True if it is resumed (started before and not finished)."""
        existing = self.db.execute("select finished_at from backfills where id = ?", [backfill_id]).fetchone()
        if existing is not None and existing[0] is None:
            return True
        with self.db.atomic():
            self.db.execute("delete from backfill_done where backfill_id = ?", [backfill_id])
            self.db.table("backfills").upsert({"id": backfill_id, "since": since, "until": until,
                                         "started_at": now_text(), "finished_at": None}, pk="id")
        return False

    def done_keys(self, backfill_id: str, keys: Sequence[str]) -> set[str]:
        done: set[str] = set()
        for chunk in chunks(keys):
            done.update(r[0] for r in self.db.execute(
                f"select deal_key from backfill_done where backfill_id = ? and deal_key in ({marks(chunk)})",
                [backfill_id, *chunk]))
        return done

    def mark_done(self, backfill_id: str, keys: Iterable[str]) -> None:
        """Call inside `State.atomic()`, with the ledger rows of these deals."""
        # Plain SQL: sqlite-utils' insert_all inspects every value.
        insert_many(self.db, "insert or ignore into backfill_done (backfill_id, deal_key) values ",
                    [(backfill_id, key) for key in keys])

    def unfinished(self) -> list[dict]:
        return list(self.db.query(
            "select b.id, b.since, b.until, b.started_at, count(d.deal_key) as deals_done from backfills b "
            "left join backfill_done d on d.backfill_id = b.id where b.finished_at is null "
            "group by b.id order by b.started_at"))

    def finish(self, backfill_id: str) -> None:
        with self.db.atomic():
            self.db.table("backfills").update(backfill_id, {"finished_at": now_text()})
            self.db.execute("delete from backfill_done where backfill_id = ?", [backfill_id])
