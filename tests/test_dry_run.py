"""`--dry-run` on an existing state: the file is opened read-only, never copied, and its bytes stay the same."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from sync.state import open_state
from tests.conftest import NOW, resends_due, uid

MINUTE = timedelta(minutes=1)


def _file(db: str) -> tuple[bytes, int]:
    """The state file's bytes and mtime; its write-ahead log must hold nothing new either."""
    wal = Path(db + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    return Path(db).read_bytes(), Path(db).stat().st_mtime_ns


def test_dry_run_sees_its_own_writes_and_leaves_the_file_untouched(workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    usermaven.answers = [(500, {"message": "down", "error": ""})]
    assert run("run")[0] == 1  # d1's move stays pending in the file
    resends_due(env["SYNC_STATE_DB"])  # and may be sent again now
    workspace.move_deal(uid("d2"), "Lost", NOW + 3 * MINUTE)
    workspace.clock = NOW + 4 * MINUTE
    before = _file(env["SYNC_STATE_DB"])
    for _ in range(2):  # and again: the first dry run kept nothing
        code, out, err = run("run", "--dry-run")
        assert code == 0, err
        stages = [json.loads(line)["event_attributes"]["deal_stage"] for line in out.splitlines()]
        assert stages == ["Demo", "Lost"]  # the pending one and the new one, each once, oldest first
        assert "2 event(s) printed" in err
        assert _file(env["SYNC_STATE_DB"]) == before
    assert usermaven.batches == []
    assert run("run")[0] == 0
    # each once (the one sent before without a confirmation goes after the new one: delivery.RESEND_AFTER)
    assert [e["event_attributes"]["deal_stage"] for e in usermaven.events] == ["Lost", "Demo"]


def test_dry_run_state_is_the_file_read_only_not_a_copy(workspace, usermaven, run, env):
    run("run")
    path = Path(env["SYNC_STATE_DB"])
    state = open_state(path, dry_run=True)
    try:
        [(_, name, file)] = [row for row in state.db.execute("pragma database_list") if row[1] == "main"]
        assert os.path.samefile(file, path)  # the file itself: nothing copied into memory
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            state.db.execute("insert into checkpoints (name, value) values ('x', 'y')")
        state.ledger.add([])
        state.checkpoints.set("poll", "2030-01-01T00:00:00.000000Z")
        assert state.checkpoints.get("poll") == "2030-01-01T00:00:00.000000Z"  # for this run only
    finally:
        state.close()
    assert open_state(path, dry_run=True).checkpoints.get("poll") != "2030-01-01T00:00:00.000000Z"


def test_a_dry_backfill_on_an_existing_state_reads_each_deal_once(workspace, attio, usermaven, run, env):
    assert run("run")[0] == 0  # the baseline: the file exists, with its resume points
    attio.reset_stats()
    code, out, err = run("run", "--backfill", "--since", "2020-01-01", "--dry-run")
    assert code == 0, err
    assert attio.history_reads and set(attio.history_reads.values()) == {1}
    assert "kept shifting" not in err and "pushed past a page boundary" not in err
    lines = out.splitlines()
    assert lines and len(lines) == len(set(lines))
