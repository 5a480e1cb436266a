"""`status --check`: one line and a monitoring plugin's exit code (0 OK, 1 WARNING, 2 CRITICAL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync import cli
from sync.state import open_state
from sync.state.sql import time_text
from sync.status import check_health

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AGE, HELD = timedelta(minutes=15), timedelta(days=7)


@pytest.fixture
def state_path(tmp_path):
    return tmp_path / "sync.db"


def _run(path, command: str, code: int, finished: datetime) -> None:
    state = open_state(path)
    run_id = state.runs.start(command)
    state.runs.finish(run_id, exit_code=code)
    state.db.execute("update runs set finished_at = ? where id = ?", [time_text(finished), run_id])
    state.close()


def _event(path, event_id: str, state_: str, detected: datetime) -> None:
    state = open_state(path)
    state.db.table("ledger").insert({"event_id": event_id, "deal_key": "d", "to_stage_id": "s",
                                     "changed_at": time_text(detected), "payload": "{}", "state": state_,
                                     "detected_at": time_text(detected)})
    state.close()


def test_ok_when_a_run_succeeded_recently(state_path):
    _run(state_path, "run", 0, NOW - timedelta(minutes=4))
    _event(state_path, "e1", "held", NOW - timedelta(days=2))
    health = check_health(state_path, AGE, HELD, NOW)
    assert (health.code, health.line) == (0, "OK - last successful run 4m ago; 0 pending, 1 held, 0 failed")


def test_critical_when_the_last_success_is_too_old_even_if_later_runs_failed(state_path):
    _run(state_path, "run", 0, NOW - timedelta(hours=2))
    _run(state_path, "run", 1, NOW - timedelta(minutes=5))
    health = check_health(state_path, AGE, HELD, NOW)
    assert health.code == 2 and health.line == "CRITICAL - last successful run 2h ago (more than 15m)"


def test_critical_when_events_failed_or_nothing_ever_succeeded(state_path):
    _run(state_path, "run", 1, NOW)
    _event(state_path, "e1", "failed", NOW)
    health = check_health(state_path, AGE, HELD, NOW)
    assert health.code == 2
    assert health.line == ("CRITICAL - no run has succeeded yet; 1 event(s) failed (see `status`, then `replay` "
                           "the deal)")


def test_warning_when_an_event_is_held_too_long(state_path):
    _run(state_path, "run", 0, NOW)
    _event(state_path, "e1", "held", NOW - timedelta(days=8, hours=3))
    _event(state_path, "e2", "held", NOW - timedelta(days=1))
    health = check_health(state_path, AGE, HELD, NOW)
    assert health.code == 1 and health.line == "WARNING - 2 event(s) held, the oldest for 8d3h (more than 7d)"


def test_critical_without_a_state(state_path):
    health = check_health(state_path, AGE, HELD, NOW)
    assert health.code == 2 and health.line.startswith("CRITICAL - no state database at ")


def test_cli_prints_the_line_and_exits_with_the_plugin_code(state_path, capsys, monkeypatch):
    monkeypatch.delenv("SYNC_STATE_DB", raising=False)
    _run(state_path, "run", 0, datetime.now(UTC) - timedelta(minutes=20))
    assert cli.main(["status", "--check", "--state", str(state_path)]) == 2
    assert capsys.readouterr().out.startswith("CRITICAL - last successful run 20m")
    assert cli.main(["status", "--check", "--max-age", "1h", "--state", str(state_path)]) == 0
    assert capsys.readouterr().out.startswith("OK - ")
    assert cli.main(["status", "--check", "--max-age", "soon", "--state", str(state_path)]) == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_warning_names_deals_waiting_in_the_retry_set(state_path):
    from sync.models import DealRef

    _run(state_path, "run", 1, NOW - timedelta(minutes=4))
    _run(state_path, "run", 0, NOW - timedelta(minutes=9))
    state = open_state(state_path)
    with state.atomic():
        state.retries.add("poll", [(DealRef("deal-7"), "Attio answered 400 (validation_type) for ...")])
    state.db.execute("update retry set first_failed = ?", [time_text(NOW - timedelta(hours=2))])
    state.close()
    health = check_health(state_path, AGE, HELD, now=NOW)
    assert health.code == 1
    assert health.line == ("WARNING - 1 deal(s) Attio will not let this sync read, the first (deal-7) since 2h ago: "
                           "see `status`")
