"""A backfill sends full batches on a thread of their own while it records the next deals (delivery.Sender):
every event is still sent once, only after it is committed, and marked sent only after Usermaven's 200."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from sync import backfill as backfill_module
from sync import commands, delivery
from sync.errors import AttioError
from sync.sandbox import AttioSandbox, UsermavenCollector
from sync.sandbox.server import Reply, Request, json_reply
from sync.usermaven import UsermavenClient
from tests.conftest import BASE, USERMAVEN_BASE, add_leads, ledger_rows, resends_due, uid


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 2 deals and of 2 events, so that a backfill of 40 deals sends 20 batches as it goes."""
    monkeypatch.setattr(backfill_module, "BATCH", 2)
    monkeypatch.setattr("sync.commands.BATCH_EVENTS", 2)


class Watch:
    """The collector, and at every request to it the events Usermaven took that the ledger (read through a
    connection of its own, as another process would) does not have as sent, and whether each was committed."""

    def __init__(self, collector: UsermavenCollector, state_path: str, delay: float = 0.02):
        self.collector, self.state_path, self.delay = collector, state_path, delay
        self.unmarked: list[int] = []
        self.uncommitted: list[str] = []

    def dispatch(self, request: Request) -> Reply:
        with sqlite3.connect(self.state_path) as db:
            rows = dict(db.execute("select event_id, state from ledger").fetchall())
        taken = [e["event_id"] for e in self.collector.events]
        self.unmarked.append(sum(rows.get(event_id) != "sent" for event_id in taken))
        self.uncommitted += [event_id for event_id in _ids(request) if event_id not in rows]
        time.sleep(self.delay)  # Usermaven far away: the backfill records on meanwhile
        return self.collector.dispatch(request)


class SlowHistory:
    """The Attio sandbox, with one deal's history read taking `delay` seconds: the backfill waits for it."""

    def __init__(self, attio: AttioSandbox, record_id: str, delay: float):
        self.attio, self.record_id, self.delay = attio, record_id, delay

    def dispatch(self, request: Request) -> Reply:
        if f"/records/{self.record_id}/attributes/" in request.path:
            time.sleep(self.delay)
        return self.attio.dispatch(request)


def _ids(request: Request) -> list[str]:
    body = request.json()
    return [e["event_id"] for e in (body if isinstance(body, list) else [body])]


def _deliveries(collector: UsermavenCollector) -> Counter[str]:
    """Every event Usermaven took, counted per delivery (a duplicate counts twice)."""
    return Counter(event["event_id"] for batch in collector.batches for event in batch)


def test_a_backfill_sends_each_event_once_after_it_is_committed(attio, usermaven, mocked, run, env, small_batches,
                                                               monkeypatch):
    monkeypatch.setattr("sync.delivery.SEND_AHEAD", 3)
    add_leads(attio.workspace, "s", 40, days_back=100)
    watch = Watch(usermaven, env["SYNC_STATE_DB"], delay=0.1)  # slower than recording: batches queue up
    mocked.serve(USERMAVEN_BASE, watch)
    # The backfill waits a second for one deal: the batches queued before it go out meanwhile, unmarked.
    mocked.serve(BASE, SlowHistory(attio, uid("s30"), 1.0))
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    deliveries = _deliveries(usermaven)
    assert sum(deliveries.values()) == 40 and set(deliveries.values()) == {1}
    assert {r["state"] for r in ledger_rows(env)} == {"sent"}
    assert len(usermaven.batches) >= 20 - 1  # sent as it went, in batches of 2 (the last may be one)
    assert watch.uncommitted == []
    # Batches taken and not yet marked sent when the next one goes out: at most SEND_AHEAD of 2 events
    assert max(watch.unmarked) <= 3 * 2


def test_batches_queued_behind_a_failure_are_not_sent(attio, usermaven, run, env, small_batches, monkeypatch):
    add_leads(attio.workspace, "q", 40, days_back=100)
    posted: list[list[str]] = []
    send = UsermavenClient.send_encoded

    def recorded(self: UsermavenClient, events: list[str]) -> None:
        posted.append([json.loads(e)["event_id"] for e in events])
        send(self, events)

    monkeypatch.setattr(UsermavenClient, "send_encoded", recorded)
    # the first batch is taken; the second may have been stored (500): the batches queued behind it are not
    # sent as they were queued; the run's last delivery sends what is pending, but not the failed batch
    usermaven.answers = [None, (500, {"message": "oops", "error": ""})]
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1 and "2 event(s) stay pending" in err
    assert usermaven.requests == 3 and len(posted) == 3
    assert not set(posted[1]) & set(posted[2])
    rows = ledger_rows(env)
    assert len(rows) == 40 and Counter(r["state"] for r in rows) == {"sent": 38, "pending": 2}
    assert {r["event_id"] for r in rows if r["state"] == "pending"} == set(posted[1])
    resends_due(env["SYNC_STATE_DB"])
    assert run("run")[0] == 0
    deliveries = _deliveries(usermaven)
    assert sum(deliveries.values()) == 40 and set(deliveries.values()) == {1}


def test_an_attio_failure_mid_backfill_leaves_nothing_both_sent_and_pending(attio, usermaven, mocked, run, env,
                                                                           small_batches):
    ids = add_leads(attio.workspace, "f", 40, days_back=100)
    mocked.serve(USERMAVEN_BASE, Watch(usermaven, env["SYNC_STATE_DB"], delay=0.2))  # batches on the wire
    for record_id in ids[20:25]:  # five in a row: Attio is down
        attio.fail_history(record_id, n=1, status=501)  # Attio down from the 21st deal on (501: not retried)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1
    rows = ledger_rows(env)
    sent = {r["event_id"] for r in rows if r["state"] == "sent"}
    deliveries = _deliveries(usermaven)
    assert set(deliveries) == sent and set(deliveries.values()) == {1}
    assert {r["state"] for r in rows} == {"sent"}  # what was recorded is all sent, by the run's last delivery
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    deliveries = _deliveries(usermaven)
    assert sum(deliveries.values()) == 40 and set(deliveries.values()) == {1}
    assert uid("f39") in {r["record_id"] for r in ledger_rows(env)}


class CtrlCTwice(Watch):
    """Ctrl-C (SIGINT) as Usermaven takes the third batch, and again as it answers it: the run is stopping then,
    and waits for that answer."""

    def __init__(self, collector: UsermavenCollector, state_path: str, closing: threading.Event):
        super().__init__(collector, state_path, delay=0.3)
        self.closing, self.requests, self.second = closing, 0, False

    def dispatch(self, request: Request) -> Reply:
        self.requests += 1
        if self.requests == 3:
            os.kill(os.getpid(), signal.SIGINT)
        reply = super().dispatch(request)
        if self.requests == 3:
            self.second = self.closing.wait(5)
            if self.second:  # never after the run (it would interrupt pytest)
                os.kill(os.getpid(), signal.SIGINT)
        return reply


def test_ctrl_c_twice_sends_no_batch_twice_in_the_run(attio, usermaven, mocked, run, env, small_batches, monkeypatch):
    """Found by a review: a second Ctrl-C while the run waited for the batches on the wire left them unmarked,
    and the run's last delivery sent them again."""
    add_leads(attio.workspace, "k", 40, days_back=100)
    closing = threading.Event()
    watch = CtrlCTwice(usermaven, env["SYNC_STATE_DB"], closing)
    mocked.serve(USERMAVEN_BASE, watch)
    close = delivery.Sender.close

    def closing_close(self: delivery.Sender) -> None:
        closing.set()
        close(self)

    monkeypatch.setattr(delivery.Sender, "close", closing_close)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 130, err
    assert watch.second  # the second Ctrl-C came while the run waited in Sender.close
    deliveries = _deliveries(usermaven)
    assert set(deliveries.values()) == {1}
    sent = {r["event_id"] for r in ledger_rows(env) if r["state"] == "sent"}
    assert set(deliveries) == sent
    # and the run's summary counts them all, those the stop settled included (a review found it short)
    assert f", {len(sent)} event(s) sent," in err


def test_a_failure_settled_as_the_sender_closes_counts_and_is_reported(attio, usermaven, mocked, run, env,
                                                                       small_batches, monkeypatch):
    """Found by a review: Attio failing mid-backfill closes the sender while a batch is on the wire; Usermaven's
    500 to it was dropped, so the run's last delivery started counting failures from zero (three sends into an
    outage, not two) and the run's message did not name it."""
    monkeypatch.setattr(delivery, "BATCH_EVENTS", 2)
    add_leads(attio.workspace, "c", 40, days_back=100)
    posts: list[int] = []

    class Failing:
        def dispatch(self, request: Request) -> Reply:
            posts.append(len(json.loads(request.body)))
            if len(posts) == 1:
                return usermaven.dispatch(request)
            time.sleep(0.2)  # on the wire when the sender closes
            return json_reply(500, {"message": "internal error", "error": ""})

    mocked.serve(USERMAVEN_BASE, Failing())
    original = commands.backfill

    def attio_fails(*args, **kwargs):  # type: ignore[no-untyped-def]
        for n, counts in enumerate(original(*args, **kwargs)):
            yield counts
            if n == 4:
                raise AttioError("Attio answered 500 (a test)")

    monkeypatch.setattr(commands, "backfill", attio_fails)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1 and "Usermaven answered 500: internal error" in err
    assert len(posts) == 3  # the one taken, the one settled while closing, one more: two failures in a row


def test_a_rejected_batch_settled_as_the_sender_stops_is_not_sent_one_by_one_then(attio, usermaven, mocked, run, env,
                                                                                  small_batches, monkeypatch):
    """Found by a review: the disk ran low, the sender closed, and a batch Usermaven had refused (400) was then
    sent again event by event, writing to the full disk. Now it stays pending."""
    add_leads(attio.workspace, "r", 40, days_back=100)
    low = False
    posts: list[tuple[bool, int]] = []

    class Refusing:
        def dispatch(self, request: Request) -> Reply:
            posts.append((low, len(json.loads(request.body))))
            if len(posts) == 2:
                time.sleep(0.3)  # on the wire when the disk runs low
                return json_reply(400, {"message": "bad event", "error": ""})
            return usermaven.dispatch(request)

    mocked.serve(USERMAVEN_BASE, Refusing())
    checks = 0

    def usage(path: object) -> SimpleNamespace:
        nonlocal checks, low
        checks += 1
        low = low or checks >= 4
        return SimpleNamespace(free=65536 if low else 10**9)

    monkeypatch.setattr(commands.shutil, "disk_usage", usage)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1 and "nothing more was sent" in err
    assert not [size for was_low, size in posts if was_low]  # nothing sent once the disk was low
    assert Counter(r["state"] for r in ledger_rows(env))["failed"] == 0
