"""Retries, Retry-After and the rate limiter."""

from __future__ import annotations

import threading
import time
from email.utils import format_datetime

import pytest
from urllib3.response import HTTPResponse

from sync.http import RateLimiter, RequestStats, make_session
from tests.attio_shapes import uid
from tests.conftest import NOW, ledger_rows

RATE_LIMITED = {"status_code": 429, "type": "rate_limit_error", "code": "rate_limit_exceeded",
                "message": "Rate limit exceeded, please try again later"}


def test_attio_429_with_http_date_retry_after_is_retried(workspace, usermaven, run, env):
    run("run")
    workspace.move(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    retry_after = format_datetime(NOW.replace(minute=5, second=1), usegmt=True)
    workspace.failures = [(429, {"Retry-After": retry_after}, RATE_LIMITED)] * 2
    code, out, err = run("run")
    assert code == 0
    assert len(usermaven.events) == 1
    run_row = ledger_rows(env)[0]
    assert run_row["state"] == "sent"


def test_retry_waits_until_the_http_date_in_retry_after(monkeypatch):
    stats = RequestStats()
    retry = make_session(stats).get_adapter("https://api.attio.com").max_retries
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    in_three_seconds = format_datetime_now(3)
    response = HTTPResponse(body=b"", headers={"Retry-After": in_three_seconds}, status=429)
    retry = retry.increment(method="POST", url="/v2/objects/deals/records/query", response=response)
    retry.sleep(response)
    assert len(slept) == 1 and 1.5 < slept[0] <= 3.0
    assert (stats.retries, stats.rate_limited) == (1, 1)


def test_retry_after_far_in_the_future_is_capped(monkeypatch):
    """A local clock ten minutes behind Attio's must not turn one 429 into a ten-minute wait."""
    retry = make_session(RequestStats()).get_adapter("https://api.attio.com").max_retries
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    response = HTTPResponse(body=b"", headers={"Retry-After": format_datetime_now(600)}, status=429)
    retry = retry.increment(method="POST", url="/v2/objects/deals/records/query", response=response)
    retry.sleep(response)
    assert slept == [60.0]


def format_datetime_now(seconds: int) -> str:
    from datetime import UTC, datetime, timedelta

    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


def test_attio_unreachable_after_retries_exits_1_and_commits_nothing(workspace, usermaven, run, env):
    run("run")
    workspace.move(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    error = {"status_code": 503, "type": "api_error", "code": "unavailable", "message": "Service unavailable"}
    workspace.failures = [(503, {}, error)] * 7
    code, out, err = run("run")
    assert code == 1
    assert "Attio answered 503" in err and "Service unavailable" in err
    assert ledger_rows(env) == []
    # the checkpoint did not move: the next run finds the change
    assert run("run")[0] == 0
    assert len(usermaven.events) == 1


@pytest.mark.parametrize("per_second", [40, 100])
def test_rate_limiter_holds_the_ceiling_across_threads(per_second):
    limiter = RateLimiter(per_second)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            limiter.wait()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    # 40 requests, evenly spaced: the last starts no sooner than 39 intervals after the first
    assert stamps[-1] - stamps[0] >= 39 / per_second * 0.95
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0  # sorted; and no window of one second holds more than the ceiling
    for i, start in enumerate(stamps):
        assert sum(1 for s in stamps[i:] if s - start < 1.0) <= per_second


def test_truncated_json_from_attio_is_retried(workspace, usermaven, run, env):
    run("run")
    workspace.move(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    workspace.failures = [(200, {}, "cut")] * 2  # bodies that are not JSON
    code, out, err = run("run")
    assert code == 0
    assert "not JSON" in err and "attempt 1 of 3" in err
    assert len(usermaven.events) == 1
    workspace.failures = [(200, {}, "cut")] * 3
    workspace.move(uid("d1"), "Lost", NOW.replace(minute=6))
    workspace.clock = NOW.replace(minute=7)
    code, out, err = run("run")
    assert code == 1 and "not JSON" in err and "3 times" in err
