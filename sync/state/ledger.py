"""The ledger: every transition's event, found by its deal and event id, with its delivery state (the outbox)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from sync.state.sql import chunks, insert_many, marks, now_text, time_text

PENDING, HELD, SENT, FAILED = "pending", "held", "sent", "failed"
STATES = (PENDING, HELD, SENT, FAILED)

# How a row is found: (deal_key, event_id), the ledger's unique index (schema.m008_ledger_in_recording_order).
Key = tuple[str, str]
BY_KEY = "deal_key = ? and event_id = ?"
# The rows of many keys, given as one JSON array of [deal_key, event_id] pairs: one statement, one search of the
# index per key. (Not `in (values ...)`, which SQLite answers by reading the whole table; and not one statement
# per key, each of which hands the GIL to the busy reading threads and waits to get it back.)
IN_KEYS = ("(deal_key, event_id) in (select json_extract(value, '$[0]'), json_extract(value, '$[1]') "
           "from json_each(?))")
KEYS_PER_STATEMENT = 500


def row_key(row: Mapping) -> Key:
    """The key of a ledger row (or of anything with a `deal_key` and an `event_id`)."""
    return row["deal_key"], row["event_id"]


def keys(rows: Iterable[Mapping]) -> list[Key]:
    return [row_key(row) for row in rows]


def _decoded(row: dict) -> dict:
    """A ledger row with its payload decoded; `payload_bytes` is the stored JSON's size (what batches weigh)."""
    text = row["payload"]
    return {**row, "payload": json.loads(text), "payload_bytes": utf8_size(text)}


def utf8_size(text: str) -> int:
    """The size of `text` in UTF-8, without encoding it when it is ASCII (most events; `isascii` is free)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


PENDING_COLUMNS = ("event_id", "deal_key", "to_stage", "changed_at", "payload", "unconfirmed")
_EVENT_ID, _CHANGED_AT = PENDING_COLUMNS.index("event_id"), PENDING_COLUMNS.index("changed_at")


def pending_query(table: str, index: str, leave_out: str = "") -> str:
    """SQL for the next pending rows of `table` due now, after a (changed_at, event_id), in that order, up to a
    limit (parameters: the two, the time now, then those of `leave_out`, a condition starting with `and `, then
    the limit). By the index of pending rows, named (without statistics SQLite would take the index on the state
    and sort every pending row for each chunk), and with the state spelled out, not a parameter: that index
    holds only those rows."""
    return (f"select {', '.join(PENDING_COLUMNS)} from {table} indexed by {index} where state = '{PENDING}' "
            f"and (changed_at, event_id) > (?, ?) and (retry_at is null or retry_at <= ?) {leave_out}"
            f"order by changed_at, event_id limit ?")


def _pending_row(values: Sequence, decode: bool) -> dict:
    row = dict(zip(PENDING_COLUMNS, values, strict=True))
    text = row["payload"]
    row["payload_bytes"] = utf8_size(text)
    if decode:
        row["payload"] = json.loads(text)
    return row


# The encoder `json.dumps(payload, ensure_ascii=False)` builds for every call, built once: the same text at
# half the cost (a backfill encodes every event). Without the C encoder (another Python), json.dumps itself.
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = _MAKE_ENCODER and _MAKE_ENCODER(
    None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True)


def _text(payload: dict | str) -> str:
    """A row's payload as stored: JSON text, encoded here unless it already is."""
    return payload if isinstance(payload, str) else encoded(payload)


def encoded(payload: dict) -> str:
    """The stored text of an event: `json.dumps(payload, ensure_ascii=False)`."""
    if _C_ENCODER is None:
        return json.dumps(payload, ensure_ascii=False)
    return "".join(_C_ENCODER(payload, 0))


def _has_json_each(db: Database) -> bool:
    """This SQLite has its JSON functions (built in since 3.38, and in most builds before)."""
    try:
        db.execute("select count(*) from json_each('[]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


class Ledger:
    """Reads and writes of the ledger; every write is meant to run inside `State.atomic()`."""

    def __init__(self, db: Database):
        self.db = db
        # Where rows are read from and written to: the same table, except in a dry run (state/dry.py).
        self.read_table = self.write_table = "ledger"
        self.json_each = _has_json_each(db)

    def _write(self, sql: str, params: Sequence[object], keys: Sequence[Key]) -> None:
        """Run `sql`, a statement of `write_table` ending in `where `, with `params` on the rows of `keys`."""
        self._by_keys(sql, params, keys)

    def _by_keys(self, sql: str, params: Sequence[object], keys: Sequence[Key]) -> None:
        """Run `sql` (ending in `where `) with `params` on the rows of `keys`, each row once (a key given twice
        too): one statement per KEYS_PER_STATEMENT keys (IN_KEYS), or one per key where SQLite was built without
        its JSON functions."""
        keys = list(dict.fromkeys(keys))
        if not self.json_each:
            self.db.conn.executemany(sql + BY_KEY, [(*params, *key) for key in keys])
            return
        for start in range(0, len(keys), KEYS_PER_STATEMENT):
            self.db.execute(sql + IN_KEYS, [*params, json.dumps(keys[start:start + KEYS_PER_STATEMENT])])

    # -- recording --

    def known_ids(self, keys: Sequence[Key]) -> set[str]:
        """The event ids among `keys` the ledger has (read by deal: the ids of those deals' events)."""
        wanted = {event_id for _, event_id in keys}
        known: set[str] = set()
        for chunk in chunks(list(dict.fromkeys(deal_key for deal_key, _ in keys))):
            sql = f"select event_id from {self.read_table} where deal_key in ({marks(chunk)})"
            known.update(r[0] for r in self.db.execute(sql, chunk) if r[0] in wanted)
        return known

    def add(self, rows: Iterable[dict]) -> None:
        """Insert new rows (a row whose deal and event id are already there is left as it is)."""
        rows = list(rows)
        if not rows:
            return
        # Not sqlite-utils' insert_all: it inspects every value, a third of a backfill's CPU.
        keys = [k for k in rows[0] if k != "payload"]
        columns = [*keys, "payload", "detected_at"]
        detected = now_text()
        insert_many(self.db, f"insert or ignore into {self.write_table} ({', '.join(columns)}) values ",
                    [(*map(row.__getitem__, keys), _text(row["payload"]), detected) for row in rows])

    def requeue_for_replay(self, key: Key, payload: dict | str, state: str, reason: str | None) -> None:
        """A transition replayed: queued again with a fresh payload, same id; the replay is counted."""
        self._write(
            f"update {self.write_table} set state = ?, payload = ?, reason = ?, replay_count = replay_count + 1, "
            "replayed_at = ?, last_error = null, unconfirmed = 0, retry_at = null where ",
            [state, _text(payload), reason, now_text()], [key])

    # -- held events --

    def held_record_ids(self, detected_before: str, now: datetime | None = None, limit: int = -1) -> list[str]:
        """The deals (record ids) whose held events are due a re-check: held since before `detected_before`,
        and either held for less than a day (checked every run) or not checked for an hour.

        At most `limit` of them (all when negative), those checked longest ago first: a run after a large
        backfill re-checks a bounded number and the next runs take the rest in turn."""
        now = now or datetime.now(UTC)
        day_ago, hour_ago = time_text(now - timedelta(days=1)), time_text(now - timedelta(hours=1))
        return [r[0] for r in self.db.execute(
            f"select record_id from {self.read_table} where state = ? and detected_at < ? "
            "and (detected_at > ? or checked_at is null or checked_at < ?) "
            "group by record_id order by max(coalesce(checked_at, '')), record_id limit ?",
            [HELD, detected_before, day_ago, hour_ago, limit])]

    def held_rows(self, record_ids: Sequence[str]) -> list[dict]:
        rows: list[dict] = []
        for chunk in chunks(record_ids):
            rows += [_decoded(r) for r in self.db.query(
                f"select * from {self.read_table} where state = ? and record_id in ({marks(chunk)}) "
                "order by changed_at",
                [HELD, *chunk])]
        return rows

    def release(self, key: Key, payload: dict) -> None:
        """A held row whose identity is now known becomes pending."""
        self._write(f"update {self.write_table} set state = ?, reason = null, payload = ? where ",
                    [PENDING, encoded(payload)], [key])

    def hold(self, key: Key, reason: str) -> None:
        self._write(f"update {self.write_table} set reason = ? where ", [reason], [key])

    def mark_checked(self, keys: Sequence[Key]) -> None:
        self._update(keys, "checked_at = ?", [now_text()])

    # -- delivery --

    def iter_pending(self, batch: int = 500, decode: bool = True, exclude: Collection[str] = (), due: str | None = None,
                     unconfirmed: bool | None = None) -> Iterator[list[dict]]:
        """Pending rows due at `due` (default: now) in chunks, oldest first; re-reads after each chunk so rows marked
        meanwhile drop out.
        Rows whose event id is in `exclude` (a few hundred at most) are left out: by SQLite, given them as one
        JSON array, or here when its JSON functions are missing (built without them before 3.38).

        Each row has what delivery uses: `event_id`, `deal_key`, `to_stage`, `changed_at`, the `payload`
        (decoded, or with `decode` False the JSON text as stored), `payload_bytes` (what batches weigh) and
        `unconfirmed` (sends of it that may have arrived, unconfirmed). A row waiting to be sent again after such
        a send (`retry_at` later than `due`) is not among them. With `unconfirmed` True only rows sent before
        without a confirmation, with False only the others."""
        after, now = ("", ""), due or now_text()
        in_sql = bool(exclude) and self.json_each
        leave_out = "and event_id not in (select value from json_each(?)) " if in_sql else ""
        if unconfirmed is not None:
            leave_out += f"and unconfirmed {'>' if unconfirmed else '='} 0 "
        extra = [json.dumps(list(exclude))] if in_sql else []
        while True:
            rows = self._pending_chunk(after, now, batch, leave_out, extra)
            if not rows:
                return
            after = (rows[-1][_CHANGED_AT], rows[-1][_EVENT_ID])
            chunk = [_pending_row(r, decode) for r in rows if in_sql or r[_EVENT_ID] not in exclude]
            if chunk:
                yield chunk

    def _pending_chunk(self, after: tuple[str, str], now: str, batch: int, leave_out: str, extra: list[str]
                       ) -> list[tuple]:
        """The next `batch` pending rows due at `now`, after `after` (changed_at, event_id), in that order."""
        return self.db.execute(pending_query("ledger", "idx_ledger_pending", leave_out),
                               [after[0], after[1], now, *extra, batch]).fetchall()

    def mark_sent(self, keys: Sequence[Key]) -> None:
        self._update(keys, "state = ?, sent_at = ?, attempts = attempts + 1, last_error = null, reason = null, "
                                "retry_at = null", [SENT, now_text()])

    def mark_failed(self, keys: Sequence[Key], error: str) -> None:
        self._update(keys, "state = ?, attempts = attempts + 1, last_error = ?", [FAILED, error])

    def note_attempt(self, keys: Sequence[Key], error: str) -> None:
        self._update(keys, "attempts = attempts + 1, last_error = ?", [error])

    def note_unconfirmed(self, keys: Sequence[Key], error: str, retry_at: str) -> None:
        """A send of these events failed after they may have reached Usermaven: counted, and not sent again
        before `retry_at`."""
        self._update(keys, "attempts = attempts + 1, unconfirmed = unconfirmed + 1, last_error = ?, "
                                "retry_at = ?", [error, retry_at])

    def give_up(self, keys: Sequence[Key], error: str) -> None:
        """A send of these events failed after they may have reached Usermaven, once too often: counted, and
        marked failed (not sent again unless replayed)."""
        self._update(keys, "state = ?, attempts = attempts + 1, unconfirmed = unconfirmed + 1, last_error = ?, "
                                "retry_at = null", [FAILED, error])

    def waiting(self, now: str) -> int:
        """Pending events not due before `now`: they wait to be sent again after a send that may have arrived."""
        return self.db.execute(f"select count(*) from {self.read_table} where state = ? and retry_at > ?",
                               [PENDING, now]).fetchone()[0]

    def _update(self, keys: Sequence[Key], assignments: str, params: list) -> None:
        # `or ignore`: no assignment here can break a constraint, and SQLite then keeps no statement journal
        # (a temporary file a megabyte long, written and deleted for every batch marked sent).
        self._write(f"update or ignore {self.write_table} set {assignments} where ", params, keys)

    # -- what `status` shows --

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, count in self.db.execute("select state, count(*) from ledger group by state"):
            counts[state] = count
        return counts

    # Each by the partial index that holds only its rows, named: without statistics SQLite would take the index
    # on the state and read every row in that state. The state is spelled out, as the index's own condition.

    def held_reasons(self) -> list[dict]:
        return list(self.db.query(
            f"select reason, count(*) as count from ledger indexed by idx_ledger_held_reason where state = '{HELD}' "
            "group by reason order by count desc"))

    def failures(self, limit: int = 20) -> list[dict]:
        return list(self.db.query(
            "select event_id, deal_key, to_stage, changed_at, attempts, last_error from ledger "
            f"indexed by idx_ledger_failed where state = '{FAILED}' order by changed_at desc limit ?", [limit]))

    def pending_errors(self, now: str | None = None) -> list[dict]:
        """Pending events by their last error, with the earliest `retry_at` of those still waiting at `now` to be
        sent again (None if none is)."""
        return list(self.db.query(
            f"select last_error, count(*) as count, min(case when retry_at > ? then retry_at end) as retry_at "
            f"from ledger indexed by idx_ledger_pending_error where state = '{PENDING}' and last_error is not null "
            f"group by last_error", [now or now_text()]))

    def oldest_held(self) -> str | None:
        """When the event held longest was recorded."""
        return self.db.execute("select min(detected_at) from ledger where state = ?", [HELD]).fetchone()[0]
