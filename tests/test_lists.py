"""Pipelines kept as lists: stages on list entries, the deal is the entry's parent record."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import NOW, days, ledger_rows, queries, uid

MINUTE = timedelta(minutes=1)


@pytest.fixture
def pipeline(env, workspace, monkeypatch):
    """d1 is on the pipeline twice (two entries), d2 once."""
    monkeypatch.setenv("ATTIO_LIST", "sales_pipeline")
    workspace.add_entry(uid("d1"), "Lead", NOW - days(300), entry_id=uid("e1"))
    workspace.move_entry(uid("e1"), "Qualified", NOW - days(200))
    workspace.add_entry(uid("d1"), "Lead", NOW - days(100), entry_id=uid("e2"))
    workspace.add_entry(uid("d2"), "Lead", NOW - days(50), entry_id=uid("e3"))
    workspace.move_entry(uid("e3"), "Won 🎉", NOW - days(20))
    return workspace


def test_backfill_reads_entries_and_keys_transitions_on_the_entry(pipeline, usermaven, run, env):
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    events = usermaven.events
    assert len(events) == 5
    by_entry = {}
    for event in events:
        by_entry.setdefault(event["event_attributes"]["entry_id"], []).append(event)
    assert sorted(by_entry) == sorted([uid("e1"), uid("e2"), uid("e3")])
    # the deal is the parent record: its name, people and company describe the event
    for event in by_entry[uid("e1")] + by_entry[uid("e2")]:
        assert event["event_attributes"]["deal_id"] == uid("d1")
        assert event["event_attributes"]["deal_name"] == "Acme renewal"
        assert event["user"]["id"] == "jane@acme.com"
    # two entries of one record moving to the same stage are two transitions, with different ids
    ids = [e["event_id"] for e in events]  # as received: a resend would show twice
    assert len(ids) == len(set(ids)) == 5
    assert {r["deal_key"] for r in ledger_rows(env)} == {uid("e1"), uid("e2"), uid("e3")}


def test_poll_on_a_list_sends_the_moved_entry_only(attio, pipeline, usermaven, run):
    run("run")
    pipeline.move_entry(uid("e2"), "Demo", NOW + MINUTE)
    pipeline.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 0
    [event] = usermaven.events
    assert event["event_attributes"]["entry_id"] == uid("e2")
    assert (event["event_attributes"]["previous_stage"], event["event_attributes"]["deal_stage"]) == ("Lead", "Demo")
    entry_queries = queries(attio, "sales_pipeline")
    assert entry_queries[-1]["filter"] == {"stage": {"active_from": {"$gte": "2026-03-01T11:55:00.000000Z"}}}


def test_list_without_active_from_filter_falls_back_to_a_scan_and_diff(attio, pipeline, usermaven, run):
    attio.list_active_from = False
    run("run")
    pipeline.move_entry(uid("e3"), "Lost", NOW + MINUTE)
    pipeline.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 0
    assert "refused the active_from filter" in err
    [event] = usermaven.events
    assert event["event_attributes"]["entry_id"] == uid("e3")
    assert run("run")[0] == 0
    assert len(usermaven.events) == 1


def test_replay_on_a_list_replays_every_entry_of_the_record(pipeline, usermaven, run):
    assert run("replay", uid("d1"))[0] == 0
    assert sorted(e["event_attributes"]["entry_id"] for e in usermaven.events) == sorted(
        [uid("e1"), uid("e1"), uid("e2")])


def test_replay_of_a_record_not_on_the_list_exits_2(pipeline, usermaven, run):
    code, out, err = run("replay", uid("d3"))
    assert code == 2
    assert f"deal {uid('d3')} has no entry on the list 'sales_pipeline'" in err


def test_a_list_of_another_object_than_attio_object_is_refused_before_anything_runs(pipeline, usermaven, run,
                                                                                      monkeypatch):
    """A company pipeline with ATTIO_OBJECT left at `deals` (or the other way round): every entry's record would be
    looked for among the wrong object's and its events held for want of a person. Found by a review."""
    monkeypatch.setenv("ATTIO_OBJECT", "companies")
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 2
    assert "ATTIO_LIST 'sales_pipeline' holds records of 'deals', not of ATTIO_OBJECT 'companies'" in err
    assert "set ATTIO_OBJECT=deals" in err and usermaven.events == []
    monkeypatch.setenv("ATTIO_OBJECT", pipeline.objects["deals"].id)  # the same object, by its id: accepted
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
