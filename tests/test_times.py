"""Attio's timestamps read, and the event's times written, by the fast paths exactly as by the slow ones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from dateutil.parser import isoparse

from sync.models import epoch_ms, parse_time, utc_time


def _dateutil(text: str) -> datetime:
    """parse_time before its fast path: dateutil for every form."""
    value = isoparse(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _outcome(parse, text: str) -> object:
    try:
        value = parse(text)
    except ValueError:
        return ValueError
    return (value, value.tzinfo is UTC)


def test_attio_timestamps_read_as_dateutil_reads_them():
    rng = random.Random(3)
    for _ in range(20_000):
        fraction = rng.choice(["", "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 11)))])
        text = (f"{rng.randint(1, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                f"{rng.choice([rng.randint(0, 25), 24]):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}"
                f"{fraction}{rng.choice(['Z', 'Z', 'z', '+00:00', '+02:30', ''])}")
        if rng.random() < 0.05:
            text = text.replace("T", rng.choice([" ", "t"]))
        if rng.random() < 0.05:
            text = text.replace(rng.choice(text), rng.choice("٣x,."), 1)
        assert _outcome(parse_time, text) == _outcome(_dateutil, text), text


@pytest.mark.parametrize("text", ["2025-01-02T24:00:00Z", "2025-01-02T03:04:05.123456789Z", "2025-01-02T03:04:05Z"])
def test_forms_attio_sends_and_an_edge(text):
    assert parse_time(text) == _dateutil(text) and parse_time(text).tzinfo is UTC


def test_utc_time_is_the_instant_of_epoch_ms():
    rng = random.Random(5)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        moment = datetime(rng.randint(1, 9998), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999),
                          tzinfo=rng.choice([UTC, timezone(timedelta(minutes=rng.randint(-720, 720)))]))
        before = (epoch + timedelta(milliseconds=epoch_ms(moment))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert utc_time(moment) == before
