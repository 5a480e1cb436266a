"""A standing condition (events held, events failed) is said when it changes and once a day, not every run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from sync.commands import report_standing_conditions
from sync.state import open_state

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def state(tmp_path):
    s = open_state(tmp_path / "sync.db")
    yield s
    s.close()


def _said(caplog, state, held: int, failed: int, at: datetime) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sync"):
        report_standing_conditions(state, {"pending": 0, "held": held, "sent": 0, "failed": failed}, now=at)
    return [r.getMessage() for r in caplog.records]


def test_held_events_are_reported_once_a_day_or_when_their_number_changes(state, caplog):
    assert _said(caplog, state, 169, 0, T0) == [
        "169 event(s) held until their deal has a person with an email or user id; see `status` "
        "(said again daily, or when the number changes)"]
    # every 5 minutes for most of a day: nothing more
    assert all(_said(caplog, state, 169, 0, T0 + timedelta(minutes=5 * n)) == [] for n in range(1, 287))
    assert len(_said(caplog, state, 169, 0, T0 + timedelta(days=1))) == 1
    assert _said(caplog, state, 170, 0, T0 + timedelta(days=1, minutes=5))[0].startswith("170 event(s) held")
    assert _said(caplog, state, 0, 0, T0 + timedelta(days=1, minutes=10)) == ["no events held any more"]
    assert _said(caplog, state, 0, 0, T0 + timedelta(days=3)) == []


def test_failed_events_too_and_a_clean_state_says_nothing(state, caplog):
    assert _said(caplog, state, 0, 0, T0) == []
    assert _said(caplog, state, 0, 2, T0)[0].startswith("2 event(s) failed and are not retried")
    assert _said(caplog, state, 0, 2, T0 + timedelta(hours=23)) == []


def test_the_record_survives_reopening_the_state(tmp_path, caplog):
    first = open_state(tmp_path / "s.db")
    _said(caplog, first, 5, 0, T0)
    first.close()
    again = open_state(tmp_path / "s.db")
    try:
        assert _said(caplog, again, 5, 0, T0 + timedelta(minutes=5)) == []
    finally:
        again.close()
