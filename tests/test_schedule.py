"""`schedule` stops on SIGINT or SIGTERM: a poll in progress finishes first. The signal handler only records the
signal (the main thread acts on it), so a signal can land anywhere, a held lock included, without a deadlock."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from sync import scheduler


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A schedule that does not stop fails its test after 60 s instead of hanging the run: SIGALRM's handler
    raises in the main thread, even out of a lock it waits for."""

    def timed_out(signum: int, frame: object) -> None:
        raise TimeoutError("the schedule did not stop within 60 s")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_signal_mid_poll_lets_the_poll_finish_and_exits_130():
    polls: list[str] = []

    def poll() -> int:
        polls.append("started")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this poll runs (on the scheduler's thread)
        time.sleep(0.5)
        polls.append("finished")
        return 0

    began = time.monotonic()
    assert scheduler.run_every(3600, poll) == 130
    assert polls == ["started", "finished"]
    assert time.monotonic() - began < 10
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back


def test_the_handler_only_records_the_signal_and_the_main_thread_stops_the_schedule():
    """Python runs the handler in the main thread between any two of its steps, a held lock's included: a handler
    that logged or stopped the scheduler (which takes locks) could wait forever for a lock its own thread holds.
    Everything the handler calls is listed here: appending to a list, and nothing else. The schedule, idle, still
    stops (SIGTERM: exit 0)."""
    called: list[str] = []

    def poll() -> int:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)

        def profile(frame, event, arg):  # type: ignore[no-untyped-def]
            if event == "c_call":
                called.append(arg.__qualname__)
            elif event == "call":
                called.append(frame.f_code.co_qualname)

        sys.setprofile(profile)
        try:
            handler(signal.SIGTERM, None)
        finally:
            sys.setprofile(None)
        return 0

    assert scheduler.run_every(3600, poll) == 0
    assert [name for name in called if name != "setprofile"] == ["run_every.<locals>.stop", "list.append"]


def test_a_signal_before_a_poll_starts_stops_the_schedule_without_it(monkeypatch):
    """A poll APScheduler has handed to its thread but that has not started yet does not start once a signal is
    in: the schedule says no poll is in progress, and none runs."""
    polls: list[str] = []
    start = scheduler.BackgroundScheduler.start

    def signalled_first(self: scheduler.BackgroundScheduler, *args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this thread before the first poll is handed over
        start(self, *args, **kwargs)

    monkeypatch.setattr(scheduler.BackgroundScheduler, "start", signalled_first)
    assert scheduler.run_every(3600, lambda: polls.append("poll") or 0) == 0
    time.sleep(0.5)  # a poll started late would show here
    assert polls == []


def test_a_failure_while_waiting_stops_the_scheduler_and_gives_the_handlers_back(monkeypatch):
    """Should the main thread's loop fail between the scheduler's start and a signal, nothing is left polling in
    the background and the signal handlers are the caller's again; the error goes on up."""
    started: list[scheduler.BackgroundScheduler] = []
    start = scheduler.BackgroundScheduler.start

    def recorded(self: scheduler.BackgroundScheduler, *args: object, **kwargs: object) -> None:
        started.append(self)
        start(self, *args, **kwargs)

    def failing_sleep(seconds: float) -> None:
        raise RuntimeError("the main thread's loop failed")

    monkeypatch.setattr(scheduler.BackgroundScheduler, "start", recorded)
    monkeypatch.setattr(scheduler.time, "sleep", failing_sleep)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="loop failed"):
        scheduler.run_every(3600, lambda: 0)
    assert len(started) == 1 and not started[0].running
    # The poll that started with the scheduler ends on its own (the scheduler was shut down without waiting for
    # it): wait for its thread, so that it does not log after this test.
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
        assert not thread.is_alive(), f"{thread.name} still runs"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
