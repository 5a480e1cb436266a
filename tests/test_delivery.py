"""Sending to Usermaven: batches, failures, retries on the next run, refused tokens, rejected events."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import NOW, add_deal, ledger_rows, uid

MINUTE = timedelta(minutes=1)


def _moves(workspace, count: int) -> None:
    """`count` transitions on new deals created after the baseline."""
    for n in range(count):
        add_deal(workspace, uid(f"new{n}"), f"New {n}", [("Lead", NOW + MINUTE + timedelta(seconds=n))],
                 people=[uid("p1")])
    workspace.clock = NOW + 10 * MINUTE


def test_events_go_in_batches_of_fifty(workspace, usermaven, run):
    run("run")
    _moves(workspace, 120)
    assert run("run")[0] == 0
    assert [len(batch) for batch in usermaven.batches] == [50, 50, 20]
    # oldest first
    stamps = [e["_timestamp"] for e in usermaven.events]
    assert stamps == sorted(stamps)


def test_usermaven_500_then_success_on_next_run(workspace, usermaven, run, env):
    run("run")
    _moves(workspace, 3)
    usermaven.answers = [(500, {"message": "internal error", "error": ""})] * 5  # every retry of this run
    code, out, err = run("run")
    assert code == 1
    assert "Usermaven answered 500: internal error" in err
    assert "3 event(s) stay pending" in err
    rows = ledger_rows(env)
    assert [(r["state"], r["attempts"]) for r in rows] == [("pending", 1)] * 3
    assert rows[0]["last_error"] == "Usermaven answered 500: internal error"
    assert usermaven.batches == []
    code, out, err = run("run")
    assert code == 0
    assert len(usermaven.events) == 3
    assert {r["state"] for r in ledger_rows(env)} == {"sent"}


def test_usermaven_500_retried_within_the_run(workspace, usermaven, run, env):
    run("run")
    _moves(workspace, 2)
    usermaven.answers = [(503, {"message": "busy", "error": ""})] * 2
    assert run("run")[0] == 0
    assert len(usermaven.events) == 2


def test_refused_token_stops_the_run_and_marks_nothing_sent(workspace, usermaven, run, env, monkeypatch):
    run("run")
    _moves(workspace, 3)
    monkeypatch.setenv("USERMAVEN_SERVER_TOKEN", "st_wrong0000")
    code, out, err = run("run")
    assert code == 1
    assert "Usermaven answered 401: The token isn't a server token or doesn't exist" in err
    assert "check USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN" in err
    assert "st_wrong0000" not in err
    assert {r["state"] for r in ledger_rows(env)} == {"pending"}
    assert usermaven.batches == []


def test_rejected_batch_is_split_and_only_the_bad_event_fails(workspace, usermaven, run, env):
    run("run")
    _moves(workspace, 3)
    # the batch of three is rejected, then the singles: first ok, second rejected, third ok
    rejected = (400, {"message": "event is over the size limit", "error": ""})
    usermaven.answers = [rejected, None, rejected, None]
    code, out, err = run("run")
    assert code == 1
    states = [r["state"] for r in ledger_rows(env)]
    assert states == ["sent", "failed", "sent"]
    failed = [r for r in ledger_rows(env) if r["state"] == "failed"][0]
    assert failed["last_error"] == "Usermaven answered 400: event is over the size limit"
    assert "1 event(s) failed" in err
    # a failed event is not retried by later runs (Usermaven would refuse it again); status shows it
    code, out, err = run("run")
    assert code == 0
    code, out, err = run("status")
    assert "event is over the size limit" in out
