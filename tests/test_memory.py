"""Memory stays flat in the workspace's size: a scan's memory of the deals it yielded is bounded (a repeat it
forgot, when the query stepped back further than that after deletions, is read again and recorded once), and a
command loads only the modules it uses."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from sqlite_utils import Database

from sync import attio as attio_module
from sync import source as source_module
from sync.attio import AttioClient, Page
from sync.source import RecentKeys
from sync.state import State
from tests.conftest import add_leads, ledger_rows, move_all


def test_recent_keys_keep_the_last_ones_added():
    keys = RecentKeys(3)
    for key in "abcd":
        keys.add(key)
    assert len(keys) == 3
    assert "a" not in keys
    assert all(key in keys for key in "bcd")
    keys.add("b")  # added again: the most recent now
    keys.add("e")
    assert "c" not in keys and "b" in keys


def test_a_scan_remembers_a_bounded_number_of_deals(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)  # 120 deals: 8 overlapping pages
    monkeypatch.setattr(source_module, "SCAN_MEMORY", 30)
    sizes: list[int] = []

    class Watched(RecentKeys):
        def add(self, key: str) -> None:
            super().add(key)
            sizes.append(len(self))

    monkeypatch.setattr(source_module, "RecentKeys", Watched)
    ids = add_leads(attio.workspace, "g", 120, days_back=200)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert max(sizes) == 30  # the scans remembered 30 deals at most, not 120
    sent = [e["event_attributes"]["deal_id"] for e in usermaven.events]
    assert sorted(sent) == sorted(ids)  # each deal's one transition (into Lead), once: none lost, none twice


def _repeating_the_first_page(monkeypatch, wanted) -> None:
    """Wrap AttioClient.query: a matching scan ends with its first page again, as a step back past the scan's
    memory would bring it."""
    query = AttioClient.query

    def repeating(self: AttioClient, path: str, filter: dict | None = None,
                  page_size: int | None = None, **ahead: Any) -> Iterator[Page]:
        if not wanted(path, filter):
            yield from query(self, path, filter, page_size, **ahead)
            return
        first = None
        for page in query(self, path, filter, page_size, **ahead):
            first = first or page
            yield page
        if first is not None:
            yield first

    monkeypatch.setattr(AttioClient, "query", repeating)


def test_a_poll_records_a_repeat_the_scan_forgot_once(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)
    monkeypatch.setattr(source_module, "SCAN_MEMORY", 5)
    workspace = attio.workspace
    ids = add_leads(workspace, "g", 50, days_back=100)
    assert run("run")[0] == 0  # baseline
    move_all(workspace, ids, "Qualified")
    _repeating_the_first_page(monkeypatch, lambda path, f: f is not None and "stage" in f)
    code, out, err = run("run")
    assert code == 0, err
    moved = [e["event_attributes"]["deal_id"] for e in usermaven.events]
    assert sorted(moved) == sorted(ids)  # every move once
    assert len(ledger_rows(env)) == 50
    assert "50 new transition(s)" in err


def test_a_backfill_records_a_repeat_the_scan_forgot_once(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)
    monkeypatch.setattr(source_module, "SCAN_MEMORY", 5)
    ids = add_leads(attio.workspace, "g", 30, days_back=100)
    _repeating_the_first_page(monkeypatch, lambda path, f: f is None and "deals" in path)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    sent = [e["event_attributes"]["deal_id"] for e in usermaven.events]
    assert sorted(sent) == sorted(ids)
    assert len(ledger_rows(env)) == 30
    assert "30 new transition(s)" in err  # counted once, though read twice


def test_run_loads_neither_the_scheduler_nor_the_sandbox():
    # A fresh interpreter: this one has imported them for other tests.
    code = ("import sys, sync.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('apscheduler', 'sync.sandbox'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_lookups_of_any_length_prepare_a_few_statements():
    # SQLite's connection keeps the statements it prepared (one per distinct text, about 100 KB at a few hundred
    # parameters): lookups of every length from 1 to 1,200 ids must come down to a few texts.
    state = State(Database(sqlite3.connect(":memory:")))
    executed: list[str] = []
    state.db.conn.set_trace_callback(executed.append)
    for n in range(1, 1201):
        ids = [f"id-{i}" for i in range(n)]
        state.ledger.known_ids([(key, f"event-{key}") for key in ids])
        state.snapshot.rows(ids)
        state.backfills.done_keys("b", ids)
    shapes = {re.sub(r"'[^']*'", "?", sql) for sql in executed if " in (" in sql}
    assert len(shapes) <= 3 * 10  # three lookups, ten lengths each (1, 2, 4 ... 256, 500)
