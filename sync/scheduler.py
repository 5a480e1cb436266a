"""`schedule`: the poll in a loop of its own (APScheduler), for hosts without cron or a systemd timer."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sync.errors import UsageError

log = logging.getLogger(__name__)


def run_every(seconds: int, job: Callable[[], int]) -> int:
    """Run `job` now and then every `seconds`, one at a time (a late run is merged, never doubled), until
    SIGINT or SIGTERM. Each run takes the state lock itself, so cron and this loop cannot overlap either."""
    if seconds < 10:
        raise UsageError("--every must be at least 10 seconds")
    scheduler = BlockingScheduler(timezone="UTC")
    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # its job-start lines, every tick

    def tick() -> None:
        code = job()
        if code:
            log.warning("this poll ended with exit code %d; the next one runs in %d s", code, seconds)

    scheduler.add_job(tick, IntervalTrigger(seconds=seconds), id="poll", max_instances=1, coalesce=True,
                      misfire_grace_time=seconds, next_run_time=datetime.now(UTC))

    def stop(signum: int, frame: object) -> None:
        log.info("stopping the schedule (signal %d)", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("polling every %d s; SIGTERM or Ctrl-C stops", seconds)
    scheduler.start()
    return 0
