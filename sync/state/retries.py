"""The retry set: deals whose history could not be read (Attio refused it, or it was behind the query), kept
until a later run reads them. The checkpoint may move past such a deal only once it is here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlite_utils import Database

from sync.models import DealRef
from sync.state.sql import chunks, marks, now_text

POLL_SCOPE = "poll"  # a backfill's scope is its id


class Retries:
    def __init__(self, db: Database):
        self.db = db

    def add(self, scope: str, failures: Iterable[tuple[DealRef, str]]) -> None:
        """Record failed reads (call inside `State.atomic()`, with the batch they belong to): a deal already
        there counts one more attempt and keeps the latest error."""
        now = now_text()
        for ref, error in failures:
            self.db.execute(
                "insert into retry (scope, deal_key, record_id, entry_id, first_failed, last_failed, attempts, "
                "last_error) values (?, ?, ?, ?, ?, ?, 1, ?) on conflict (scope, deal_key) do update set "
                "last_failed = excluded.last_failed, attempts = attempts + 1, last_error = excluded.last_error",
                [scope, ref.key, ref.record_id, ref.entry_id, now, now, error])

    def remove(self, scope: str, keys: Sequence[str]) -> None:
        """Deals read at last (call inside `State.atomic()`, with what was recorded from them)."""
        for chunk in chunks(keys):
            self.db.execute(f"delete from retry where scope = ? and deal_key in ({marks(chunk)})", [scope, *chunk])

    def clear(self, scope: str) -> None:
        self.db.execute("delete from retry where scope = ?", [scope])

    def refs(self, scope: str) -> list[DealRef]:
        """The deals to read again, oldest failure first."""
        return [DealRef(record_id, entry_id) for record_id, entry_id in self.db.execute(
            "select record_id, entry_id from retry where scope = ? order by first_failed, deal_key", [scope])]

    def rows(self, scope: str | None = None) -> list[dict]:
        """What `status` and the run's message show: every deal to read again (of one scope, or all)."""
        where, params = ("where scope = ?", [scope]) if scope else ("", [])
        return list(self.db.query(
            "select scope, deal_key, record_id, entry_id, first_failed, last_failed, attempts, last_error "
            f"from retry {where} order by scope, first_failed, deal_key", params))
