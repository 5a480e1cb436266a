"""Recording many transitions at once: a few multi-row insert statements, each row as executemany kept it."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from sync.state import State


def _row(n: int, stage: str = "Won") -> dict:
    return {"event_id": f"ev-{n}", "deal_key": f"d-{n % 7}", "record_id": f"d-{n % 7}", "entry_id": None,
            "from_stage_id": None, "from_stage": None, "to_stage_id": "s", "to_stage": stage,
            "changed_at": f"2025-01-01T00:00:{n % 60:02d}.000000Z", "payload": {"n": n, "é": "🎉"},
            "state": "pending", "reason": None, "origin": "backfill"}


def test_rows_beyond_one_statement_are_all_added_and_known_ones_left_as_they_are():
    state = State(Database(sqlite3.connect(":memory:")))
    state.ledger.add([_row(5, stage="Lead")])
    rows = [_row(n) for n in range(603)] + [_row(7, stage="Lost")]
    state.ledger.add(rows)
    stored = dict(state.db.execute("select event_id, to_stage from ledger").fetchall())
    assert len(stored) == 603
    assert stored["ev-5"] == "Lead" and stored["ev-7"] == "Won"  # the first of a repeated id wins, as before
    payload = state.db.execute("select payload from ledger where event_id = 'ev-9'").fetchone()[0]
    assert payload == '{"n": 9, "é": "🎉"}'


@pytest.mark.parametrize("json_each", [True, False], ids=["by SQLite", "without SQLite's JSON functions"])
def test_pending_rows_named_in_exclude_are_left_out_and_the_rest_come_oldest_first(json_each):
    state = State(Database(sqlite3.connect(":memory:")))
    assert state.ledger.json_each  # this SQLite has them
    state.ledger.json_each = json_each
    state.ledger.add([_row(n) for n in range(1200)])
    every = [row["event_id"] for chunk in state.ledger.iter_pending(decode=False) for row in chunk]
    assert len(every) == 1200
    queued = set(every[:1000])  # two whole chunks of 500, then some of the third
    queued |= set(every[1000::7])
    rest = [row["event_id"] for chunk in state.ledger.iter_pending(decode=False, exclude=queued) for row in chunk]
    assert rest == [event_id for event_id in every if event_id not in queued]


def test_an_sqlite_that_allows_999_variables_takes_the_rows_in_smaller_statements():
    """Found by a review: SQLite before 3.32 (still shipped by some distributions) allows 999 variables per
    statement; 256 ledger rows are 3,584."""
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    state = State(Database(conn))
    state.ledger.add([_row(n) for n in range(603)])
    state.snapshot.save([{"key": f"d-{n}", "record_id": f"d-{n}", "entry_id": None, "stage_id": "s",
                          "stage_title": "Won", "stage_since": "2025-01-01T00:00:00.000000Z"} for n in range(600)])
    assert state.db.execute("select count(*) from ledger").fetchone()[0] == 603
    assert state.db.execute("select count(*) from deals").fetchone()[0] == 600


def test_pending_events_are_read_by_their_own_index_oldest_first_also_in_a_dry_run(tmp_path):
    """Without statistics SQLite would read pending rows by the index on the state and sort them all for every
    chunk; the index of pending rows gives them in order. The dry run reads the file's through the same index."""
    from sync.state import open_state
    from sync.state.dry import DryLedger

    path = tmp_path / "sync.db"
    state = open_state(path)
    with state.atomic():
        state.ledger.add([_row(n) for n in range(40)])
        state.ledger.mark_sent([(f"d-{n % 7}", f"ev-{n}") for n in range(0, 40, 2)])
    state.close()
    for dry_run in (False, True):
        state = open_state(path, dry_run=dry_run)
        assert isinstance(state.ledger, DryLedger) == dry_run
        if dry_run:  # the run's own pending rows, in the overlay, come in order too
            state.ledger.add([_row(n) for n in range(40, 60)])
        statements: list[str] = []
        state.db.conn.set_trace_callback(statements.append)
        rows = [row for chunk in state.ledger.iter_pending(batch=7) for row in chunk]
        state.db.conn.set_trace_callback(None)
        ids = [f"ev-{n}" for n in [*range(1, 40, 2), *(range(40, 60) if dry_run else [])]]
        assert [r["event_id"] for r in rows] == sorted(ids, key=lambda e: (_row(int(e[3:]))["changed_at"], e))
        [read, *_] = [sql for sql in statements if sql.startswith("select")]
        plan = " ".join(r[3] for r in state.db.execute("explain query plan " + read))
        assert "USING INDEX idx_ledger_pending" in plan and "idx_ledger_state " not in plan + " ", plan
        if dry_run:
            # Each half read in order by its index from where the last chunk ended, up to a chunk (what is sorted
            # is the two halves' chunks, to merge them), never every pending row of the overlay.
            assert "SEARCH temp.dry_ledger USING INDEX dry_ledger_pending ((changed_at,event_id)>(?,?))" in plan, plan
            assert "SCAN temp.dry_ledger" not in plan and "SCAN dry_ledger" not in plan, plan
        state.close()


def test_what_status_reads_of_the_ledger_goes_by_indexes_without_reading_every_row_or_sorting(tmp_path):
    """At a million rows `status` must stay under half a second: its ledger queries read only the rows they
    count or list, each through an index (a covering one for the counts), and sort nothing but their groups."""
    from sync.state import open_state

    state = open_state(tmp_path / "sync.db")
    with state.atomic():
        state.ledger.add([{**_row(n), "state": ("held", "failed", "pending", "sent")[n % 4],
                           "reason": "no email" if n % 4 == 0 else None} for n in range(40)])
    statements: list[str] = []
    state.db.conn.set_trace_callback(statements.append)
    state.ledger.counts(), state.ledger.held_reasons(), state.ledger.failures(), state.ledger.pending_errors()
    state.db.conn.set_trace_callback(None)
    statements = [sql for sql in statements if sql.startswith("select")]  # sqlite-utils' savepoints aside
    assert len(statements) == 4
    for sql in statements:
        plan = [r[3] for r in state.db.execute("explain query plan " + sql)]
        reads = [step for step in plan if "ledger" in step]
        assert reads and all("USING" in step and "INDEX" in step for step in reads), (sql, plan)
        if "group by" not in sql:  # the latest failures come in the index's order; groups are few to sort
            assert not any("ORDER BY" in step for step in plan), (sql, plan)
        assert "idx_ledger_state " not in " ".join(reads) + " " or sql.startswith("select state, count(*)"), (sql, plan)
    state.close()


@pytest.mark.parametrize("json_each", [True, False], ids=["sqlite-json", "no-json"])
def test_rows_are_updated_by_their_key_once_each_in_one_statement_per_chunk(json_each):
    """Marks find rows by (deal_key, event_id): a key given twice updates its row once, a key whose deal is not
    the row's updates nothing; with SQLite's JSON functions a batch is one statement (each statement hands the GIL
    to the busy reading threads), without them one per row."""
    state = State(Database(sqlite3.connect(":memory:")))
    state.ledger.json_each = json_each
    with state.atomic():
        state.ledger.add([_row(n) for n in range(20)])
    statements: list[str] = []
    state.db.conn.set_trace_callback(statements.append)
    with state.atomic():
        state.ledger.mark_sent([("d-1", "ev-1"), ("d-2", "ev-2"), ("d-1", "ev-1"), ("d-0", "ev-3")])
    state.db.conn.set_trace_callback(None)
    updates = [sql for sql in statements if sql.lstrip().lower().startswith("update")]
    assert len(updates) == (1 if json_each else 3)
    rows = {r["event_id"]: r for r in state.db.query("select event_id, state, attempts from ledger")}
    assert {e for e, r in rows.items() if r["state"] == "sent"} == {"ev-1", "ev-2"}
    assert rows["ev-1"]["attempts"] == rows["ev-2"]["attempts"] == 1
    assert rows["ev-3"]["state"] == "pending"


def test_a_dry_run_reads_each_chunk_of_pending_events_at_the_same_cost_however_many_it_has_marked(tmp_path):
    """A dry run marks what it printed in its overlay, and the file's rows it shadows are left out of the next
    chunk by a search of the overlay per row: a chunk read after 2,000 rows were marked costs what one after 100
    does (a `NOT IN (SELECT ...)` copied the whole overlay for every chunk: quadratic in a dry run's events)."""
    from sync.state import open_state
    from sync.state.ledger import keys

    path = tmp_path / "sync.db"
    state = open_state(path)
    with state.atomic():
        state.ledger.add([_row(n) for n in range(2400)])
    state.close()
    state = open_state(path, dry_run=True)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    cost = {}
    marked = 0
    for chunk in state.ledger.iter_pending(batch=100, decode=False):
        with state.atomic():
            state.ledger.mark_sent(keys(chunk))
        marked += len(chunk)
        if marked in (100, 2000):
            after = (chunk[-1]["changed_at"], chunk[-1]["event_id"])
            steps = 0
            state.db.conn.set_progress_handler(count, 100)
            assert len(state.ledger._pending_chunk(after, "9999", 100, "", [])) == 100
            state.db.conn.set_progress_handler(None, 0)
            cost[marked] = steps
    assert cost[2000] < 2 * cost[100], cost


def test_a_key_given_twice_in_different_chunks_still_updates_its_row_once(monkeypatch):
    from sync.state import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "KEYS_PER_STATEMENT", 2)
    state = State(Database(sqlite3.connect(":memory:")))
    with state.atomic():
        state.ledger.add([_row(n) for n in range(6)])
        state.ledger.mark_sent([("d-1", "ev-1"), ("d-2", "ev-2"), ("d-3", "ev-3"), ("d-1", "ev-1")])
    attempts = {r["event_id"]: r["attempts"] for r in state.db.query("select event_id, attempts from ledger")}
    assert attempts == {"ev-0": 0, "ev-1": 1, "ev-2": 1, "ev-3": 1, "ev-4": 0, "ev-5": 0}
