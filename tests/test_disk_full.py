"""A full disk (or one that fails) under the state: nothing is sent that could not be recorded as sent, and the
file is not called damaged. Found by a review, on a small tmpfs: every run sent the same events again."""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from datetime import timedelta

import pytest

from sync import commands
from sync import state as state_module
from sync.state.ledger import Ledger
from sync.state.runs import Runs
from tests.conftest import NOW, add_deal, add_leads, ledger_rows, uid

MINUTE = timedelta(minutes=1)
Usage = namedtuple("Usage", "total used free")


def _pending(workspace, run, usermaven) -> None:
    """Two moves after the baseline, recorded and left pending (Usermaven said 503 to every try)."""
    run("run")
    for n in range(2):
        add_deal(workspace, uid(f"new{n}"), f"New {n}", [("Lead", NOW + MINUTE)], people=[uid("p1")])
    workspace.clock = NOW + 10 * MINUTE
    usermaven.answers = [(503, {"message": "busy", "error": ""})] * 10
    assert run("run")[0] == 1
    usermaven.answers = []


def test_with_too_little_free_space_nothing_is_sent(workspace, usermaven, run, env, monkeypatch):
    _pending(workspace, run, usermaven)
    requests = usermaven.requests
    with monkeypatch.context() as patched:
        patched.setattr(commands.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 65536, 65536))
        code, out, err = run("run")
    assert code == 1 and usermaven.requests == requests
    assert "the disk that holds the state has 64 KB free, under the 8 MB needed to record what is sent" in err
    assert "2 event(s) stay pending" in err
    assert run("run")[0] == 0 and len(usermaven.events) == 2


def test_a_state_write_that_fails_stops_the_run_before_anything_is_sent(workspace, usermaven, run, env, monkeypatch):
    _pending(workspace, run, usermaven)
    requests = usermaven.requests

    def full(self: Ledger, event_ids: list[str]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "mark_checked", full)  # the first write after the poll: held events re-checked
    monkeypatch.setattr(commands, "release_held", _releasing_one(commands.release_held))
    code, out, err = run("run")
    assert code == 1 and usermaven.requests == requests
    assert "could not be written (database or disk is full): check its disk" in err
    assert "internal error" not in err and "Traceback" not in err
    assert {r["state"] for r in ledger_rows(env)} == {"pending"}


def _releasing_one(release):  # type: ignore[no-untyped-def]
    """release_held, made to write (as it does when events are held): through mark_checked."""

    def release_and_write(state, *args, **kwargs):  # type: ignore[no-untyped-def]
        state.ledger.mark_checked([("d", "x")])
        return release(state, *args, **kwargs)

    return release_and_write


@pytest.mark.parametrize("sqlite_code, text, said", [
    (sqlite3.SQLITE_IOERR, "disk I/O error", "cannot be read now (SQLite: disk I/O error): check the disk that holds"),
    (sqlite3.SQLITE_BUSY, "database is locked", "is held by another program (SQLite: database is locked): let it"),
])
def test_a_file_check_that_fails_for_another_reason_than_damage_says_which(workspace, usermaven, run, env,
                                                                           monkeypatch, sqlite_code, text, said):
    """A disk error, or a file another program holds, is not called damage (whose advice, replacing the file,
    means a new baseline and resends)."""
    run("run")

    def failing(conn, quick=True):  # type: ignore[no-untyped-def]
        exc = sqlite3.OperationalError(text)
        exc.sqlite_errorcode = sqlite_code  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(state_module, "_problem", failing)
    code, out, err = run("run")
    assert code == 2 and said in err
    assert "damaged" not in err and "restore it from a backup" not in err


def test_a_backfill_sends_nothing_with_too_little_free_space(attio, usermaven, run, env, monkeypatch):
    """Found by a review: the backfill's own sender sent as it recorded, whatever the disk had left."""
    add_leads(attio.workspace, "b", 120, days_back=200)
    monkeypatch.setattr(commands.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 65536, 65536))
    code, out, err = run("run", "--backfill", "--since", "2025-01-01")
    assert code == 1 and usermaven.requests == 0 and ", 0 event(s) sent," in err
    assert "64 KB free, under the 8 MB needed to record what is sent: nothing more was sent" in err


def test_a_full_disk_at_the_runs_first_write_says_so(workspace, usermaven, run, env, monkeypatch):
    run("run")

    def full(self, command):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Runs, "start", full)
    code, out, err = run("run")
    assert code == 1 and "could not be written (database or disk is full): check its disk" in err
    assert "internal error" not in err


def test_a_long_delivery_stops_when_the_disk_runs_low(workspace, usermaven, run, env, monkeypatch):
    """A catch-up delivery writes its journal as it marks batches sent: free space is looked at before each batch,
    and the delivery ends where it runs low (a review suspected that it could fill the disk midway)."""
    run("run")
    for n in range(120):
        add_deal(workspace, uid(f"many{n}"), f"Many {n}", [("Lead", NOW + MINUTE)], people=[uid("p1")])
    workspace.clock = NOW + 10 * MINUTE
    checks = 0

    def usage(path):  # type: ignore[no-untyped-def]
        nonlocal checks
        checks += 1
        return Usage(10**9, 0, 10**9) if checks < 3 else Usage(10**9, 10**9 - 65536, 65536)

    monkeypatch.setattr(commands.shutil, "disk_usage", usage)
    code, out, err = run("run")
    assert code == 1 and "nothing more was sent" in err
    assert [len(batch) for batch in usermaven.batches] == [50]  # before the first batch: room; before the second: none
    assert sum(r["state"] == "pending" for r in ledger_rows(env)) == 70


def test_a_run_that_cannot_be_recorded_at_its_end_keeps_its_exit_code_and_says_so(workspace, usermaven, run, env,
                                                                                  monkeypatch):
    """The disk that failed the run may fail the write of its `runs` row too: the run still ends with its own exit
    code and message, and a warning says it is not in `status`."""
    _pending(workspace, run, usermaven)

    def full(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Runs, "finish", full)
    code, out, err = run("run")
    assert code == 0 and len(usermaven.events) == 2
    assert "this run could not be recorded in the state (database or disk is full)" in err
    assert "internal error" not in err


def test_free_space_that_cannot_be_read_does_not_stop_delivery(workspace, usermaven, run, env, monkeypatch):
    """`disk_usage` failing says nothing about the disk: the writes themselves would."""
    _pending(workspace, run, usermaven)

    def unknown(path):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(commands.shutil, "disk_usage", unknown)
    assert run("run")[0] == 0 and len(usermaven.events) == 2
