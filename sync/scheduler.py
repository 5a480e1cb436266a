"""`schedule`: the poll in a loop of its own (APScheduler), for hosts without cron or a systemd timer."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sync.duration import MIN_EVERY, describe
from sync.errors import EXIT_INTERRUPTED, EXIT_OK, SyncError, UsageError

log = logging.getLogger(__name__)

# What `schedule` exits with when asked to stop: Ctrl-C is an interruption (130, as for every command);
# SIGTERM is how a service manager stops it in the ordinary way.
EXIT_ON_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_OK}
# How often the main thread looks for a signal received. The handler only records it: Python runs a handler in
# the main thread between any two of its steps, so one that took a lock (stopping the scheduler sets an Event)
# could land while the main thread holds that lock, and wait for it forever.
SIGNAL_CHECK = 0.2  # seconds


def run_every(seconds: int, job: Callable[[], int]) -> int:
    """Run `job` now and then every `seconds`, one at a time (a tick that finds a poll still running is skipped,
    and ticks missed while the process could not run are merged into one, never doubled), until
    SIGINT or SIGTERM; a poll in progress then finishes before the loop returns. Each run takes the state
    lock itself, so cron and this loop cannot overlap either. Returns the exit code for the signal."""
    if seconds < MIN_EVERY:
        raise UsageError(f"--every must be at least {MIN_EVERY} seconds")
    scheduler = BackgroundScheduler(timezone="UTC")
    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # its job-start lines, every tick
    received: list[int] = []
    polling = False
    gate = threading.Lock()  # a poll starts, or the stop sees whether one runs: never both at once

    def tick() -> None:
        nonlocal polling
        with gate:
            if received:
                return  # asked to stop before this poll started: it does not
            polling = True
        try:
            code = job()
        except SyncError as exc:  # the lock held by a cron run or a backfill, a state that cannot be opened
            log.error("%s", exc)
            code = exc.exit_code
        finally:
            with gate:
                polling = False
        poll_job = scheduler.get_job("poll") if not received else None
        upcoming = f"; next poll at {poll_job.next_run_time:%Y-%m-%d %H:%M:%S} UTC" if poll_job else ""
        log.info("poll ended with exit code %d%s", code, upcoming)

    scheduler.add_job(tick, IntervalTrigger(seconds=seconds), id="poll", max_instances=1, coalesce=True,
                      misfire_grace_time=seconds, next_run_time=datetime.now(UTC))

    def stop(signum: int, frame: object) -> None:
        received.append(signum)  # only this: see SIGNAL_CHECK

    previous = {sig: signal.signal(sig, stop) for sig in EXIT_ON_SIGNAL}
    try:
        log.info("polling every %s; SIGTERM or Ctrl-C stops", describe(seconds))
        scheduler.start()
        while not received:
            time.sleep(SIGNAL_CHECK)
        with gate:
            busy = "; the poll in progress finishes first" if polling else ""
        log.info("stopping the schedule (%s)%s", signal.Signals(received[0]).name, busy)
        scheduler.shutdown(wait=True)  # waits for the poll in progress
    finally:
        if scheduler.running:  # something failed above: start nothing more
            scheduler.shutdown(wait=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_ON_SIGNAL[signal.Signals(received[0])] if received else EXIT_OK
