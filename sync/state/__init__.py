"""The state database (one SQLite file, through sqlite-utils): the deal snapshot, the ledger of events,
checkpoints, the run log, backfill resume points and the deals to read again, each a small part named for what
it keeps."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from sqlite_utils import Database

from sync import __version__
from sync.errors import StateError
from sync.state.backfills import Backfills
from sync.state.canaries import Canaries
from sync.state.checkpoints import Checkpoints
from sync.state.dry import (
    DryBackfills,
    DryCheckpoints,
    DryLedger,
    DryNotices,
    DryRetries,
    DryRuns,
    DrySnapshot,
)
from sync.state.ledger import Ledger
from sync.state.notices import Notices
from sync.state.retries import Retries
from sync.state.runs import Runs
from sync.state.schema import m008_ledger_in_recording_order, migrations
from sync.state.snapshot import Snapshot


class State:
    """The open state database and its parts. Writes that belong together go inside one `atomic()`."""

    def __init__(self, db: Database, migrate: bool = True):
        self.db = db
        if migrate:
            migrations.apply(db)
        self.ledger = Ledger(db)
        self.snapshot = Snapshot(db)
        self.checkpoints = Checkpoints(db)
        self.runs = Runs(db)
        self.backfills = Backfills(db)
        self.notices = Notices(db)
        self.canaries = Canaries(db)
        self.retries = Retries(db)

    def atomic(self) -> AbstractContextManager[Database]:
        return self.db.atomic()

    def close(self) -> None:
        self.db.close()


def open_state(path: Path, dry_run: bool = False) -> State:
    """Open (creating if needed) the state at `path`.

    An existing file is checked first, read-only (see `check_file`): a file this version cannot use raises
    StateError before anything is written to it. A dry run opens the file read-only and keeps its own
    writes apart (state/dry.py): the file is never written and nothing is copied. With no file yet it works
    on an empty in-memory state; on a file that still needs a migration (read-only, it cannot be migrated)
    on an in-memory copy."""
    exists = path.exists() and path.stat().st_size > 0
    if exists:
        check_file(path)
    if not dry_run:
        if exists:
            _check_room_to_rebuild(path)
        return State(Database(_connect_file(path)))
    if not exists:
        return State(Database(sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)))
    state, copied = _open_for_reading(path)
    if copied:
        return state  # an in-memory copy: its writes go nowhere
    db = state.db
    state.ledger, state.snapshot, state.notices = DryLedger(db), DrySnapshot(db), DryNotices(db)
    state.checkpoints, state.runs, state.backfills = DryCheckpoints(db), DryRuns(db), DryBackfills(db)
    state.retries = DryRetries(db)
    return state


# Free disk a migration that rebuilds the ledger needs, in sizes of the file: the new copy of the ledger, and the
# journal, which holds that copy and, where SQLite is built to zero what it frees (SECURE_DELETE), the old pages
# too, until it is copied into the file at the end. 2.8 times the file was measured (a million rows).
REBUILDS = {m008_ledger_in_recording_order.__name__}
REBUILD_ROOM = 3


def _check_room_to_rebuild(path: Path) -> None:
    """Raise StateError, before anything is written, if a pending migration rebuilds the ledger and the disk
    lacks the room for it: a disk that fills up while the journal is copied into the file leaves the
    migration done but the file half-copied until a later run has room (never delete the journal then)."""
    db = Database(_connect_read_only(path))
    try:
        rebuild = any(migration.name in REBUILDS for migration in migrations.pending(db))
    finally:
        db.close()
    if not rebuild:
        return
    needed = REBUILD_ROOM * path.stat().st_size
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return  # what cannot be read is not refused: the migration itself still undoes what fails in it
    if free < needed:
        raise StateError(
            f"this version rebuilds the ledger in the state at {path} once (migration 008), which needs about "
            f"{needed / 2**20:,.0f} MB free on its disk ({REBUILD_ROOM} times the file) and {free / 2**20:,.0f} MB "
            "are: free space there (or move the state to a disk with room, with SYNC_STATE_DB), then run again; "
            "the file was not changed")


def open_read_only(path: Path) -> State:
    """The state at `path` for reading only (`status`): never written, and neither copied nor migrated when
    it is up to date. A file an older version wrote (its next `run` migrates it) is read from a migrated
    in-memory copy meanwhile, so that `status` reads the tables this version knows.

    Checked as `check_file` does but without SQLite's quick check, which reads the whole file (seconds for
    a large ledger): a damaged page met by status's own queries is an sqlite3.DatabaseError instead."""
    check_file(path, quick=False)
    return _open_for_reading(path)[0]


def _open_for_reading(path: Path) -> tuple[State, bool]:
    """The file read-only and not migrated when it is up to date, or lacks only migrations READ_AS_IT_IS names;
    else (an older version wrote it, and read-only it cannot be migrated) a migrated in-memory copy. The flag
    says whether it is the copy."""
    db = Database(_connect_read_only(path))
    if any(migration.name not in READ_AS_IT_IS for migration in migrations.pending(db)):
        db.close()
        return State(Database(_connect_copy(path))), True
    return State(db, migrate=False), False


def _connect_read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False, timeout=30)
    conn.execute("select count(*) from sqlite_master").fetchone()  # not a database: fail here, not later
    return conn


def check_file(path: Path, quick: bool = True) -> None:
    """Raise StateError if the file at `path` is not a state this version can use: damaged (SQLite's quick
    check, unless `quick` is False), made by a newer version (a migration this one does not know), or lacking
    a table, column or index its migrations made. Reads only."""
    advice = "the file was not changed"
    try:
        conn = _read_only(path)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the state at {path} ({exc}): check --state or SYNC_STATE_DB") from None
    try:
        problem = _problem(conn, quick)
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            problem = f"is not a readable SQLite database ({exc})"
        elif (code := getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_CORRUPT) & 0xFF) == sqlite3.SQLITE_CORRUPT:
            problem = f"is damaged (SQLite: {exc}): {DAMAGED}"
        elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            problem = (f"is held by another program (SQLite: {exc}): let it finish (an `sqlite3` shell left open on "
                       "it, say), then run again")
        else:  # a full disk, an I/O error: nothing says the file is damaged
            problem = (f"cannot be read now (SQLite: {exc}): check the disk that holds it (free space, errors), "
                       "then run again; the file itself may well be sound")
    finally:
        conn.close()
    if problem:
        raise StateError(f"cannot use the state file {path}: it {problem}; {advice}")


WAL_PAGES = 10_000  # see _connect_file
# Migrations that change nothing a read names: a file that lacks only these is read as it is, not from a migrated
# copy in memory. (m008 rebuilds the ledger: in the copy, three times the file's size in memory. Its rows are found
# by key through the old primary key just as well.)
READ_AS_IT_IS = {m008_ledger_in_recording_order.__name__}

DAMAGED = ("restore it from a backup, or move it aside and start again: `run` records a new baseline, and "
           "`run --backfill --since DATE` sends what happened since the last good run (a resend carries the same "
           "event ids)")


def _problem(conn: sqlite3.Connection, quick: bool = True) -> str | None:
    check = [row[0] for row in conn.execute("PRAGMA quick_check(5)")] if quick else ["ok"]
    if check != ["ok"]:
        return f"is damaged (SQLite's quick check: {'; '.join(check)}): {DAMAGED}"
    tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
    if not tables:
        return None  # a new, empty file
    if "_sqlite_migrations" not in tables:
        return (f"is not an attio-usermaven-sync state file (its tables: {', '.join(sorted(tables))}): point "
                "--state or SYNC_STATE_DB at the sync's own file, or at a new path")
    applied = [row[0] for row in conn.execute(
        "select name from _sqlite_migrations where migration_set = ? order by rowid", [migrations.name])]
    known = _known_migrations()
    unknown = [name for name in applied if name not in known]
    if unknown:
        return (f"was made by a newer version of attio-usermaven-sync (migration {', '.join(unknown)}, which "
                f"version {__version__} does not know): upgrade attio-usermaven-sync, or point --state at another file")
    schema, indexes = _schema_after(applied)
    missing = sorted(f"{table}.{column}" if column else table
                     for table, columns in schema.items()
                     for column in ([None] if table not in tables else columns - _columns(conn, table)))
    missing += sorted(f"index {name}" for name in indexes - _indexes(conn))  # queries name them (INDEXED BY)
    if missing:
        return (f"lacks what its migrations made ({', '.join(missing)}): it was changed by another program or by "
                f"hand; {DAMAGED}")
    return None


def _known_migrations() -> list[str]:
    return [m.name for m in migrations.pending(Database(memory=True))]


def _schema_after(applied: list[str]) -> tuple[dict[str, set[str]], set[str]]:
    """The tables and columns, and the indexes, the migrations in `applied` make, read from an in-memory
    database."""
    db = Database(memory=True)
    later = [name for name in _known_migrations() if name not in applied]
    migrations.apply(db, stop_before=later or None)
    schema = {table: _columns(db.conn, table) for table in db.table_names() if not table.startswith("_")}
    indexes = _indexes(db.conn)
    db.close()
    return schema, indexes


def _indexes(conn: sqlite3.Connection) -> set[str]:
    """The indexes made by a statement on the sync's own tables (a table's own keys aside, and, as for tables,
    those of sqlite-utils' `_sqlite_migrations`)."""
    return {name for name, table in conn.execute(
        "select name, tbl_name from sqlite_master where type = 'index' and sql is not null")
        if not table.startswith("_")}


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info([{table}])")}


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _connect_file(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 before SQLite opens it: it holds people's emails. SQLite gives its journal the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise StateError(f"SQLite could not put the state file {path} in WAL mode (it stays in {mode!r} mode): keep "
                         "the state on a local disk; WAL, which keeps a killed run from damaging it, does not work "
                         "on network file systems")
    conn.execute("PRAGMA synchronous=FULL")
    # Copy the journal into the file every WAL_PAGES pages (40 MB) rather than SQLite's 1,000: a page a backfill
    # changes in many commits (an index's) is then copied once instead of many times. The journal file reaches
    # that size during a large run; SQLite deletes it when the run closes the state.
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
    return conn


def _connect_copy(path: Path) -> sqlite3.Connection:
    """An in-memory copy of the state (empty if there is none): a dry run works on it and the file is untouched."""
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if path.exists():
        source = _read_only(path)
        try:
            source.backup(memory)
        finally:
            source.close()
    return memory
