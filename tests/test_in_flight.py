"""History reads in flight: as many as rate × observed latency needs, within ATTIO_CONCURRENCY."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from sync import attio as attio_module
from sync.attio import AttioClient
from sync.http import InFlight
from sync.source import DealSource
from tests.conftest import BASE, SECRETS


def test_no_more_than_the_target_run_at_once_and_every_call_finishes():
    running, peak, lock = 0, 0, threading.Lock()

    def call(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return n * 2

    pool = ThreadPoolExecutor(16)
    gate = InFlight(pool, lambda: 3)
    futures = [gate.submit(call, n) for n in range(30)]
    assert [f.result(timeout=10) for f in futures] == [n * 2 for n in range(30)]
    assert peak == 3
    gate.close()
    pool.shutdown()
    assert len(pool._threads) <= 4  # threads are made as calls start, not for the ceiling


def test_target_follows_rate_times_latency_within_the_ceiling():
    source = DealSource.__new__(DealSource)
    source.workers = 48
    for rps, latency, target in ((100, 0.3, 47), (100, 0.1, 17), (25, 0.02, 3), (100, 0.001, 3), (100, 2.0, 48)):
        source.max_rps, source.client = rps, SimpleNamespace(latency=latency)  # type: ignore[assignment]
        assert source.in_flight_target() == target


def test_threads_stay_at_the_target_over_many_calls():
    """A long backfill hands the pool thousands of reads: its threads must not creep up to the ceiling."""
    pool = ThreadPoolExecutor(48)
    gate = InFlight(pool, lambda: 3)
    futures = [gate.submit(time.sleep, 0.001) for _ in range(600)]
    for future in futures:
        future.result(timeout=30)
    gate.close()
    pool.shutdown()
    assert len(pool._threads) <= 3  # the target: a finishing thread takes the next call itself


def test_the_first_answer_sets_the_latency_the_requests_in_flight_are_sized_by(attio, workspace, env):
    """Before its first answer the client guesses; after it, the target is Attio's, not a blend with the guess
    that would take a dozen answers to fade (a backfill's first reads go out then)."""
    client = AttioClient(BASE, SECRETS["ATTIO_API_KEY"], 50)
    slow = 0.8
    readings = iter([100.0, 100.0 + slow])
    with pytest.MonkeyPatch.context() as patch:  # the client's clock only: the answer takes `slow` seconds
        patch.setattr(attio_module, "time", SimpleNamespace(monotonic=lambda: next(readings)))
        client.check_token()
    assert client.latency == pytest.approx(slow)
