"""`run --backfill --since`: history in range, original timestamps, nothing twice, resumable."""

from __future__ import annotations

import shlex
from datetime import timedelta
from pathlib import Path

import pytest

from sync import backfill as backfill_module
from sync.models import epoch_ms
from tests.conftest import NOW, add_deal, add_leads, days, ledger_rows, uid

MINUTE = timedelta(minutes=1)


@pytest.fixture
def history(workspace):
    """d1: Lead (700 days ago) → Qualified (600); d2: Lead (400); d3: Lead (10); plus d5 with four moves."""
    add_deal(workspace, uid("d5"), "Epsilon", [
        ("Lead", NOW - days(300)), ("Qualified", NOW - days(200)), ("Demo", NOW - days(100)),
        ("Won 🎉", NOW - days(50))], people=[uid("p2")])
    return workspace


def by_text(items: list[tuple]) -> list[tuple]:
    return sorted(items, key=lambda item: tuple(str(part) for part in item))


def sent_pairs(usermaven) -> list[tuple]:
    return by_text([(e["event_attributes"]["deal_id"], e["event_attributes"]["previous_stage"],
                     e["event_attributes"]["deal_stage"]) for e in usermaven.events])


def test_backfill_sends_exactly_the_transitions_in_range_with_original_timestamps(history, usermaven, run):
    since = (NOW - days(350)).strftime("%Y-%m-%d")
    code, out, err = run("run", "--backfill", "--since", since)
    assert code == 0
    assert sent_pairs(usermaven) == by_text([
        (uid("d5"), None, "Lead"), (uid("d5"), "Lead", "Qualified"), (uid("d5"), "Qualified", "Demo"),
        (uid("d5"), "Demo", "Won 🎉")])
    stamps = {e["event_attributes"]["deal_stage"]: e["_timestamp"] for e in usermaven.events
              if e["event_attributes"]["deal_id"] == uid("d5")}
    assert stamps["Won 🎉"] == epoch_ms(NOW - days(50))
    assert stamps["Lead"] == epoch_ms(NOW - days(300))
    # d3 has no person: recorded as held, not sent
    assert "5 new transition(s), 4 event(s) sent, 1 held" in err


def test_until_bounds_the_range(history, usermaven, run):
    since, until = (NOW - days(250)).isoformat(), (NOW - days(100)).isoformat()
    assert run("run", "--backfill", "--since", since, "--until", until)[0] == 0
    # [since, until): the move exactly at `until` is outside
    assert sent_pairs(usermaven) == [(uid("d5"), "Lead", "Qualified")]


def test_second_backfill_over_the_same_range_sends_nothing(history, usermaven, run):
    run("run", "--backfill", "--since", "2024-01-01")
    first = len(usermaven.events)
    code, out, err = run("run", "--backfill", "--since", "2024-01-01")
    assert code == 0
    assert len(usermaven.events) == first
    assert "0 new transition(s)" in err


def test_overlapping_backfill_sends_only_what_is_new(history, usermaven, run):
    run("run", "--backfill", "--since", (NOW - days(150)).isoformat())
    assert len(usermaven.events) == 2  # Qualified→Demo, Demo→Won (d3 held)
    run("run", "--backfill", "--since", (NOW - days(250)).isoformat())
    assert sent_pairs(usermaven) == by_text([
        (uid("d5"), "Qualified", "Demo"), (uid("d5"), "Demo", "Won 🎉"), (uid("d5"), "Lead", "Qualified")])
    ids = [e["event_id"] for e in usermaven.events]  # as received: a resend would show twice
    assert len(ids) == len(set(ids)) == 3


def test_backfill_after_polls_never_resends_what_a_poll_sent(history, usermaven, run):
    run("run")  # baseline
    history.move_deal(uid("d5"), "Lost", NOW + MINUTE)
    history.clock = NOW + 2 * MINUTE
    run("run")
    [polled] = usermaven.events
    run("run", "--backfill", "--since", "2020-01-01")
    ids = [e["event_id"] for e in usermaven.events]
    assert ids.count(polled["event_id"]) == 1
    assert len(ids) == len(set(ids)) == 8  # d1: 2, d2: 1, d5: 5 (d3 held)


def test_backfill_on_empty_state_records_baseline_so_the_next_run_continues(history, usermaven, run, env):
    history.clock = NOW  # Attio's clock when the backfill starts
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    sent = len(usermaven.events)
    # the next plain run is a poll from the moment the backfill began, not a new baseline
    # (a move during the backfill's scan: test_move_during_an_empty_state_backfill_...)
    history.move_deal(uid("d1"), "Won 🎉", NOW + 20 * 1000 * timedelta(microseconds=1))
    history.clock = NOW + 30 * MINUTE
    code, out, err = run("run")
    assert code == 0 and "baseline" not in err
    assert len(usermaven.events) == sent + 1
    assert usermaven.events[-1]["event_attributes"]["deal_stage"] == "Won 🎉"


def test_interrupted_backfill_resumes_without_rereading_finished_deals(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(backfill_module, "BATCH", 3)
    attio.workspace.add_person("jane@acme.com", record_id=uid("p1"))
    for n in range(10):
        add_deal(attio.workspace, uid(f"b{n}"), f"B{n}", [
            ("Lead", NOW - days(100 - n)), ("Qualified", NOW - days(90 - n))], people=[uid("p1")])
    # the 8th deal's history cannot be read on the first attempt: the backfill does the others, not finished
    attio.fail_history(uid("b7"))
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1
    assert "Simulated refusal" in err
    assert len(usermaven.events) == 18  # the other nine deals were committed and sent...
    reads_before = dict(attio.history_reads)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0
    assert "resuming" in err
    # ...and are not read again
    for n in set(range(10)) - {7}:
        assert attio.history_reads[uid(f"b{n}")] == reads_before[uid(f"b{n}")] == 1
    assert attio.history_reads[uid("b7")] == 2
    ids = [e["event_id"] for e in usermaven.events]
    assert len(ids) == len(set(ids)) == 20
    assert {r["state"] for r in ledger_rows(env)} == {"sent"}


def test_backfill_dry_run_prints_each_event_once_and_changes_nothing(history, usermaven, run, env):
    code, out, err = run("run", "--backfill", "--since", "2020-01-01", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(set(lines)) == 7  # d1: 2, d2: 1, d5: 4; d3 is held (no person)
    assert usermaven.batches == []
    import os

    assert not os.path.exists(env["SYNC_STATE_DB"])


def test_backfill_goes_on_recording_when_usermaven_is_down(history, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(backfill_module, "BATCH", 1)
    monkeypatch.setattr("sync.commands.BATCH_EVENTS", 2)
    usermaven.answers = [(503, {"message": "down", "error": ""})] * 50
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1
    assert "stay pending" in err
    rows = ledger_rows(env)
    assert len(rows) == 8 and {r["state"] for r in rows} == {"pending", "held"}
    usermaven.answers = []
    assert run("run")[0] == 0
    assert len(usermaven.events) == 7


def test_unfinished_backfill_is_named_by_run_and_status(attio, usermaven, run, env):
    add_leads(attio.workspace, "u", 3, days_back=10)
    attio.fail_history(uid("u1"))
    assert run("run", "--backfill", "--since", "2025-06-01")[0] == 1
    code, out, err = run("run")
    assert "did not finish" in err
    resume = (f"attio-usermaven-sync run --backfill --since 2025-06-01T00:00:00.000000Z "
              f"--state {Path(env['SYNC_STATE_DB']).absolute()}")
    assert f"resume it with: {resume}" in err
    assert "did not finish" not in run("run")[2]  # a standing condition: once a day or when it changes
    code, out, err = run("status")
    assert "unfinished backfill since 2025-06-01T00:00:00.000000Z" in out and resume in out
    assert run(*shlex.split(resume)[1:])[0] == 0  # as printed
    assert "unfinished backfill since" not in run("status")[1]
    assert len(usermaven.events) == 3


def test_changes_after_a_killed_backfill_began_are_caught_by_polls(attio, usermaven, run, env, monkeypatch):
    """The checkpoint is set when an empty-state backfill starts, so a poll run before it is resumed
    misses nothing, not even a change to a deal the backfill had already finished."""
    monkeypatch.setattr(backfill_module, "BATCH", 1)
    add_leads(attio.workspace, "k", 4, days_back=10)
    attio.fail_history(uid("k2"))
    assert run("run", "--backfill", "--since", "2025-06-01")[0] == 1
    assert len(usermaven.events) == 3  # k0, k1, k3 finished; k2 to read again
    attio.workspace.move_deal(uid("k0"), "Won 🎉", NOW + MINUTE)  # a finished deal moves
    add_deal(attio.workspace, uid("k9"), "K9", [("Lead", NOW + MINUTE)], people=[uid("p1")])
    attio.workspace.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 0
    polled = usermaven.events[3:]
    assert by_text([(e["event_attributes"]["deal_id"], e["event_attributes"]["previous_stage"],
                     e["event_attributes"]["deal_stage"]) for e in polled]) == by_text(
        [(uid("k0"), "Lead", "Won 🎉"), (uid("k9"), None, "Lead")])
    assert run("run", "--backfill", "--since", "2025-06-01")[0] == 0
    ids = [e["event_id"] for e in usermaven.events]
    assert len(ids) == len(set(ids)) == 6  # k0 ×2, k1, k2, k3, k9


def test_progress_bar_on_a_terminal_only_and_not_with_quiet(history, usermaven, run, monkeypatch):
    import sys

    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0 and "deal/s" not in err and "100%" not in err  # stderr is not a terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0
    assert "backfill: 100%" in err and "4/4" in err  # deals done / total
    code, out, err = run("run", "--backfill", "--since", "2020-01-01", "-q")
    assert "100%" not in err


def test_refused_usermaven_token_stops_the_backfill(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(backfill_module, "BATCH", 2)
    monkeypatch.setattr("sync.commands.BATCH_EVENTS", 2)
    monkeypatch.setattr("sync.source.READ_AHEAD_SECONDS", 32 / 50)  # a window of 32 at ATTIO_MAX_RPS=50
    monkeypatch.setenv("ATTIO_CONCURRENCY", "8")
    add_leads(attio.workspace, "r", 80, days_back=100)
    monkeypatch.setenv("USERMAVEN_SERVER_TOKEN", "st_wrong0000")
    code, out, err = run("run", "--backfill", "--since", "2025-06-01")
    assert code == 1
    assert "Usermaven answered 401" in err and "check USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN" in err
    # it stopped at the first batch instead of reading every deal (the read-ahead window is 32)
    assert sum(attio.history_reads.values()) <= 2 + 32 + 1
    rows = ledger_rows(env)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"pending"}
    code, out, err = run("status")
    assert "unfinished backfill since 2025-06-01" in out
    monkeypatch.setenv("USERMAVEN_SERVER_TOKEN", "st_token4a5b6c7d8e")
    assert run("run", "--backfill", "--since", "2025-06-01")[0] == 0
    assert len(usermaven.events) == 80


def test_move_during_an_empty_state_backfill_outside_its_range_is_sent_by_the_next_poll(history, usermaven, run):
    """The backfill began at NOW (Attio's clock); d2 moved a second later, before the backfill read it.
    `--until` leaves the move out of the backfill, so the poll must send it."""
    history.move_deal(uid("d2"), "Won 🎉", NOW + timedelta(seconds=1))
    until = (NOW - days(1)).isoformat()
    assert run("run", "--backfill", "--since", "2020-01-01", "--until", until)[0] == 0
    assert [e["event_attributes"]["deal_stage"] for e in usermaven.events
            if e["event_attributes"]["deal_id"] == uid("d2")] == ["Lead"]
    backfilled = len(usermaven.events)
    history.clock = NOW + 2 * MINUTE
    assert run("run")[0] == 0
    [moved] = usermaven.events[backfilled:]
    assert (moved["event_attributes"]["deal_id"], moved["event_attributes"]["deal_stage"]) == (uid("d2"), "Won 🎉")


def test_backfill_finishes_only_when_every_deal_was_read_though_deletions_shift_the_pages(
        attio, usermaven, run, env, monkeypatch):
    """Deals deleted between two page reads shift the offsets by more than the pages overlap: a deal is
    pushed past the boundary unseen. The backfill must still read it before it calls itself finished."""
    from sync import attio as attio_module
    from sync.attio import AttioClient

    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)  # pages overlap by 4 rows
    ids = add_leads(attio.workspace, "g", 60, days_back=100)
    query = AttioClient.query
    scans = []

    def deleting_after_the_first_page(self, path, filter=None, page_size=None, **ahead):  # type: ignore[no-untyped-def]
        scans.append(path)
        for number, page in enumerate(query(self, path, filter, page_size, **ahead)):
            yield page
            if len(scans) == 1 and number == 0:
                for record_id in ids[:6]:
                    attio.workspace.delete_deal(record_id)

    monkeypatch.setattr(AttioClient, "query", deleting_after_the_first_page)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    sent = [e["event_attributes"]["deal_id"] for e in usermaven.events]
    assert set(ids[6:]) <= set(sent)  # (a deleted deal may have been read before it went)
    assert len(sent) == len(set(sent))
    assert "unfinished backfill" not in run("status")[1]
