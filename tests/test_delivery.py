"""Sending to Usermaven: batches, failures, retries on the next run, refused tokens, rejected events."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import pytest

from sync import commands, delivery
from sync.errors import UsermavenUnavailable
from sync.sandbox import Faults, UsermavenCollector
from sync.sandbox.server import Reply, json_reply
from sync.usermaven import UsermavenClient
from tests.conftest import NOW, SECRETS, USERMAVEN_BASE, add_deal, add_leads, ledger_rows, resends_due, uid

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


def test_usermaven_500_then_success_on_a_later_run(workspace, usermaven, run, env, monkeypatch):
    run("run")
    _moves(workspace, 3)
    usermaven.answers = [(500, {"message": "internal error", "error": ""})]
    code, out, err = run("run")
    assert code == 1
    # a 500 may come after Usermaven stored the batch: it is not POSTed again in this run
    assert usermaven.requests == 1
    assert "Usermaven answered 500: internal error" in err
    assert "3 event(s) stay pending" in err
    rows = ledger_rows(env)
    assert [(r["state"], r["attempts"], r["unconfirmed"]) for r in rows] == [("pending", 1, 1)] * 3
    assert rows[0]["last_error"] == "Usermaven answered 500: internal error"
    assert usermaven.batches == []
    # Nor in the next minute: the run after sends nothing, says why, and exits 0 (it met no failure itself)
    code, out, err = run("run")
    assert code == 0 and usermaven.requests == 1
    assert "3 event(s) wait to be sent again after a send that may have reached Usermaven" in err
    code, out, err = run("status")
    assert "pending:   3 — last attempt: Usermaven answered 500: internal error; sent again from 20" in out
    # a low disk changes nothing while events only wait (found by a review: it made this exit 1)
    with monkeypatch.context() as patched:
        patched.setattr(commands.shutil, "disk_usage", lambda path: SimpleNamespace(free=65536))
        code, out, err = run("run")
    assert code == 0 and "64 KB free" in err and usermaven.requests == 1
    resends_due(env["SYNC_STATE_DB"])
    code, out, err = run("status")
    assert "pending:   3 — last attempt: Usermaven answered 500: internal error\n" in out  # due: no time shown
    code, out, err = run("run")
    assert code == 0
    assert [len(batch) for batch in usermaven.batches] == [3] and usermaven.requests == 2
    assert {(r["state"], r["retry_at"]) for r in ledger_rows(env)} == {("sent", None)}


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


# ---- a batch that may have reached Usermaven is not sent again in the same run ----


def test_a_batch_answered_too_late_is_not_posted_again_in_the_run(attio, usermaven, run, env):
    """Usermaven stored the first batch but its answer came after the timeout: the backfill goes on
    recording and sending the others, and a later run resends that batch once."""
    add_leads(attio.workspace, "t", 120, days_back=200)
    usermaven.fail_next(1, kind="timeout")  # takes the batch, answers too late
    code, out, err = run("run", "--backfill", "--since", "2025-01-01")
    assert code == 1 and "Usermaven did not answer in time, or the connection broke" in err
    assert "70 event(s) sent" in err and "50 event(s) stay pending" in err
    assert usermaven.requests == 3  # raw POSTs: the first batch not again in this run
    first = [e["event_id"] for e in usermaven.batches[0]]
    assert len(first) == 50 and len(set(first)) == 50
    assert run("run")[0] == 0 and usermaven.requests == 3  # nor in the next minute
    resends_due(env["SYNC_STATE_DB"])
    assert run("run")[0] == 0
    delivered = Counter(e["event_id"] for e in usermaven.events)  # raw deliveries per id
    assert len(delivered) == 120
    assert {delivered[i] for i in first} == {2}  # once per run that saw the timeout, and no more
    assert {n for i, n in delivered.items() if i not in first} == {1}
    assert {r["state"] for r in ledger_rows(env)} == {"sent"}


def test_what_may_have_arrived_is_not_sent_again_in_the_same_run_however_long_it_lasts(attio, usermaven, run, env,
                                                                                      monkeypatch):
    """Found by a review: a backfill that ran longer than the wait sent the batch that timed out again at its end.
    Due is reckoned from the run's start, so nothing that failed in a run is due again in it (here the wait is
    none at all)."""
    monkeypatch.setattr(delivery, "RESEND_AFTER", timedelta(0))
    add_leads(attio.workspace, "w", 120, days_back=200)
    usermaven.fail_next(1, kind="timeout")  # takes the first batch, answers too late
    code, out, err = run("run", "--backfill", "--since", "2025-01-01")
    assert code == 1 and "50 event(s) stay pending" in err
    delivered = Counter(e["event_id"] for e in usermaven.events)  # raw deliveries per id
    assert len(delivered) == 120 and set(delivered.values()) == {1}
    assert run("run")[0] == 0
    delivered = Counter(e["event_id"] for e in usermaven.events)
    assert sorted(Counter(delivered.values()).items()) == [(1, 70), (2, 50)]  # the 50 once more, in a later run


def test_a_short_503_retried_with_success_exits_0(attio, usermaven, run, env):
    """The backfill's first batch met 503s past the retries; the run sent everything at its end."""
    add_leads(attio.workspace, "s", 60, days_back=100)
    usermaven.answers = [(503, {"message": "busy", "error": ""})] * 5  # a whole retry budget
    code, out, err = run("run", "--backfill", "--since", "2025-01-01")
    assert code == 0, err
    assert "stay pending" not in err and "retried, and every event was delivered" in err
    delivered = Counter(e["event_id"] for e in usermaven.events)
    assert len(delivered) == 60 and set(delivered.values()) == {1}
    assert {r["state"] for r in ledger_rows(env)} == {"sent"}


def test_a_redirect_is_an_error_never_followed(workspace, usermaven, run, env, monkeypatch):
    run("run")
    _moves(workspace, 2)
    seen: list[tuple[str, str]] = []

    def dispatch(request):  # type: ignore[no-untyped-def]
        seen.append((request.method, request.path))
        if request.path == "/api/v1/s2s/event":
            token = SECRETS["USERMAVEN_API_KEY"]
            return Reply(301, headers={"Location": f"{USERMAVEN_BASE}/moved?token={token}"})
        return json_reply(200, {"status": "ok"})  # what a followed redirect would be told

    monkeypatch.setattr(usermaven, "dispatch", dispatch)
    code, out, err = run("run")
    assert code == 1
    assert f"Usermaven answered 301, a redirect to {USERMAVEN_BASE}/moved" in err
    assert "check USERMAVEN_EVENTS_URL" in err and "2 event(s) stay pending" in err
    assert seen == [("POST", "/api/v1/s2s/event")]  # not followed
    assert {r["state"] for r in ledger_rows(env)} == {"pending"}
    for secret in SECRETS.values():
        assert secret not in out + err


@pytest.fixture
def collector():
    """The sandbox's Usermaven on loopback: real HTTP, so urllib3's retries are what is tested."""
    with UsermavenCollector() as server:
        server.faults = Faults(timeout_seconds=2)
        yield server


def _client(server: UsermavenCollector) -> UsermavenClient:
    return UsermavenClient(server.events_url or "", server.api_key, server.server_token, timeout=1)


EVENT = {"event_type": "Deal Stage Changed", "event_id": "e-1", "api_key": "sandbox-um-key"}


def test_a_read_timeout_is_not_retried(collector):
    collector.fail_next(1, kind="timeout")  # stores the batch, answers after 2 s
    with pytest.raises(UsermavenUnavailable) as raised:
        _client(collector).send([EVENT])
    assert raised.value.maybe_received
    assert collector.requests == 1 and len(collector.events) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_answers_that_say_nothing_was_taken_are_retried(collector, status):
    collector.fail_next(2, status=status)
    _client(collector).send([EVENT])
    assert collector.requests == 3 and len(collector.events) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_answers_after_which_the_batch_may_be_stored_are_not_retried(collector, status):
    collector.fail_next(1, status=status)
    with pytest.raises(UsermavenUnavailable) as raised:
        _client(collector).send([EVENT])
    assert raised.value.maybe_received and collector.requests == 1


def test_a_refused_connection_is_retried_and_says_nothing_was_received(collector):
    url = collector.events_url or ""
    collector.stop()
    client = UsermavenClient(url, collector.api_key, collector.server_token, timeout=1)
    with pytest.raises(UsermavenUnavailable) as raised:
        client.send([EVENT])
    assert not raised.value.maybe_received and "could not be reached" in str(raised.value)
    assert client.stats.retries == 4


@pytest.mark.parametrize("status", [404, 405])
def test_an_events_url_with_no_endpoint_stops_delivery_and_says_which_setting(workspace, usermaven, run, env,
                                                                               status):
    """No endpoint at the URL is a setting to fix, not an outage to wait out: nothing is marked, and the message
    names the setting."""
    run("run")
    _moves(workspace, 2)
    usermaven.answers = [(status, {"message": "not found", "error": ""})]
    code, out, err = run("run")
    assert code == 1
    assert f"Usermaven answered {status}: not found — check USERMAVEN_EVENTS_URL" in err
    assert usermaven.requests == 1 and {r["state"] for r in ledger_rows(env)} == {"pending"}


def test_an_answer_echoing_a_secret_is_masked_before_it_is_cut(collector):
    """A long error page that echoes the request: the cut at 200 characters may fall inside the token; the
    secret is masked first, so no piece of it is kept."""
    token = f"{collector.api_key}.{collector.server_token}"
    for start in range(150, 201):
        page = "x" * start + f"POST /api/v1/s2s/event?token={token} HTTP/1.1" + "y" * 300
        collector.answers = [(502, page)]
        with pytest.raises(UsermavenUnavailable) as raised:
            _client(collector).send([EVENT])
        message = str(raised.value)
        assert not any(secret[:6] in message for secret in (collector.api_key, collector.server_token)), message


def test_a_secret_written_with_json_escapes_in_an_answer_is_masked_once_decoded(collector, monkeypatch):
    """A JSON answer may write the echoed key with escapes (here its first letter as a \\u escape), which the
    mask of the raw text does not match; the decoded message is masked again (found by a review)."""
    key = collector.api_key
    escaped = f"\\u{ord(key[0]):04x}{key[1:]}"
    body = ('{"message": "bad token ' + escaped + '"}').encode()
    monkeypatch.setattr(collector, "dispatch", lambda request: Reply(502, body))
    with pytest.raises(UsermavenUnavailable) as raised:
        _client(collector).send([EVENT])
    message = str(raised.value)
    assert "bad token ***" in message and key not in message and key[1:] not in message, message


# ---- an event Usermaven keeps failing on: it holds back no other, and its resends are bounded ----


def _failing_on(usermaven, monkeypatch, bad: set[str], status: int = 500) -> Counter[str]:
    """Usermaven answers `status` to every request holding an event of a deal in `bad` (every request if `bad` is
    empty); returns the raw sends of each event id, answered or not (and under the key "requests", the POSTs)."""
    posts: Counter[str] = Counter()
    answer = usermaven.dispatch

    def dispatch(request):  # type: ignore[no-untyped-def]
        if request.path == "/api/v1/s2s/event":
            events = json.loads(request.body)
            posts["requests"] += 1
            posts.update(e["event_id"] for e in events)
            if not bad or any(e["event_attributes"]["deal_id"] in bad for e in events):
                return json_reply(status, {"message": "internal error", "error": ""})
        return answer(request)

    monkeypatch.setattr(usermaven, "dispatch", dispatch)
    return posts


def test_an_event_usermaven_always_fails_on_is_isolated_and_sent_a_bounded_number_of_times(workspace, usermaven,
                                                                                             run, env, monkeypatch):
    """Usermaven takes the other events of each run and fails on this one: it is soon sent alone, holds back no
    other, and after 12 sends is marked failed and never sent again."""
    run("run")
    _moves(workspace, 10)
    bad = uid("new4")
    posts = _failing_on(usermaven, monkeypatch, {bad})
    for n in range(30):
        # each run has a new move of its own, which Usermaven takes: the failing event is the problem
        add_deal(workspace, uid(f"later{n}"), f"Later {n}", [("Lead", workspace.clock + MINUTE)], people=[uid("p1")])
        workspace.clock += 2 * MINUTE
        run("run")
        resends_due(env["SYNC_STATE_DB"])
        if any(r["state"] == "failed" for r in ledger_rows(env)):
            break
    rows = {r["event_id"]: r for r in ledger_rows(env)}
    [poison] = [i for i, r in rows.items() if r["record_id"] == bad]
    assert (rows[poison]["state"], rows[poison]["unconfirmed"]) == ("failed", 12)
    assert "sent 12 times, each time it may have arrived: not sent again" in rows[poison]["last_error"]
    assert posts[poison] == delivery.MAX_UNCONFIRMED == 12
    assert run("run")[0] == 0 and posts[poison] == 12  # never again; `status` and a daily warning say it failed
    others = [i for i in rows if i != poison]
    assert {rows[i]["state"] for i in others} == {"sent"} and len(others) >= 10
    delivered = Counter(e["event_id"] for e in usermaven.events)
    assert {delivered[i] for i in others} == {1} and poison not in delivered
    # the others were sent with it in halving batches until it was alone: five resends at most
    assert max(posts[i] for i in others) <= 1 + 5


def test_in_an_outage_events_wait_and_are_given_up_only_after_about_four_days(workspace, usermaven, run, env,
                                                                             monkeypatch):
    """Usermaven answers 502 to everything: the events wait, each run tries at most two sends (then stops), and only
    after 24 sends of an event (about four days of waits) is it marked failed."""
    run("run")
    _moves(workspace, 3)
    posts = _failing_on(usermaven, monkeypatch, set(), status=502)
    sends_per_run = []
    for _ in range(40):
        before = posts["requests"]
        assert run("run")[0] == 1
        sends_per_run.append(posts["requests"] - before)
        resends_due(env["SYNC_STATE_DB"])
        if all(r["state"] == "failed" for r in ledger_rows(env)):
            break
    rows = ledger_rows(env)
    assert {(r["state"], r["unconfirmed"]) for r in rows} == {("failed", 24)}
    assert {posts[r["event_id"]] for r in rows} == {delivery.GIVE_UP_AFTER} == {24}
    assert max(sends_per_run) <= 2  # stopped after two failures in a row
    assert [delivery.resend_at(n, NOW)[:16] for n in (1, 2, 9, 10, 23)] == [
        "2026-03-01T12:01", "2026-03-01T12:02", "2026-03-01T16:16", "2026-03-01T18:00", "2026-03-01T18:00"]


def test_events_sent_before_a_stop_in_a_split_batch_are_counted(workspace, usermaven, run, env):
    run("run")
    _moves(workspace, 3)
    usermaven.answers = [(400, {"message": "bad event", "error": ""}), None,
                         (500, {"message": "internal error", "error": ""})]
    code, out, err = run("run")
    assert code == 1
    assert [r["state"] for r in ledger_rows(env)] == ["sent", "pending", "pending"]
    assert len(usermaven.events) == 1
    assert ", 1 event(s) sent," in err
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    assert conn.execute("select sent from runs order by rowid desc limit 1").fetchone() == (1,)
    conn.close()


def _set_unconfirmed(env, event_ids: list[str], sends: int) -> None:
    """These events were sent `sends` times before without a confirmation, and are due again."""
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    with conn:
        conn.executemany("update ledger set unconfirmed = ?, retry_at = '2000-01-01T00:00:00.000000Z' "
                         "where event_id = ?", [(sends, i) for i in event_ids])
    conn.close()


def test_events_sent_before_go_after_every_other_event_of_the_run(attio, usermaven, run, env, monkeypatch):
    """Found by a review: they went first within each chunk of 500 rows, so two of them failing stopped the run
    before the newer events of later chunks."""
    add_leads(attio.workspace, "o", 520, days_back=200)
    usermaven.answers = [(503, {"message": "busy", "error": ""})] * 200
    run("run", "--backfill", "--since", "2025-01-01")
    usermaven.answers = []
    rows = ledger_rows(env)
    assert len(rows) > 500 and {r["state"] for r in rows} == {"pending"}  # more than one chunk
    oldest = [r["event_id"] for r in rows[:2]]
    _set_unconfirmed(env, oldest, 5)
    posts = _failing_on(usermaven, monkeypatch, {r["record_id"] for r in rows[:2]})
    code, out, err = run("run")
    assert code == 1
    states = Counter(r["state"] for r in ledger_rows(env))
    assert states == {"sent": len(rows) - 2, "pending": 2}  # both failed, after every other event was sent
    assert [posts[i] for i in oldest] == [1, 1]


def test_after_a_backfill_send_that_may_have_arrived_two_failures_in_a_row_stop_it(attio, usermaven, run, env,
                                                                                   monkeypatch):
    """Found by a review: the run's last delivery counted its failures from zero after the backfill's sender had
    failed, so an outage cost three sends, not two."""
    add_leads(attio.workspace, "t", 200, days_back=200)  # the sender's batch, then three more for the last delivery
    posts = _failing_on(usermaven, monkeypatch, set())
    code, out, err = run("run", "--backfill", "--since", "2025-01-01")
    assert code == 1 and posts["requests"] == 2


def test_the_backfills_own_sends_count_as_usermaven_taking_others(attio, usermaven, run, env, monkeypatch):
    """An event Usermaven keeps failing on, while the backfill's sender delivers every other event of the run:
    given up at 12 sends, not 24. Found by a review."""
    add_leads(attio.workspace, "x", 1, days_back=300)
    usermaven.answers = [(503, {"message": "busy", "error": ""})] * 20
    run("run", "--backfill", "--since", "2024-01-01")
    usermaven.answers = []
    [bad] = ledger_rows(env)
    _set_unconfirmed(env, [bad["event_id"]], 11)
    add_leads(attio.workspace, "k", 100, days_back=100)  # two full batches: the sender sends them all
    posts = _failing_on(usermaven, monkeypatch, {bad["record_id"]})
    run("run", "--backfill", "--since", "2025-01-01")
    rows = {r["event_id"]: r for r in ledger_rows(env)}
    assert (rows[bad["event_id"]]["state"], rows[bad["event_id"]]["unconfirmed"]) == ("failed", 12)
    assert posts[bad["event_id"]] == 1 and posts["requests"] == 3
    assert len(usermaven.events) == 100 and {r["state"] for i, r in rows.items() if i != bad["event_id"]} == {"sent"}
