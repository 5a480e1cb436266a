"""`replay DEAL_ID`: one deal's transitions again, same ids and timestamps."""

from __future__ import annotations

from tests.conftest import NOW, days, ledger_rows, uid


def test_replay_resends_one_deals_transitions_with_the_same_ids(workspace, usermaven, run, env):
    run("run", "--backfill", "--since", "2020-01-01")
    first = [e for e in usermaven.events if e["event_attributes"]["deal_id"] == uid("d1")]
    assert len(first) == 2
    # the person's email is fixed in Attio, then the deal is replayed
    workspace.set_person_email(uid("p1"), "jane.doe@acme.com")
    usermaven.batches.clear()
    code, out, err = run("replay", uid("d1"))
    assert code == 0
    again = usermaven.events
    assert [e["event_id"] for e in again] == [e["event_id"] for e in first]
    assert [e["_timestamp"] for e in again] == [e["_timestamp"] for e in first]
    assert {e["user"]["id"] for e in again} == {"jane.doe@acme.com"}
    rows = [r for r in ledger_rows(env) if r["record_id"] == uid("d1")]
    assert [(r["state"], r["replay_count"]) for r in rows] == [("sent", 1), ("sent", 1)]
    assert all(r["replayed_at"] for r in rows)


def test_replay_since_sends_only_later_transitions(workspace, usermaven, run):
    code, out, err = run("replay", uid("d1"), "--since", (NOW - days(650)).isoformat())
    assert code == 0
    [event] = usermaven.events
    assert event["event_attributes"]["deal_stage"] == "Qualified"


def test_replay_of_a_held_deal_keeps_it_held(workspace, usermaven, run, env):
    code, out, err = run("replay", uid("d3"))
    assert code == 0
    assert usermaven.events == []
    assert [r["state"] for r in ledger_rows(env)] == ["held"]
    workspace.add_person("new@delta.io", record_id=uid("p9"))
    workspace.set_deal_people(uid("d3"), [uid("p9")])
    assert run("replay", uid("d3"))[0] == 0
    assert [e["user"]["id"] for e in usermaven.events] == ["new@delta.io"]


def test_replay_unknown_deal_exits_2_with_attios_message(workspace, usermaven, run):
    code, out, err = run("replay", "00000000-0000-4000-8000-000000000000")
    assert code == 2
    assert 'Record with ID "00000000-0000-4000-8000-000000000000" not found.' in err
    assert "check the deal id" in err
    assert usermaven.batches == []


def test_replay_dry_run_prints_and_sends_nothing(workspace, usermaven, run):
    code, out, err = run("replay", uid("d1"), "--dry-run")
    assert code == 0
    assert len(out.splitlines()) == 2
    assert usermaven.batches == []


def test_replay_summary_counts_replayed_apart_from_new(workspace, usermaven, run):
    run("run", "--backfill", "--since", "2020-01-01")
    code, out, err = run("replay", uid("d1"))
    assert code == 0
    assert "replay: 1 deal(s) read, 0 new transition(s), 2 replayed, 2 event(s) sent" in err


def test_replay_of_a_deal_whose_history_attio_refuses_exits_1_with_its_message(attio, workspace, usermaven, run,
                                                                                 env):
    attio.fail_history(uid("d1"))
    code, out, err = run("replay", uid("d1"))
    assert code == 1 and "Simulated refusal" in err
    assert usermaven.events == [] and ledger_rows(env) == []
