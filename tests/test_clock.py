"""Checkpoints and clocks: Attio's `Date` is trusted only up to this machine's clock plus a tolerance."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from sync import clock
from sync.models import parse_time
from tests.conftest import NOW, uid

MINUTE = timedelta(minutes=1)
A_YEAR_AHEAD = format_datetime(NOW + timedelta(days=365), usegmt=True)


class DateHeader:
    """What the sandbox's `Date` header says: its clock (None), this text, or nothing ("")."""

    def __init__(self, attio, monkeypatch):  # type: ignore[no-untyped-def]
        self.text: str | None = None
        answer = attio.dispatch

        def dispatch(request):  # type: ignore[no-untyped-def]
            reply = answer(request)
            if self.text == "":
                reply.headers.pop("Date", None)
            elif self.text is not None:
                reply.headers["Date"] = self.text
            return reply

        monkeypatch.setattr(attio, "dispatch", dispatch)


@pytest.fixture
def date(attio, monkeypatch) -> DateHeader:
    return DateHeader(attio, monkeypatch)


def checkpoint(env) -> datetime:
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    try:
        return parse_time(conn.execute("select value from checkpoints where name = 'poll'").fetchone()[0])
    finally:
        conn.close()


def stages_sent(usermaven) -> list[str]:
    return [e["event_attributes"]["deal_stage"] for e in usermaven.events]


@pytest.mark.parametrize("bad_run", ["baseline", "poll", "backfill"])
def test_a_date_a_year_ahead_does_not_hide_later_moves(workspace, usermaven, run, env, date, bad_run):
    if bad_run == "poll":
        assert run("run")[0] == 0  # the baseline, on a good clock
    workspace.clock = NOW + 5 * MINUTE
    date.text = A_YEAR_AHEAD
    command = ("run", "--backfill", "--since", "2026-02-28") if bad_run == "backfill" else ("run",)
    code, out, err = run(*command)
    assert code == 0, err
    assert "Attio's clock" in err and "ahead of this machine's" in err
    assert checkpoint(env) <= workspace.clock + clock.CLOCK_TOLERANCE
    date.text = None
    workspace.move_deal(uid("d1"), "Demo", NOW + 7 * MINUTE)
    workspace.clock = NOW + 10 * MINUTE
    assert run("run")[0] == 0
    assert stages_sent(usermaven) == ["Demo"]


def test_a_checkpoint_already_in_the_future_is_brought_back(workspace, usermaven, run, env):
    run("run")
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    with conn:
        conn.execute("update checkpoints set value = '2027-03-01T12:00:00.000000Z' where name = 'poll'")
    conn.close()
    workspace.move_deal(uid("d1"), "Demo", NOW + 7 * MINUTE)
    workspace.clock = NOW + 10 * MINUTE
    code, out, err = run("run")
    assert code == 0 and "is ahead of this machine's clock" in err and "backfill" in err
    assert checkpoint(env) <= workspace.clock + clock.CLOCK_TOLERANCE
    workspace.move_deal(uid("d1"), "Won 🎉", NOW + 12 * MINUTE)
    workspace.clock = NOW + 15 * MINUTE
    assert run("run")[0] == 0
    # the repaired poll read from this machine's clock less the overlap: both moves were sent, each once
    assert stages_sent(usermaven) == ["Demo", "Won 🎉"]


@pytest.mark.parametrize("header", ["Sun, 01 Mar 2026 12:05:00 -0000", "yesterday at noon", ""],
                         ids=["no zone", "unreadable", "missing"])
def test_a_malformed_or_missing_date_falls_back_safely(workspace, usermaven, run, env, date, header):
    run("run")
    date.text = header
    workspace.move_deal(uid("d1"), "Demo", NOW + MINUTE)
    workspace.clock = NOW + 5 * MINUTE
    code, out, err = run("run")
    assert code == 0, err
    assert "internal error" not in err
    assert NOW - 5 * MINUTE <= checkpoint(env) <= workspace.clock + clock.CLOCK_TOLERANCE
    workspace.move_deal(uid("d1"), "Won 🎉", NOW + 6 * MINUTE)
    workspace.clock = NOW + 10 * MINUTE
    assert run("run")[0] == 0
    assert stages_sent(usermaven) == ["Demo", "Won 🎉"]


def test_the_overlap_cannot_be_set_below_the_clock_skew_it_covers(run, monkeypatch):
    for value in ("0", "30"):
        monkeypatch.setenv("SYNC_OVERLAP_SECONDS", value)
        code, out, err = run("run")
        assert code == 2 and f"SYNC_OVERLAP_SECONDS must be from 60 to 86400, got '{value}'" in err
    assert clock.MIN_OVERLAP_SECONDS * 1.5 >= 2 * clock.CLOCK_TOLERANCE.total_seconds()


def test_http_date_reads_what_attio_sends_and_nothing_else():
    assert clock.http_date("Sun, 01 Mar 2026 12:00:00 GMT") == NOW
    assert clock.http_date("Sun, 01 Mar 2026 12:00:00 -0000") == NOW  # zone unknown: GMT, as HTTP says
    assert clock.http_date("Sun, 01 Mar 2026 13:00:00 +0100") == NOW
    for bad in (None, "", "yesterday at noon", "Sun, 99 Mar 2026 12:00:00 GMT"):
        assert clock.http_date(bad) is None, bad


def test_checked_time_and_the_disagreement_warning():
    local = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert clock.checked(local + timedelta(days=365), local) == local + clock.CLOCK_TOLERANCE
    assert clock.checked(local - timedelta(hours=2), local) == local - timedelta(hours=2)
    assert clock.disagreement(local + timedelta(seconds=10), local) is None
    assert "8760.0 h ahead" in (clock.disagreement(local + timedelta(days=365), local) or "")
    assert "120 s behind" in (clock.disagreement(local - timedelta(minutes=2), local) or "")
