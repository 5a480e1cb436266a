"""`run`: baseline, incremental polls, transitions, identities, held events, paging, dry run."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sync import attio as attio_module
from sync.models import epoch_ms
from sync.sandbox.records import Value
from tests.conftest import NOW, add_deal, add_leads, queries, uid
from tests.conftest import ledger_rows as ledger

MINUTE = timedelta(minutes=1)


def test_first_run_records_baseline_and_sends_nothing(attio, workspace, usermaven, run, env):
    code, out, err = run("run")
    assert code == 0
    assert usermaven.batches == []
    assert "baseline recorded for 3 deals" in err
    assert "--backfill --since" in err
    assert ledger(env) == []
    # the baseline scans every deal once, without the changed-since filter, and reads no history
    assert [q.get("filter") for q in queries(attio)] == [None]


def test_move_between_runs_sends_one_event_with_its_original_time(attio, workspace, usermaven, run, env):
    run("run")
    moved_at = NOW + 3 * MINUTE
    workspace.move_deal(uid("d1"), "Demo", moved_at)
    workspace.clock = NOW + 10 * MINUTE
    code, out, err = run("run")
    assert code == 0
    [event] = usermaven.events
    assert event["_timestamp"] == epoch_ms(moved_at)
    attrs = event["event_attributes"]
    assert (attrs["previous_stage"], attrs["deal_stage"]) == ("Qualified", "Demo")
    assert attrs["stage_changed_at"] == moved_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert attrs["deal_id"] == uid("d1") and attrs["deal_name"] == "Acme renewal"
    assert (attrs["deal_value"], attrs["deal_currency"], attrs["deal_owner"]) == (4200, "USD", "Ada Lovelace")
    assert attrs["source"] == "Attio CRM" and attrs["deal_url"].startswith("https://app.attio.com/")
    assert event["company"] == {"id": uid("c1"), "name": "Acme Inc"}
    assert event["api_key"] == env["USERMAVEN_API_KEY"]
    assert event["event_type"] == "Deal Stage Changed"
    assert event["url"] == "https://acme.example"
    # the poll asked Attio only for deals whose stage was written since the checkpoint less the overlap
    poll_query = queries(attio)[1]
    assert poll_query["filter"] == {"stage": {"active_from": {"$gte": "2026-03-01T11:55:00.000000Z"}}}
    assert poll_query["sorts"] == [{"direction": "asc", "attribute": "created_at"}]
    assert [row["state"] for row in ledger(env)] == ["sent"]


def test_several_moves_between_runs_are_each_a_transition(workspace, usermaven, run):
    run("run")
    for minutes, title in ((1, "Demo"), (2, "Won 🎉"), (3, "Lost"), (4, "Qualified")):
        workspace.move_deal(uid("d1"), title, NOW + minutes * MINUTE)
    workspace.clock = NOW + 10 * MINUTE
    assert run("run")[0] == 0
    pairs = [(e["event_attributes"]["previous_stage"], e["event_attributes"]["deal_stage"])
             for e in usermaven.events]
    assert pairs == [("Qualified", "Demo"), ("Demo", "Won 🎉"), ("Won 🎉", "Lost"), ("Lost", "Qualified")]
    assert [e["_timestamp"] for e in usermaven.events] == [epoch_ms(NOW + m * MINUTE) for m in (1, 2, 3, 4)]
    ids = [e["event_id"] for e in usermaven.events]  # as received: a resend would show twice
    assert len(ids) == len(set(ids)) == 4


def test_back_and_forth_a_b_a_gives_two_transitions(workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d2"), "Qualified", NOW + MINUTE)
    workspace.move_deal(uid("d2"), "Lead", NOW + 2 * MINUTE)
    workspace.clock = NOW + 5 * MINUTE
    run("run")
    pairs = [(e["event_attributes"]["previous_stage"], e["event_attributes"]["deal_stage"])
             for e in usermaven.events]
    assert pairs == [("Lead", "Qualified"), ("Qualified", "Lead")]


def test_rerun_sends_nothing_twice(workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    assert len(usermaven.events) == 1
    # the next runs see the same deal again inside the overlap window, and send nothing
    workspace.clock = NOW + 3 * MINUTE
    assert run("run")[0] == 0
    assert run("run")[0] == 0
    assert len(usermaven.events) == 1
    assert len(ledger(env)) == 1


def test_new_deal_after_baseline_sends_its_whole_history(workspace, usermaven, run):
    run("run")
    add_deal(workspace, uid("d4"), "Delta", [("Lead", NOW + MINUTE), ("Qualified", NOW + 2 * MINUTE)],
             people=[uid("p1")])
    workspace.clock = NOW + 3 * MINUTE
    run("run")
    pairs = [(e["event_attributes"]["previous_stage"], e["event_attributes"]["deal_stage"])
             for e in usermaven.events]
    assert pairs == [(None, "Lead"), ("Lead", "Qualified")]
    assert "company" not in usermaven.events[0]


def test_case_2_email_identity(workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    assert usermaven.events[0]["user"] == {"id": "jane@acme.com", "email": "jane@acme.com"}


@pytest.mark.parametrize("by", ["slug", "attribute id"])
def test_case_1_user_id_identity_when_attribute_configured(workspace, usermaven, run, monkeypatch, by):
    attribute = workspace.people.attribute("app_user_id")
    assert attribute is not None
    monkeypatch.setenv("ATTIO_USER_ID_ATTRIBUTE", attribute.api_slug if by == "slug" else attribute.attribute_id)
    run("run")
    workspace.move_deal(uid("d2"), "Qualified", NOW + MINUTE)
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    users = {e["event_attributes"]["deal_id"]: e["user"] for e in usermaven.events}
    assert users[uid("d2")] == {"id": "app-user-42", "email": "bob@beta.io"}
    # a person without the user id falls back to Case 2 (email)
    assert users[uid("d1")] == {"id": "jane@acme.com", "email": "jane@acme.com"}


def test_user_id_ignored_without_the_setting(workspace, usermaven, run):
    run("run")
    workspace.move_deal(uid("d2"), "Qualified", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    assert usermaven.events[0]["user"] == {"id": "bob@beta.io", "email": "bob@beta.io"}


def test_deal_without_person_is_held_then_released_when_a_person_appears(workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d3"), "Qualified", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 0
    assert usermaven.events == []
    [row] = ledger(env)
    assert row["state"] == "held" and row["reason"] == "deal has no associated person"
    assert "1 event(s) held" in err
    # nothing changes: still held, still not sent
    workspace.clock = NOW + 3 * MINUTE
    run("run")
    assert usermaven.events == []
    # someone adds a person with an email in Attio: the next run sends it, with its original time
    workspace.add_person("carol@gamma.dev", record_id=uid("p3"))
    workspace.set_deal_people(uid("d3"), [uid("p3")])
    workspace.clock = NOW + 4 * MINUTE
    assert run("run")[0] == 0
    [event] = usermaven.events
    assert event["user"] == {"id": "carol@gamma.dev", "email": "carol@gamma.dev"}
    assert event["_timestamp"] == epoch_ms(NOW + MINUTE)
    assert ledger(env)[0]["state"] == "sent"


def test_person_without_email_is_held_with_reason(workspace, usermaven, run, env):
    workspace.add_person(record_id=uid("p4"))
    workspace.set_deal_people(uid("d3"), [uid("p4")])
    run("run")
    workspace.move_deal(uid("d3"), "Lost", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    [row] = ledger(env)
    assert row["state"] == "held"
    assert row["reason"] == "the deal's associated person has no email and no user id"


def test_first_person_with_an_identity_wins(workspace, usermaven, run):
    workspace.add_person(record_id=uid("p4"))
    workspace.set_deal_people(uid("d3"), [uid("p4"), uid("p1"), uid("p2")])
    run("run")
    workspace.move_deal(uid("d3"), "Lost", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    assert usermaven.events[0]["user"]["id"] == "jane@acme.com"


def test_pagination_across_pages(attio, usermaven, run, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 5)
    add_leads(attio.workspace, "deal", 23, days_back=100)
    code, _, err = run("run")
    assert "baseline recorded for 23 deals" in err
    # a long history is paged too: 7 moves on one deal, 13 on others
    for n in range(12):
        for step in range(7 if n else 13):
            moment = NOW + MINUTE + timedelta(seconds=n * 20 + step)
            attio.workspace.move_deal(uid(f"deal{n}"), ("Qualified", "Demo")[step % 2], moment)
    attio.workspace.clock = NOW + 10 * MINUTE
    assert run("run")[0] == 0
    assert len(usermaven.events) == 13 + 11 * 7
    assert len({e["event_id"] for e in usermaven.events}) == len(usermaven.events)
    offsets = [q["offset"] for q in queries(attio) if q.get("filter")]
    assert offsets == [0, 4, 8]  # pages of 5 overlapping by 1; 12 deals changed


def test_dry_run_prints_events_and_changes_nothing(workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    before = open(env["SYNC_STATE_DB"], "rb").read()
    code, out, err = run("run", "--dry-run")
    assert code == 0
    [line] = out.splitlines()
    event = json.loads(line)
    assert event["event_attributes"]["deal_stage"] == "Demo"
    assert event["api_key"] == "<USERMAVEN_API_KEY>"
    assert usermaven.batches == []
    assert open(env["SYNC_STATE_DB"], "rb").read() == before
    # the real run afterwards still sends it
    run("run")
    assert [e["event_id"] for e in usermaven.events] == [event["event_id"]]


def test_dry_run_on_empty_state_creates_no_file(workspace, usermaven, run, env):
    code, out, err = run("run", "--dry-run")
    assert code == 0 and out == ""
    assert "would record a baseline of 3 deals" in err
    import os

    assert not os.path.exists(env["SYNC_STATE_DB"])


def test_state_file_is_private(workspace, usermaven, run, env):
    import os
    import stat

    run("run")
    assert stat.S_IMODE(os.stat(env["SYNC_STATE_DB"]).st_mode) == 0o600


def test_stage_ids_not_titles_decide_a_change(workspace, usermaven, run):
    """A new value with the same status id under another title (a rename) is no stage change: no event."""
    run("run")
    workspace.rename_stage("Qualified", "Qualified (renamed)")
    workspace.move_deal(uid("d1"), "Qualified (renamed)", NOW + MINUTE)  # d1's stage re-written, same status id
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    assert usermaven.events == []


def test_stage_title_missing_from_a_value_comes_from_the_statuses_endpoint(workspace, usermaven, run, monkeypatch):
    run("run")
    workspace.move_deal(uid("d1"), "Won 🎉", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    original = Value.to_api

    def untitled(value: Value) -> dict:
        rendered = original(value)
        if "status" in rendered:
            rendered["status"]["title"] = ""
        return rendered

    monkeypatch.setattr(Value, "to_api", untitled)
    assert run("run")[0] == 0
    [event] = usermaven.events
    assert (event["event_attributes"]["previous_stage"], event["event_attributes"]["deal_stage"]) == (
        "Qualified", "Won 🎉")


def test_move_during_the_baseline_scan_is_sent_by_the_next_poll(workspace, usermaven, run, env):
    """Attio's clock says the scan began at NOW; a deal moved a second later, before its page was read."""
    workspace.move_deal(uid("d2"), "Qualified", NOW + timedelta(seconds=1))
    assert run("run")[0] == 0
    assert usermaven.events == []
    workspace.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 0
    [event] = usermaven.events
    assert event["event_attributes"]["deal_id"] == uid("d2")
    assert (event["event_attributes"]["previous_stage"], event["event_attributes"]["deal_stage"]) == (
        "Lead", "Qualified")
    assert event["_timestamp"] == epoch_ms(NOW + timedelta(seconds=1))


def test_deal_deleted_while_the_run_reads_it_is_skipped(attio, workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.move_deal(uid("d2"), "Qualified", NOW + MINUTE)
    attio.delete_before_history(uid("d1"))
    workspace.clock = NOW + 2 * MINUTE
    code, out, err = run("run")
    assert code == 0
    assert f"deal {uid('d1')} was deleted in Attio while this run read it" in err
    assert [e["event_attributes"]["deal_id"] for e in usermaven.events] == [uid("d2")]


def test_old_held_events_are_rechecked_hourly_not_every_run(attio, workspace, usermaven, run, env):
    import sqlite3

    run("run")
    workspace.move_deal(uid("d3"), "Qualified", NOW + MINUTE)
    workspace.clock = NOW + 2 * MINUTE
    run("run")
    reads = lambda: sum(1 for q in queries(attio) if "record_id" in (q.get("filter") or {}))  # noqa: E731
    before = reads()
    run("run")
    assert reads() == before + 1  # held for minutes: looked at again on this run
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    with conn:  # now the event has been held for two days and was checked ten minutes ago
        conn.execute("update ledger set detected_at = '2020-01-01T00:00:00.000000Z', "
                     "checked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-10 minutes')")
    conn.close()
    run("run")
    assert reads() == before + 1  # not due
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    with conn:
        conn.execute("update ledger set checked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-61 minutes')")
    conn.close()
    run("run")
    assert reads() == before + 2  # checked an hour ago: due again


def list_history(attio, monkeypatch, record_id: str, current_first: bool) -> None:
    """Attio answers this deal's history with the current value first (or last) among values of equal time."""
    answer = attio.dispatch

    def dispatch(request):  # type: ignore[no-untyped-def]
        reply = answer(request)
        if f"/records/{record_id}/attributes/" in request.path and reply.status == 200:
            body = json.loads(reply.body)
            body["data"].sort(key=lambda v: (v["active_until"] is None) != current_first)  # stable
            reply.body = json.dumps(body).encode()
        return reply

    monkeypatch.setattr(attio, "dispatch", dispatch)


@pytest.mark.parametrize("listed", ["current first", "current last"])
def test_stage_values_with_the_same_active_from_give_the_right_transitions_and_snapshot(
        attio, workspace, usermaven, run, monkeypatch, listed):
    """Created in Lead and moved to Qualified in the same instant; Attio may list the two values in either
    order. The events say Lead → Qualified, and the snapshot holds Qualified, so later polls inside the
    overlap do not read the deal again."""
    run("run")
    at = NOW + MINUTE
    add_deal(workspace, uid("tie"), "Tie", [("Lead", at), ("Qualified", at + timedelta(microseconds=1))],
             people=[uid("p1")])
    # The sandbox refuses two writes at one instant; Attio does not: make the second one share the first's time.
    deal = workspace.deal(uid("tie"))
    before = workspace.deals._stage_key(deal)
    lead, qualified = deal.values["stage"]
    qualified.active_from = lead.active_until = at
    workspace.deals.reindex_stage(deal, before)
    list_history(attio, monkeypatch, uid("tie"), current_first=listed == "current first")
    workspace.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 0
    # (both carry the same time; Usermaven orders by it, so the order they are sent in does not matter)
    pairs = {(e["event_attributes"]["previous_stage"], e["event_attributes"]["deal_stage"]) for e in usermaven.events}
    assert pairs == {(None, "Lead"), ("Lead", "Qualified")} and len(usermaven.events) == 2
    workspace.clock = NOW + 3 * MINUTE
    assert run("run")[0] == 0
    assert attio.history_reads[uid("tie")] == 1
    assert len(usermaven.events) == 2
