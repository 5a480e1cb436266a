"""`schedule --every 30s|5m|1h`: durations as people write them, at least 10 seconds."""

from __future__ import annotations

import pytest

from sync.duration import describe, parse_duration, parse_every


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400),
                                           ("300", 300), (" 10S ", 10), ("2m5s", 125), ("7d", 604_800)])
def test_durations_in_seconds_minutes_and_hours(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "1.5m", "-5m", "5m5m", "5 m", "s30", "1h-2m"])
def test_what_is_not_a_duration_is_refused_with_how_to_write_one(text):
    with pytest.raises(ValueError, match="write e.g. 30s, 5m, 1h"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999999999d", "3651d", str(3650 * 86_400 + 1)])
def test_a_duration_longer_than_ten_years_is_refused(text):
    """Found by a review: `status --check --max-age 99999999999d` overflowed into an internal error."""
    with pytest.raises(ValueError, match="is longer than ten years"):
        parse_duration(text)
    assert parse_duration("3650d") == 3650 * 86_400


def test_a_huge_duration_is_a_usage_error_not_an_internal_one(run):
    code, out, err = run("status", "--check", "--max-age", "99999999999999999d")
    assert code == 2 and "longer than ten years" in err and "internal error" not in err


def test_every_is_at_least_ten_seconds():
    assert parse_every("10s") == 10
    with pytest.raises(ValueError, match="--every must be at least 10 seconds, got 9s"):
        parse_every("9s")


@pytest.mark.parametrize("seconds, text", [(300, "5m"), (90, "1m30s"), (3600, "1h"), (10, "10s"), (0, "0s"),
                                           (90_000, "1d1h")])
def test_describe_writes_durations_back(seconds, text):
    assert describe(seconds) == text
    assert parse_duration(text) == seconds
