"""The state database's tables, as sqlite-utils migrations (recorded in `_sqlite_migrations`)."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("attio-usermaven-sync")


@migrations()
def m001_initial(db: Database) -> None:
    db.table("deals").create(
        {"key": str, "record_id": str, "entry_id": str, "stage_id": str, "stage_title": str,
         "stage_since": str, "seen_at": str},
        pk="key",
    )
    db.table("ledger").create(
        {"event_id": str, "deal_key": str, "record_id": str, "entry_id": str,
         "from_stage_id": str, "from_stage": str, "to_stage_id": str, "to_stage": str,
         "changed_at": str, "payload": str, "state": str, "reason": str, "attempts": int,
         "last_error": str, "origin": str, "detected_at": str, "sent_at": str,
         "replay_count": int, "replayed_at": str},
        pk="event_id",
        defaults={"attempts": 0, "replay_count": 0},
        not_null={"deal_key", "to_stage_id", "changed_at", "payload", "state"},
    )
    db.table("ledger").create_index(["state", "changed_at"])
    db.table("ledger").create_index(["deal_key"])
    db.table("checkpoints").create({"name": str, "value": str, "updated_at": str}, pk="name")
    db.table("runs").create(
        {"id": int, "command": str, "started_at": str, "finished_at": str, "seconds": float,
         "attio_requests": int, "usermaven_requests": int, "deals_read": int, "transitions": int,
         "sent": int, "held": int, "failed": int, "exit_code": int, "message": str},
        pk="id",
    )
    db.table("backfills").create(
        {"id": str, "since": str, "until": str, "started_at": str, "finished_at": str},
        pk="id",
    )
    db.table("backfill_done").create({"backfill_id": str, "deal_key": str}, pk=("backfill_id", "deal_key"))


@migrations()
def m002_held_checked_at(db: Database) -> None:
    """When a held event's person was last looked at: old held events are re-checked hourly, not every run."""
    db.table("ledger").add_column("checked_at", str)


@migrations()
def m003_notices_and_canaries(db: Database) -> None:
    """Standing conditions last reported (events held, events failed): reported once a day or on a change."""
    db.table("notices").create({"name": str, "value": str, "reported_at": str}, pk="name")
    # Test events (`check --send-test-event`): what was sent, so that `--resend` sends the same id again.
    db.table("canaries").create({"event_id": str, "payload": str, "sends": int, "last_sent_at": str},
                                pk="event_id")


@migrations()
def m004_retry(db: Database) -> None:
    """Deals whose history could not be read: the poll (scope `poll`) or the backfill (scope: its id) reads
    them again on its next run, until it succeeds."""
    db.table("retry").create(
        {"scope": str, "deal_key": str, "record_id": str, "entry_id": str, "first_failed": str,
         "last_failed": str, "attempts": int, "last_error": str},
        pk=("scope", "deal_key"),
        defaults={"attempts": 0},
        not_null={"record_id", "last_error"},
    )


@migrations()
def m005_status_indexes(db: Database) -> None:
    """`status` by index alone at any ledger size: held events by reason, pending events by their last error.

    Partial indexes: they hold only held rows and pending rows with an error, so recording and sending
    (which move rows between states) pay almost nothing for them."""
    db.execute("create index idx_ledger_held_reason on ledger (reason) where state = 'held'")
    db.execute("create index idx_ledger_pending_error on ledger (last_error) "
               "where state = 'pending' and last_error is not null")


@migrations()
def m006_pending_index(db: Database) -> None:
    """The events waiting to be sent in an index of their own, oldest first, and the states counted by an index
    on the state alone.

    The index on (state, changed_at) held every row: a backfill records transitions of any date, so each new row
    went to a random place in it, and marking the row sent moved it to another, and every commit wrote a page of
    it for most rows (a sixth of a large backfill's SQLite work). The pending rows are the few a run has not sent
    yet, so their index stays small; in the index on the state, rows follow their order of recording, so
    recording and marking sent both write near its end."""
    db.execute("create index idx_ledger_pending on ledger (changed_at, event_id) where state = 'pending'")
    db.execute("create index idx_ledger_state on ledger (state)")
    # `status` lists the latest failures: by an index of failed rows, as the one it replaces gave them.
    db.execute("create index idx_ledger_failed on ledger (changed_at) where state = 'failed'")
    db.execute("drop index idx_ledger_state_changed_at")


@migrations()
def m007_unconfirmed(db: Database) -> None:
    """Sends that failed after the event may have reached Usermaven (a timeout, a 500), and when the event may be
    sent again: such an event is sent again alone, later each time, and a bounded number of times."""
    db.table("ledger").add_column("unconfirmed", int, not_null_default=0)
    db.table("ledger").add_column("retry_at", str)


@migrations()
def m008_ledger_in_recording_order(db: Database) -> None:
    """The ledger's rows found by (deal_key, event_id), in a unique index, instead of by the event id alone, its
    primary key; the rows themselves stay in their order of recording (the table's rowid), as they were.

    An event id is a UUID: every new row went to a random place in the primary key's index, and at a large
    backfill's size every commit wrote a page of that index for nearly every row it recorded (four times the
    bytes of the rows themselves). By deal, a commit writes a page per deal, where the deal's events sit
    together. An event id is made from its deal's key (transitions.event_id), so unique per deal is unique.
    The index on the deal key alone, which no query used, is dropped.

    SQLite cannot change a table's primary key: the table is built again, once, with the same columns, rows,
    rowids and indexes, and any triggers someone added on it (as SQLite's own procedure for changing a table
    does). `legacy_alter_table` keeps the rename from checking views someone made on the ledger while it is
    missing (SQLite 3.26 and later refuse it otherwise); they name it again once it is back."""
    columns = db.execute("PRAGMA table_info(ledger)").fetchall()  # (cid, name, type, notnull, default, pk)
    indexes = [sql for name, sql in db.execute(
        "select name, sql from sqlite_master where type = 'index' and tbl_name = 'ledger' and sql is not null")
        if name != "idx_ledger_deal_key"]
    triggers = [row[0] for row in db.execute(
        "select sql from sqlite_master where type = 'trigger' and tbl_name = 'ledger'")]
    definitions = ", ".join(
        f"[{name}] {kind}{' NOT NULL' if not_null or name == 'event_id' else ''}"
        f"{f' DEFAULT {default}' if default is not None else ''}"
        for _, name, kind, not_null, default, _ in columns)
    names = ", ".join(f"[{column[1]}]" for column in columns)
    db.execute(f"create table ledger_rebuilt ({definitions})")
    db.execute(f"insert into ledger_rebuilt (rowid, {names}) select rowid, {names} from ledger order by rowid")
    db.execute("drop table ledger")
    legacy = db.execute("PRAGMA legacy_alter_table").fetchone()[0]
    db.execute("PRAGMA legacy_alter_table = ON")
    try:
        db.execute("alter table ledger_rebuilt rename to ledger")
    finally:
        db.execute(f"PRAGMA legacy_alter_table = {int(legacy)}")
    for sql in indexes + triggers:
        db.execute(sql)
    db.execute("create unique index idx_ledger_event on ledger (deal_key, event_id)")
