"""A state file this version cannot use — damaged, made by a newer version, changed by hand, or on a file
system without WAL — stops every command with exit 2 before any network call, and is never modified."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from sync import state as state_module
from tests.conftest import NOW, add_leads, uid

COMMANDS = [("run",), ("run", "--dry-run"), ("run", "--backfill", "--since", "2020-01-01"), ("replay", uid("d1")),
            ("status",)]


@pytest.fixture
def state_file(workspace, usermaven, run, env) -> Path:
    """A real state file: a baseline, a few hundred deals, some sent events."""
    add_leads(workspace, "s", 300, days_back=400)
    assert run("run", "--backfill", "--since", "2025-06-01")[0] == 0
    path = Path(env["SYNC_STATE_DB"])
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return path


def _refused_untouched(run, mocked, path: Path, expected: str) -> None:
    before = path.read_bytes()
    calls = len(mocked.calls)
    for command in COMMANDS:
        code, out, err = run(*command)
        assert code == 2, (command, err)
        assert f"cannot use the state file {path}" in err and expected in err, (command, err)
        assert "the file was not changed" in err and "Traceback" not in err and "internal error" not in err
        assert len(mocked.calls) == calls, command  # no network call
        assert path.read_bytes() == before, command


def test_a_damaged_state_file_exits_2_and_is_left_as_it_is(state_file, run, mocked):
    data = bytearray(state_file.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[2 * page:6 * page] = b"\xde\xad\xbe\xef" * page  # tables' pages; page 1 (the schema) stays readable
    state_file.write_bytes(bytes(data))
    _refused_untouched(run, mocked, state_file, "is damaged")
    code, out, err = run("run")
    assert "restore it from a backup" in err and "run --backfill --since DATE" in err


def test_a_state_file_from_a_newer_version_exits_2_and_is_left_as_it_is(state_file, run, mocked):
    conn = sqlite3.connect(state_file)
    with conn:
        conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) "
                     "values ('attio-usermaven-sync', 'm003_ledger_body', '2027-01-01 00:00:00')")
        conn.execute("alter table ledger rename column payload to body")
    conn.close()
    _refused_untouched(run, mocked, state_file, "was made by a newer version of attio-usermaven-sync "
                                                   "(migration m003_ledger_body")
    assert "upgrade attio-usermaven-sync" in run("run")[2]


def test_a_state_file_missing_a_column_exits_2_and_is_left_as_it_is(state_file, run, mocked):
    conn = sqlite3.connect(state_file)
    with conn:
        conn.execute("alter table ledger rename column payload to body")
        conn.execute("drop table backfill_done")
    conn.close()
    _refused_untouched(run, mocked, state_file, "lacks what its migrations made (backfill_done, ledger.payload)")


def test_a_state_file_missing_an_index_exits_2_and_is_left_as_it_is(state_file, run, mocked):
    """The ledger's reads name their indexes (INDEXED BY): one dropped by hand is said, not an internal error."""
    conn = sqlite3.connect(state_file)
    with conn:
        conn.execute("drop index idx_ledger_failed")
    conn.close()
    _refused_untouched(run, mocked, state_file, "lacks what its migrations made (index idx_ledger_failed)")


def test_the_journal_is_copied_into_the_file_every_wal_pages_pages(tmp_path):
    """A backfill's index pages change in many commits: copied into the file every WAL_PAGES pages (40 MB),
    not SQLite's 1,000, each is written there once per copy."""
    state = state_module.open_state(tmp_path / "sync.db")
    try:
        assert state.db.execute("pragma wal_autocheckpoint").fetchone()[0] == state_module.WAL_PAGES == 10_000
    finally:
        state.close()


def test_another_programs_database_exits_2(run, mocked, workspace, tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("create table notes (id integer primary key, text text)")
    conn.close()
    before = other.read_bytes()
    code, out, err = run("run", "--state", str(other))
    assert code == 2 and "is not an attio-usermaven-sync state file (its tables: notes)" in err
    assert other.read_bytes() == before and len(mocked.calls) == 0


def test_a_state_file_from_an_older_version_is_upgraded(workspace, usermaven, run, env):
    """Only the first migration applied (before `checked_at` existed): the check lets it through and the
    run applies the rest."""
    path = Path(env["SYNC_STATE_DB"])
    path.parent.mkdir(parents=True)

    db = Database(path)
    state_module.migrations.apply(db, stop_before="m002_held_checked_at")
    db.close()
    assert run("run")[0] == 0
    conn = sqlite3.connect(path)
    try:
        assert "checked_at" in {row[1] for row in conn.execute("pragma table_info(ledger)")}
    finally:
        conn.close()
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    assert run("run")[0] == 0 and len(usermaven.events) == 1


def as_made_before(path: Path, migration: str) -> None:
    """Make the state file at `path` what a version before `migration` would have made of the same data: the
    tables of the migrations before it, each with the columns they had, the rows (and the ledger's rowids) as
    they are."""
    older = path.with_name("older.db")
    db = Database(older)
    state_module.migrations.apply(db, stop_before=migration)
    db.close()
    conn = sqlite3.connect(older)
    try:
        with conn:
            conn.execute("attach database ? as now", [str(path)])
            tables = [r[0] for r in conn.execute("select name from main.sqlite_master where type = 'table' "
                                                 "and name not like '\\_%' escape '\\'")]
            for table in tables:
                had = {r[1] for r in conn.execute(f"pragma now.table_info([{table}])")}
                columns = ", ".join(f"[{c}]" for c in state_module._columns(conn, table) & had)
                conn.execute(f"insert into main.[{table}] (rowid, {columns}) "
                             f"select rowid, {columns} from now.[{table}]")
        conn.execute("detach database now")
    finally:
        conn.close()
    older.replace(path)


def _ledger_indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("select name from sqlite_master where tbl_name = 'ledger' "
                                           "and type = 'index' and sql is not null")}
    finally:
        conn.close()


def test_a_ledger_from_before_the_index_of_pending_events_is_upgraded_and_its_pending_events_sent(
        state_file, usermaven, run):
    """A file migrated up to m005 (pending rows found by the index on (state, changed_at)): the next run replaces
    that index with the index of pending rows and the index on the state, and sends what was pending."""
    conn = sqlite3.connect(state_file)
    try:
        with conn:
            pending = [r[0] for r in conn.execute("select event_id from ledger where state = 'sent' "
                                                   "order by changed_at limit 7")]
            conn.execute(f"update ledger set state = 'pending', sent_at = null where event_id in "
                         f"({','.join('?' * len(pending))})", pending)
    finally:
        conn.close()
    as_made_before(state_file, "m006_pending_index")
    assert "idx_ledger_state_changed_at" in _ledger_indexes(state_file)
    before = len(usermaven.events)
    assert run("run")[0] == 0
    assert sorted(e["event_id"] for e in usermaven.events[before:]) == sorted(pending)
    conn = sqlite3.connect(state_file)
    try:
        assert conn.execute("select count(*) from ledger where state = 'pending'").fetchone()[0] == 0
    finally:
        conn.close()
    assert _ledger_indexes(state_file) == {"idx_ledger_event", "idx_ledger_held_reason", "idx_ledger_pending_error",
                                           "idx_ledger_pending", "idx_ledger_state", "idx_ledger_failed"}


def test_a_ledger_keyed_on_the_event_id_is_rebuilt_keyed_by_deal_with_every_row_as_it_was(
        state_file, workspace, usermaven, run):
    """m008: a file whose ledger has the event id as its primary key. `status` reads it without changing it; the
    next run rebuilds the ledger with the same rows, rowids and values, its other indexes, and the unique index on
    (deal_key, event_id) in place of the primary key and of the index on the deal key; recording the same
    transitions again adds nothing and sends nothing."""
    as_made_before(state_file, "m008_ledger_in_recording_order")
    conn = sqlite3.connect(state_file)
    try:
        table = conn.execute("select sql from sqlite_master where name = 'ledger'").fetchone()[0]
        # Every column but checked_at, which the run's re-check of held events sets.
        columns = ", ".join(r[1] for r in conn.execute("pragma table_info(ledger)") if r[1] != "checked_at")
        rows = conn.execute(f"select rowid, {columns} from ledger order by rowid").fetchall()
    finally:
        conn.close()
    assert "TEXT PRIMARY KEY" in table and "idx_ledger_deal_key" in _ledger_indexes(state_file)
    assert len(rows) > 100
    conn = sqlite3.connect(state_file)
    try:
        with conn:  # what someone may have added to the file: a view and a trigger on the ledger
            conn.execute("create view sent_per_stage as select to_stage, count(*) as n from ledger "
                         "where state = 'sent' group by to_stage")
            conn.execute("create table audit (event_id text)")
            conn.execute("create trigger ledger_sent after update of state on ledger when new.state = 'sent' "
                         "begin insert into audit values (new.event_id); end")
        per_stage = conn.execute("select * from sent_per_stage order by to_stage").fetchall()
    finally:
        conn.close()
    untouched = state_file.read_bytes()
    # Read as it is, not from a migrated copy in memory (which would hold the rebuilt ledger too).
    state, copied = state_module._open_for_reading(state_file)
    state.close()
    assert not copied
    assert run("status")[0] == 0 and run("run", "--dry-run")[0] == 0
    assert state_file.read_bytes() == untouched
    sent = len(usermaven.events)
    assert run("run")[0] == 0
    conn = sqlite3.connect(state_file)
    try:
        after = conn.execute(f"select rowid, {columns} from ledger order by rowid").fetchall()
        table = conn.execute("select sql from sqlite_master where name = 'ledger'").fetchone()[0]
    finally:
        conn.close()
    assert after[:len(rows)] == rows  # the run's own poll may add rows after them
    assert "PRIMARY KEY" not in table.upper()
    conn = sqlite3.connect(state_file)
    try:
        assert conn.execute("select * from sent_per_stage order by to_stage").fetchall() == per_stage
        assert conn.execute("select name from sqlite_master where type = 'trigger'").fetchall() == [("ledger_sent",)]
    finally:
        conn.close()
    assert _ledger_indexes(state_file) == {"idx_ledger_event", "idx_ledger_held_reason", "idx_ledger_pending_error",
                                           "idx_ledger_pending", "idx_ledger_state", "idx_ledger_failed"}
    assert run("run", "--backfill", "--since", "2025-06-01")[0] == 0
    conn = sqlite3.connect(state_file)
    try:
        assert conn.execute("select count(*) from ledger").fetchone()[0] == len(after)
    finally:
        conn.close()
    assert len(usermaven.events) == sent


def test_without_room_to_rebuild_the_ledger_a_run_exits_2_before_writing_and_status_still_answers(
        state_file, run, mocked, monkeypatch):
    """m008 rebuilds the ledger: without three times the file's size free on its disk a run stops before the
    state is written (a disk that fills while the journal is copied back would leave the file half-copied)."""
    import collections

    as_made_before(state_file, "m008_ledger_in_recording_order")
    before, calls = state_file.read_bytes(), len(mocked.calls)
    usage = collections.namedtuple("usage", "total used free")
    room = 3 * state_file.stat().st_size
    monkeypatch.setattr(state_module.shutil, "disk_usage", lambda path: usage(10**12, 0, room - 1))
    code, out, err = run("run")
    assert code == 2, err
    assert "needs about" in err and "free space there" in err and "the file was not changed" in err
    assert state_file.read_bytes() == before and len(mocked.calls) == calls
    assert run("status")[0] == 0
    monkeypatch.setattr(state_module.shutil, "disk_usage", lambda path: usage(10**12, 0, room))
    assert run("run")[0] == 0
    assert "idx_ledger_event" in _ledger_indexes(state_file)


def test_free_space_that_cannot_be_read_does_not_refuse_the_rebuild(state_file, run, monkeypatch):
    """What cannot be read is not refused: the migration itself still undoes what fails in it."""
    as_made_before(state_file, "m008_ledger_in_recording_order")

    def unreadable(path):  # type: ignore[no-untyped-def]
        raise OSError("statvfs failed")

    monkeypatch.setattr(state_module.shutil, "disk_usage", unreadable)
    assert run("run")[0] == 0
    assert "idx_ledger_event" in _ledger_indexes(state_file)


def test_a_state_where_wal_cannot_be_set_exits_2(run, env, mocked, workspace, monkeypatch):
    """On a network file system SQLite keeps the old journal mode; seen here as an in-memory database does."""
    connect = sqlite3.connect

    def without_wal(database, *args, **kwargs):  # type: ignore[no-untyped-def]
        return connect(":memory:" if str(database) == env["SYNC_STATE_DB"] else database, *args, **kwargs)

    monkeypatch.setattr(state_module.sqlite3, "connect", without_wal)
    code, out, err = run("run")
    assert code == 2 and "could not put the state file" in err and "in WAL mode" in err
    assert "keep the state on a local disk" in err
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("stop_before", [m.name for m in state_module.migrations._migrations[1:]])
def test_status_reads_a_state_file_from_an_older_version_and_leaves_it_as_it_is(run, env, stop_before):
    """Between an upgrade and the first run that migrates the file, `status` and `status --check` still answer."""
    path = Path(env["SYNC_STATE_DB"])
    path.parent.mkdir(parents=True)

    db = Database(path)
    state_module.migrations.apply(db, stop_before=stop_before)
    db.close()
    before = path.read_bytes()
    code, out, err = run("status")
    assert code == 0 and "ledger:" in out, err
    code, out, err = run("status", "--json")
    assert code == 0 and json.loads(out)["ledger"]["pending"] == 0
    code, out, err = run("status", "--check")
    assert code == 2 and out.startswith("CRITICAL - no run has succeeded yet"), out + err
    assert path.read_bytes() == before
