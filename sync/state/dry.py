"""A dry run's view of the state: the file opened read-only, the run's own writes kept apart.

The ledger's writes go to a TEMP table (SQLite keeps it in a temporary file of its own, not in the state
file and not in memory) that shadows the file's rows by key (deal and event id); the dry run reads both. Checkpoints set
during the run are kept in a dict; snapshot rows, run log rows and backfill resume points are not needed
again within one run and are dropped. Nothing is copied, so time and memory do not grow with the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlite_utils import Database

from sync.models import DealRef
from sync.state.backfills import Backfills
from sync.state.checkpoints import Checkpoints
from sync.state.ledger import PENDING, STATES, Key, Ledger, pending_query
from sync.state.notices import REPEAT_EVERY, Notices, _parse
from sync.state.retries import Retries
from sync.state.runs import Runs
from sync.state.snapshot import Snapshot

OVERLAY = "temp.dry_ledger"
VIEW = "temp.dry_ledger_all"
PENDING_INDEX = "dry_ledger_pending"
KEY_INDEX = "dry_ledger_event"
# A row of the file that the overlay does not shadow: a search of the overlay's index per row. (Not `(deal_key,
# event_id) NOT IN (SELECT ...)`, for which SQLite copies the whole overlay again at every statement: a dry run
# that prints every pending event in chunks took time growing with the square of their number.)
UNSHADOWED = (f"NOT EXISTS (SELECT 1 FROM {OVERLAY} AS dry WHERE dry.deal_key = ledger.deal_key "
              "AND dry.event_id = ledger.event_id)")


class DryLedger(Ledger):
    """The ledger as it would be after this run's writes, which land in a TEMP overlay instead of the file."""

    def __init__(self, db: Database):
        super().__init__(db)
        schema = db.execute("select sql from main.sqlite_master where type = 'table' and name = 'ledger'").fetchone()[0]
        db.execute(re.sub(r"^CREATE TABLE\s+(\[ledger\]|\"ledger\"|ledger)", f"CREATE TABLE {OVERLAY}", schema,
                          flags=re.IGNORECASE))
        db.execute(f"CREATE UNIQUE INDEX temp.{KEY_INDEX} ON dry_ledger (deal_key, event_id)")
        db.execute(f"CREATE VIEW {VIEW} AS SELECT * FROM main.ledger WHERE {UNSHADOWED} "
                   f"UNION ALL SELECT * FROM {OVERLAY}")
        db.execute(f"CREATE INDEX temp.{PENDING_INDEX} ON dry_ledger (changed_at, event_id) "
                   f"WHERE state = '{PENDING}'")
        self.read_table, self.write_table = "dry_ledger_all", OVERLAY

    def _pending_chunk(self, after: tuple[str, str], now: str, batch: int, leave_out: str, extra: list[str]
                       ) -> list[tuple]:
        """The file's pending rows the overlay does not shadow and the overlay's own, each read in order by its
        index up to `batch` (a dry backfill puts every event in the overlay: one sort of the whole overlay per
        chunk would make its delivery quadratic), and the first `batch` of the two."""
        params = [after[0], after[1], now, *extra, batch]
        unshadowed = f"and {UNSHADOWED} {leave_out}"
        return self.db.execute(
            f"select * from ({pending_query('main.ledger', 'idx_ledger_pending', unshadowed)}) union all "
            f"select * from ({pending_query(OVERLAY, PENDING_INDEX, leave_out)}) order by changed_at, event_id limit ?",
            [*params, *params, batch]).fetchall()

    def _write(self, sql: str, params: Sequence[object], keys: Sequence[Key]) -> None:
        """The file's rows of `keys` copied into the overlay first (those not there yet), then written there."""
        self._by_keys(f"insert or ignore into {OVERLAY} select * from main.ledger where ", [], keys)
        super()._write(sql, params, keys)

    def counts(self) -> dict[str, int]:
        """The file's counts (by its index), less the rows the overlay shadows, plus the overlay's."""
        counts = dict.fromkeys(STATES, 0)
        for state, count in self.db.execute("select state, count(*) from main.ledger group by state"):
            counts[state] = count
        # CROSS JOIN: the overlay first (SQLite would read the whole file's index on the state instead).
        for state, count in self.db.execute(f"select f.state, count(*) from {OVERLAY} d cross join main.ledger f "
                                            "on f.deal_key = d.deal_key and f.event_id = d.event_id group by f.state"):
            counts[state] -= count
        for state, count in self.db.execute(f"select state, count(*) from {OVERLAY} group by state"):
            counts[state] = counts.get(state, 0) + count
        return counts


class DryCheckpoints(Checkpoints):
    """Checkpoints set during a dry run are remembered for the run, not written."""

    def __init__(self, db: Database):
        super().__init__(db)
        self._set: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self._set[name] if name in self._set else super().get(name)

    def set(self, name: str, value: str) -> None:
        self._set[name] = value

    def all(self) -> dict[str, str]:
        return {**super().all(), **self._set}


class DrySnapshot(Snapshot):
    def save(self, rows: Iterable[dict]) -> None:
        """Not kept: within one run each deal is read once, so nothing reads these rows back."""


class DryRuns(Runs):
    def start(self, command: str) -> int:
        return 0

    def finish(self, run_id: int, **fields: object) -> None:
        """A dry run is not logged."""


class DryBackfills(Backfills):
    """Resume points as the file has them, plus the deals this dry run did, kept in memory (so its last walks
    over the deal list do not read every deal again)."""

    def __init__(self, db: Database):
        super().__init__(db)
        self._done: dict[str, set[str]] = {}

    def start(self, backfill_id: str, since: str, until: str | None) -> bool:
        existing = self.db.execute("select finished_at from backfills where id = ?", [backfill_id]).fetchone()
        return existing is not None and existing[0] is None

    def done_keys(self, backfill_id: str, keys: Sequence[str]) -> set[str]:
        mine = self._done.get(backfill_id, set())
        return super().done_keys(backfill_id, keys) | {key for key in keys if key in mine}

    def mark_done(self, backfill_id: str, keys: Iterable[str]) -> None:
        self._done.setdefault(backfill_id, set()).update(keys)

    def finish(self, backfill_id: str) -> None:
        """Not kept."""


class DryNotices(Notices):
    """Whether a standing condition is due to be reported, decided as a real run would; not recorded."""

    def due(self, name: str, value: str, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        row = self.db.execute("select value, reported_at from notices where name = ?", [name]).fetchone()
        return not (row is not None and row[0] == value and now - _parse(row[1]) < REPEAT_EVERY)


class DryRetries(Retries):
    """The retry set as the file has it: a dry run's failed reads are not kept for the next run."""

    def add(self, scope: str, failures: Iterable[tuple[DealRef, str]]) -> None:
        list(failures)

    def remove(self, scope: str, keys: Sequence[str]) -> None:
        """Not kept."""

    def clear(self, scope: str) -> None:
        """Not kept."""

