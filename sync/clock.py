"""Whose clock a checkpoint follows: Attio's (the `Date` header of its answers), checked against this machine's.

A checkpoint set too late loses every change made before it, so Attio's clock is trusted only up to this
machine's clock plus CLOCK_TOLERANCE; each poll also re-reads SYNC_OVERLAP_SECONDS (at least
MIN_OVERLAP_SECONDS, more than the tolerance) before its checkpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

CLOCK_TOLERANCE = timedelta(seconds=30)
MIN_OVERLAP_SECONDS = 60


def local_now() -> datetime:
    """This machine's clock, in UTC (the one place the sync reads it for checkpoints)."""
    return datetime.now(UTC)


def http_date(text: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware UTC datetime; None when it is missing or unreadable."""
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP dates are GMT; "-0000" (zone unknown) parses naive.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def checked(attio_time: datetime, local_time: datetime, tolerance: timedelta = CLOCK_TOLERANCE) -> datetime:
    """Attio's time, but never later than this machine's plus `tolerance`."""
    return min(attio_time, local_time + tolerance)


def disagreement(attio_time: datetime, local_time: datetime, tolerance: timedelta = CLOCK_TOLERANCE) -> str | None:
    """A warning when the two clocks differ by more than `tolerance`, saying which clock the checkpoint follows."""
    skew = attio_time - local_time
    if abs(skew) <= tolerance:
        return None
    seconds = abs(skew.total_seconds())
    amount = f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"
    if skew > timedelta(0):
        return (f"Attio's clock (Date: {attio_time:%Y-%m-%d %H:%M:%S} UTC) is {amount} ahead of this machine's; "
                f"the checkpoint follows this machine's clock plus {tolerance.total_seconds():.0f} s. "
                "Check this machine's time (NTP) or what sits between it and Attio")
    return (f"Attio's clock (Date: {attio_time:%Y-%m-%d %H:%M:%S} UTC) is {amount} behind this machine's; "
            "the checkpoint follows Attio's clock (nothing is missed). Check this machine's time (NTP)")


def answer_time(attio_time: datetime | None, local_time: datetime) -> tuple[datetime | None, str | None]:
    """The moment an Attio answer stands for, for a checkpoint, and a warning when the clocks disagree.

    None when the answer had no readable `Date`: the caller falls back to what it read of Attio's data."""
    if attio_time is None:
        return None, None
    return checked(attio_time, local_time), disagreement(attio_time, local_time)
