"""The state database (SQLite through sqlite-utils): deal snapshot, ledger, checkpoints, runs, backfills."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

PENDING, HELD, SENT, FAILED = "pending", "held", "sent", "failed"
STATES = (PENDING, HELD, SENT, FAILED)

migrations = Migrations("attio-usermaven-sync")


@migrations()
def m001_initial(db: Database) -> None:
    db["deals"].create(
        {"key": str, "record_id": str, "entry_id": str, "stage_id": str, "stage_title": str,
         "stage_since": str, "seen_at": str},
        pk="key",
    )
    db["ledger"].create(
        {"event_id": str, "deal_key": str, "record_id": str, "entry_id": str,
         "from_stage_id": str, "from_stage": str, "to_stage_id": str, "to_stage": str,
         "changed_at": str, "payload": str, "state": str, "reason": str, "attempts": int,
         "last_error": str, "origin": str, "detected_at": str, "sent_at": str,
         "replay_count": int, "replayed_at": str},
        pk="event_id",
        defaults={"attempts": 0, "replay_count": 0},
        not_null={"deal_key", "to_stage_id", "changed_at", "payload", "state"},
    )
    db["ledger"].create_index(["state", "changed_at"])
    db["ledger"].create_index(["deal_key"])
    db["checkpoints"].create({"name": str, "value": str, "updated_at": str}, pk="name")
    db["runs"].create(
        {"id": int, "command": str, "started_at": str, "finished_at": str, "seconds": float,
         "attio_requests": int, "usermaven_requests": int, "deals_read": int, "transitions": int,
         "sent": int, "held": int, "failed": int, "exit_code": int, "message": str},
        pk="id",
    )
    db["backfills"].create(
        {"id": str, "since": str, "until": str, "started_at": str, "finished_at": str},
        pk="id",
    )
    db["backfill_done"].create({"backfill_id": str, "deal_key": str}, pk=("backfill_id", "deal_key"))


@migrations()
def m002_held_checked_at(db: Database) -> None:
    """When a held event's person was last looked at: old held events are re-checked hourly, not every run."""
    db["ledger"].add_column("checked_at", str)


def now_text() -> str:
    return _text(datetime.now(UTC))


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _connect_file(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 before SQLite opens it: it holds people's emails. SQLite gives its journal the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _connect_copy(path: Path) -> sqlite3.Connection:
    """An in-memory copy of the state (empty if there is none): a dry run works on it and the file is untouched."""
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if path.exists():
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            source.backup(memory)
        finally:
            source.close()
    return memory


class Store:
    """Every read and write of the state database, by name. Writes happen inside `atomic()`."""

    def __init__(self, db: Database):
        self.db = db
        migrations.apply(db)

    @classmethod
    def open(cls, path: Path, dry_run: bool = False) -> Store:
        conn = _connect_copy(path) if dry_run else _connect_file(path)
        return cls(Database(conn))

    def atomic(self) -> AbstractContextManager[Database]:
        return self.db.atomic()

    def close(self) -> None:
        self.db.close()

    # -- checkpoints --

    def checkpoint(self, name: str) -> str | None:
        row = self.db.execute("select value from checkpoints where name = ?", [name]).fetchone()
        return row[0] if row else None

    def set_checkpoint(self, name: str, value: str) -> None:
        self.db["checkpoints"].upsert({"name": name, "value": value, "updated_at": now_text()}, pk="name")

    def checkpoints(self) -> dict[str, str]:
        return {row["name"]: row["value"] for row in self.db["checkpoints"].rows}

    # -- deal snapshot --

    def snapshot(self, keys: Sequence[str]) -> dict[str, dict]:
        """The snapshot rows for these deal keys."""
        found: dict[str, dict] = {}
        for chunk in _chunks(list(keys), 500):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(f"select * from deals where key in ({marks})", chunk):
                found[row["key"]] = row
        return found

    def save_snapshot(self, rows: Iterable[dict]) -> None:
        stamped = [{**row, "seen_at": now_text()} for row in rows]
        if stamped:
            self.db["deals"].upsert_all(stamped, pk="key")

    def deal_count(self) -> int:
        return self.db["deals"].count

    # -- ledger --

    def known_ids(self, event_ids: Sequence[str]) -> set[str]:
        known: set[str] = set()
        for chunk in _chunks(list(event_ids), 500):
            marks = ",".join("?" * len(chunk))
            sql = f"select event_id from ledger where event_id in ({marks})"
            known.update(r[0] for r in self.db.execute(sql, chunk))
        return known

    def add_to_ledger(self, rows: Iterable[dict]) -> None:
        rows = [{**row, "payload": json.dumps(row["payload"], ensure_ascii=False), "detected_at": now_text()}
                for row in rows]
        if rows:
            self.db["ledger"].insert_all(rows, pk="event_id", ignore=True)

    def held_record_ids(self, detected_before: str, now: datetime | None = None) -> list[str]:
        """The deals (record ids) whose held events are due a re-check: held since before `detected_before`,
        and either held for less than a day (checked every run) or not checked for an hour."""
        now = now or datetime.now(UTC)
        day_ago, hour_ago = (_text(now - timedelta(days=1)), _text(now - timedelta(hours=1)))
        return [r[0] for r in self.db.execute(
            "select distinct record_id from ledger where state = ? and detected_at < ? "
            "and (detected_at > ? or checked_at is null or checked_at < ?) order by record_id",
            [HELD, detected_before, day_ago, hour_ago])]

    def mark_checked(self, event_ids: Sequence[str]) -> None:
        self._update(event_ids, "checked_at = ?", [now_text()])

    def held_rows(self, record_ids: Sequence[str]) -> list[dict]:
        rows: list[dict] = []
        for chunk in _chunks(list(record_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows += [_decoded(r) for r in self.db.query(
                f"select * from ledger where state = ? and record_id in ({marks}) order by changed_at",
                [HELD, *chunk])]
        return rows

    def iter_pending(self, batch: int = 500) -> Iterator[list[dict]]:
        """Pending rows in chunks, oldest first; re-reads after each chunk so rows marked meanwhile drop out."""
        after = ("", "")
        while True:
            chunk = [_decoded(r) for r in self.db.query(
                "select * from ledger where state = ? and (changed_at, event_id) > (?, ?) "
                "order by changed_at, event_id limit ?", [PENDING, after[0], after[1], batch])]
            if not chunk:
                return
            yield chunk
            after = (chunk[-1]["changed_at"], chunk[-1]["event_id"])

    def mark_sent(self, event_ids: Sequence[str]) -> None:
        self._update(event_ids, "state = ?, sent_at = ?, attempts = attempts + 1, last_error = null, reason = null",
                     [SENT, now_text()])

    def mark_failed(self, event_ids: Sequence[str], error: str) -> None:
        self._update(event_ids, "state = ?, attempts = attempts + 1, last_error = ?", [FAILED, error])

    def note_attempt(self, event_ids: Sequence[str], error: str) -> None:
        self._update(event_ids, "attempts = attempts + 1, last_error = ?", [error])

    def release(self, event_id: str, payload: dict) -> None:
        """A held row whose identity is now known becomes pending."""
        self.db.execute(
            "update ledger set state = ?, reason = null, payload = ? where event_id = ?",
            [PENDING, json.dumps(payload, ensure_ascii=False), event_id])

    def hold(self, event_id: str, reason: str) -> None:
        self.db.execute("update ledger set reason = ? where event_id = ?", [reason, event_id])

    def requeue_for_replay(self, event_id: str, payload: dict, state: str, reason: str | None) -> None:
        """A transition replayed: queued again with a fresh payload, same id; the replay is counted."""
        self.db.execute(
            "update ledger set state = ?, payload = ?, reason = ?, replay_count = replay_count + 1, "
            "replayed_at = ?, last_error = null where event_id = ?",
            [state, json.dumps(payload, ensure_ascii=False), reason, now_text(), event_id])

    def _update(self, event_ids: Sequence[str], assignments: str, params: list) -> None:
        for chunk in _chunks(list(event_ids), 500):
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"update ledger set {assignments} where event_id in ({marks})", params + chunk)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, count in self.db.execute("select state, count(*) from ledger group by state"):
            counts[state] = count
        return counts

    def held_reasons(self) -> list[dict]:
        return list(self.db.query(
            "select reason, count(*) as count from ledger where state = ? group by reason order by count desc", [HELD]))

    def failures(self, limit: int = 20) -> list[dict]:
        return list(self.db.query(
            "select event_id, deal_key, to_stage, changed_at, attempts, last_error from ledger "
            "where state = ? order by changed_at desc limit ?", [FAILED, limit]))

    def pending_errors(self) -> list[dict]:
        return list(self.db.query(
            "select last_error, count(*) as count from ledger where state = ? and last_error is not null "
            "group by last_error", [PENDING]))

    # -- runs --

    def start_run(self, command: str) -> int:
        with self.atomic():
            return self.db["runs"].insert({"command": command, "started_at": now_text()}).last_pk

    def finish_run(self, run_id: int, **fields: object) -> None:
        with self.atomic():
            self.db["runs"].update(run_id, {**fields, "finished_at": now_text()})

    def last_runs(self, limit: int = 10) -> list[dict]:
        return list(self.db.query("select * from runs order by id desc limit ?", [limit]))

    # -- backfills --

    def start_backfill(self, backfill_id: str, since: str, until: str | None) -> bool:
        """Record a backfill; return True if it is resumed (started before and not finished)."""
        existing = self.db.execute("select finished_at from backfills where id = ?", [backfill_id]).fetchone()
        with self.atomic():
            if existing is None or existing[0] is not None:
                self.db.execute("delete from backfill_done where backfill_id = ?", [backfill_id])
                self.db["backfills"].upsert({"id": backfill_id, "since": since, "until": until,
                                             "started_at": now_text(), "finished_at": None}, pk="id")
                return False
        return True

    def done_keys(self, backfill_id: str, keys: Sequence[str]) -> set[str]:
        done: set[str] = set()
        for chunk in _chunks(list(keys), 500):
            marks = ",".join("?" * len(chunk))
            done.update(r[0] for r in self.db.execute(
                f"select deal_key from backfill_done where backfill_id = ? and deal_key in ({marks})",
                [backfill_id, *chunk]))
        return done

    def mark_done(self, backfill_id: str, keys: Iterable[str]) -> None:
        rows = [{"backfill_id": backfill_id, "deal_key": k} for k in keys]
        if rows:
            self.db["backfill_done"].insert_all(rows, pk=("backfill_id", "deal_key"), ignore=True)

    def unfinished_backfills(self) -> list[dict]:
        return list(self.db.query(
            "select b.id, b.since, b.until, b.started_at, count(d.deal_key) as deals_done from backfills b "
            "left join backfill_done d on d.backfill_id = b.id where b.finished_at is null "
            "group by b.id order by b.started_at"))

    def finish_backfill(self, backfill_id: str) -> None:
        with self.atomic():
            self.db["backfills"].update(backfill_id, {"finished_at": now_text()})
            self.db.execute("delete from backfill_done where backfill_id = ?", [backfill_id])


def _decoded(row: dict) -> dict:
    return {**row, "payload": json.loads(row["payload"])}


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
