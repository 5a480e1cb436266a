"""A deal whose history cannot be read (or reads behind the query) does not hold back the others: it waits in
the retry set, which every later poll reads again, and a backfill completes the rest and names it."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from types import SimpleNamespace

import pytest

from sync.config import load_config
from sync.errors import AttioError
from sync.models import Current, DealRef, epoch_ms
from sync.source import DealSource
from tests.conftest import NOW, add_deal, add_leads, days, ledger_rows, uid

MINUTE = timedelta(minutes=1)


def checkpoint(env) -> str:
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    try:
        return conn.execute("select value from checkpoints where name = 'poll'").fetchone()[0]
    finally:
        conn.close()


def moves(usermaven) -> list[tuple]:
    return [(e["event_attributes"]["deal_id"], e["event_attributes"]["previous_stage"],
             e["event_attributes"]["deal_stage"]) for e in usermaven.events]


def test_one_unreadable_deal_does_not_hold_back_the_others(attio, workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.move_deal(uid("d2"), "Qualified", NOW + MINUTE)
    attio.fail_history(uid("d1"), 5)  # a 400 on each of the next five polls' reads
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 1
    assert f"deal {uid('d1')}" in err and "Simulated refusal" in err
    # the other deal's move is committed and sent, and the checkpoint advanced
    assert moves(usermaven) == [(uid("d2"), "Lead", "Qualified")]
    assert checkpoint(env) == "2026-03-01T12:02:00.000000Z"
    # poll after poll, the unreadable deal is read again (once each time) and the others' moves still go out
    for n, title in enumerate(("Demo", "Lost", "Won 🎉")):
        workspace.move_deal(uid("d2"), title, NOW + (3 + n) * MINUTE)
        workspace.clock = NOW + (4 + n) * MINUTE
        reads = attio.history_reads[uid("d1")]
        code, out, err = run("run")
        assert code == 1 and f"deal {uid('d1')}" in err
        assert attio.history_reads[uid("d1")] == reads + 1
    assert len(usermaven.events) == 4
    # Attio reads it again once its move has left the changed-since window: only the retry set brings it back
    workspace.clock = NOW + 30 * MINUTE
    assert run("run")[0] == 1
    workspace.clock = NOW + 60 * MINUTE
    code, out, err = run("run")
    assert code == 0, err
    assert moves(usermaven)[-1] == (uid("d1"), "Qualified", "Demo")
    assert usermaven.events[-1]["_timestamp"] == epoch_ms(NOW + MINUTE)
    assert run("run")[0] == 0
    assert len(usermaven.events) == 5
    assert {r["state"] for r in ledger_rows(env) if r["record_id"] != uid("d3")} == {"sent"}


def test_status_shows_the_deals_to_read_again_with_attios_message(attio, workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    attio.fail_history(uid("d1"), 2)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    workspace.clock = NOW + 3 * MINUTE
    run("run")
    code, out, err = run("status")
    assert code == 0
    [line] = [line for line in out.splitlines() if "to read again" in line]
    assert uid("d1") in line and "poll" in line and "2 attempts" in line and "Simulated refusal" in line
    report = json.loads(run("status", "--json")[1])
    [entry] = report["retry"]
    assert (entry["deal_key"], entry["scope"], entry["attempts"]) == (uid("d1"), "poll", 2)
    assert "Attio answered 400" in entry["last_error"] and "Simulated refusal" in entry["last_error"]
    assert run("run")[0] == 0
    assert json.loads(run("status", "--json")[1])["retry"] == []
    assert "to read again" not in run("status")[1]


def test_a_deleted_deal_is_skipped_not_retried(attio, workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    attio.delete_before_history(uid("d1"))
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 0 and "was deleted in Attio" in err
    assert json.loads(run("status", "--json")[1])["retry"] == []


def test_a_history_behind_the_query_is_not_the_snapshot_and_is_read_again(attio, workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    attio.stale_history(uid("d1"), 3)  # the query shows Demo, the next three history reads end at Qualified
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 1
    assert f"deal {uid('d1')}" in err and "behind the stage the query returned" in err
    assert usermaven.events == []
    workspace.clock = NOW + 30 * MINUTE
    assert run("run")[0] == 1
    # read again from the retry set only (its move has left the changed-since window): its current stage is
    # read again too, so a history still behind it is not taken for the deal's stage either
    workspace.clock = NOW + 60 * MINUTE
    code, out, err = run("run")
    assert code == 1 and "behind the stage the query returned" in err
    workspace.clock = NOW + 61 * MINUTE
    assert run("run")[0] == 0
    assert moves(usermaven) == [(uid("d1"), "Qualified", "Demo")]


def test_a_deal_deleted_while_in_the_retry_set_is_dropped_from_it(attio, workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    attio.fail_history(uid("d1"))
    workspace.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 1
    workspace.delete_deal(uid("d1"))
    workspace.clock = NOW + 60 * MINUTE
    code, out, err = run("run")
    assert code == 0 and f"deal(s) {uid('d1')}, to be read again, were deleted in Attio" in err
    assert json.loads(run("status", "--json")[1])["retry"] == []


def test_a_list_entry_in_the_retry_set_is_read_again(attio, workspace, usermaven, run, monkeypatch):
    monkeypatch.setenv("ATTIO_LIST", "sales_pipeline")
    workspace.add_entry(uid("d1"), "Lead", NOW - days(100), entry_id=uid("e1"))
    workspace.add_entry(uid("d2"), "Lead", NOW - days(50), entry_id=uid("e2"))
    run("run")
    workspace.move_entry(uid("e1"), "Demo", NOW + MINUTE)
    workspace.move_entry(uid("e2"), "Demo", NOW + MINUTE)
    attio.fail_history(uid("e1"), 2)
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 1 and f"deal {uid('e1')}" in err
    assert [e["event_attributes"]["entry_id"] for e in usermaven.events] == [uid("e2")]
    workspace.clock = NOW + 30 * MINUTE
    assert run("run")[0] == 1
    workspace.clock = NOW + 60 * MINUTE  # the move has left the changed-since window: the retry set brings it
    assert run("run")[0] == 0
    [event] = usermaven.events[1:]
    assert (event["event_attributes"]["entry_id"], event["event_attributes"]["deal_id"]) == (uid("e1"), uid("d1"))
    assert event["event_attributes"]["deal_name"] == "Acme renewal"


def test_backfill_completes_the_other_deals_and_names_the_one_to_retry(attio, workspace, usermaven, run):
    add_deal(workspace, uid("d5"), "Epsilon", [("Lead", NOW - days(300)), ("Won 🎉", NOW - days(50))],
             people=[uid("p2")])
    attio.fail_history(uid("d5"), 1)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1
    assert f"deal {uid('d5')}" in err and "Simulated refusal" in err
    assert "run the same command again: attio-usermaven-sync run --backfill --since 2020-01-01T00:00:00.000000Z" in err
    assert sorted(moves(usermaven), key=str) == sorted(
        [(uid("d1"), None, "Lead"), (uid("d1"), "Lead", "Qualified"), (uid("d2"), None, "Lead")], key=str)
    out = run("status")[1]
    assert "unfinished backfill since 2020-01-01" in out
    assert any(uid("d5") in line and "backfill since 2020-01-01" in line and "Simulated refusal" in line
               for line in out.splitlines())
    # the same command again reads only that deal, and finishes
    reads = attio.history_reads
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert attio.history_reads - reads == {uid("d5"): 1}
    assert moves(usermaven)[-2:] == [(uid("d5"), None, "Lead"), (uid("d5"), "Lead", "Won 🎉")]
    out = run("status")[1]
    assert "unfinished backfill" not in out and "to read again" not in out


def test_attio_failing_every_history_read_stops_the_run_and_moves_nothing(attio, workspace, usermaven, run, env):
    add_leads(workspace, "u", 5, days_back=10)
    run("run")
    before = checkpoint(env)
    for record_id in workspace.deal_ids():
        workspace.move_deal(record_id, "Demo", NOW + MINUTE)
        attio.fail_history(record_id, 100, status=503)  # more than every retry of every read
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 1 and "503" in err and "history reads in a row" in err
    # not a bad deal but Attio down: nothing is put aside, the checkpoint stays, the next run starts again
    assert checkpoint(env) == before
    assert json.loads(run("status", "--json")[1])["retry"] == []


@pytest.mark.parametrize("failing", [1, 2])
def test_with_histories_keeps_input_order_and_marks_only_the_failing_deals(env, failing):

    class Source(DealSource):
        def history(self, ref):  # type: ignore[no-untyped-def]
            if ref.record_id.startswith("bad"):
                raise AttioError(f"Attio answered 400 (x) for {ref.record_id}: no", 400)
            return []

    client = SimpleNamespace(latency=0.05)  # what sizes the reads in flight
    source = Source(client, load_config(env))  # type: ignore[arg-type]
    names = [f"bad{n}" if n < failing else f"ok{n}" for n in range(5)]
    pairs = list(source.with_histories(Current(DealRef(name), None) for name in names))
    assert [c.ref.record_id for c, _ in pairs] == names
    assert [not isinstance(h, list) for _, h in pairs] == [n.startswith("bad") for n in names]


def test_a_deal_in_the_retry_set_whose_current_read_fails_holds_back_no_other(attio, workspace, usermaven, run,
                                                                               env, monkeypatch):
    monkeypatch.setenv("ATTIO_LIST", "sales_pipeline")
    workspace.add_entry(uid("d1"), "Lead", NOW - days(100), entry_id=uid("e1"))
    workspace.add_entry(uid("d2"), "Lead", NOW - days(50), entry_id=uid("e2"))
    run("run")
    workspace.move_entry(uid("e1"), "Demo", NOW + MINUTE)
    attio.fail_history(uid("e1"), 2)  # the two polls that read its history refuse it
    workspace.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 1  # e1 goes to the retry set
    workspace.clock = NOW + 30 * MINUTE
    assert run("run")[0] == 1  # still in the changed-since window: the scan lists it, its history fails again
    for n, stage in enumerate(["Qualified", "Demo", "Won 🎉"]):  # now only the retry set brings e1
        workspace.move_entry(uid("e2"), stage, NOW + (31 + 10 * n) * MINUTE)
        workspace.clock = NOW + (32 + 10 * n) * MINUTE
        attio.fail_next(1, status=400, endpoint="entry", message="Simulated refusal of the entry")
        code, out, err = run("run")
        assert code == 1 and f"deal {uid('e1')}" in err and "Simulated refusal of the entry" in err
        assert checkpoint(env) == f"{(NOW + (32 + 10 * n) * MINUTE):%Y-%m-%dT%H:%M:%S}.000000Z"
    assert [s for d, _, s in moves(usermaven) if d == uid("d2")] == ["Qualified", "Demo", "Won 🎉"]
    workspace.clock = NOW + 70 * MINUTE
    assert run("run")[0] == 0  # readable again: its move arrives, and the retry set is empty
    assert moves(usermaven)[-1] == (uid("d1"), "Lead", "Demo")
    assert "to read again" not in run("status")[1]
