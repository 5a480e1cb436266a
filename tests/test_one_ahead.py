"""Batches are resolved one ahead on a helper thread; the caller still gets them in order, each once."""

from __future__ import annotations

import threading

import pytest

from sync.recording import one_ahead


def test_results_in_order_from_one_helper_thread():
    threads: set[str] = set()

    def work(batch: list[int]) -> int:
        threads.add(threading.current_thread().name)
        return sum(batch)

    assert list(one_ahead(iter([[1, 2], [3], [4, 5]]), work)) == [([1, 2], 3), ([3], 3), ([4, 5], 9)]
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_a_failure_drawing_the_next_batch_still_hands_over_the_current_one():
    def batches():  # type: ignore[no-untyped-def]
        yield [1]
        raise RuntimeError("Attio refused")

    got = []
    with pytest.raises(RuntimeError, match="Attio refused"):
        for batch, result in one_ahead(batches(), len):
            got.append((batch, result))
    assert got == [([1], 1)]
