"""The state database (one SQLite file, through sqlite-utils): the deal snapshot, the ledger of events,
checkpoints, the run log and backfill resume points, each a small part named for what it keeps."""

from __future__ import annotations

import os
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from sqlite_utils import Database

from sync.state.backfills import Backfills
from sync.state.canaries import Canaries
from sync.state.checkpoints import Checkpoints
from sync.state.ledger import Ledger
from sync.state.notices import Notices
from sync.state.runs import Runs
from sync.state.schema import migrations
from sync.state.snapshot import Snapshot


class State:
    """The open state database and its parts. Writes that belong together go inside one `atomic()`."""

    def __init__(self, db: Database):
        self.db = db
        migrations.apply(db)
        self.ledger = Ledger(db)
        self.snapshot = Snapshot(db)
        self.checkpoints = Checkpoints(db)
        self.runs = Runs(db)
        self.backfills = Backfills(db)
        self.notices = Notices(db)
        self.canaries = Canaries(db)

    def atomic(self) -> AbstractContextManager[Database]:
        return self.db.atomic()

    def close(self) -> None:
        self.db.close()


def open_state(path: Path, dry_run: bool = False) -> State:
    """Open (creating if needed) the state at `path`; a dry run works on an in-memory copy instead."""
    conn = _connect_copy(path) if dry_run else _connect_file(path)
    return State(Database(conn))


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
