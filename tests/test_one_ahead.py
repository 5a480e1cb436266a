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


def _order(in_hand: bool) -> list[tuple[str, int]]:
    """The order in which three batches are drawn and handed over, `in_hand` saying whether the next is read."""
    seen: list[tuple[str, int]] = []

    def batches():  # type: ignore[no-untyped-def]
        for number in (1, 2, 3):
            seen.append(("drawn", number))
            yield [number]

    for batch, _ in one_ahead(batches(), len, lambda: in_hand):
        seen.append(("handed", batch[0]))
    return seen


def test_the_current_batch_is_handed_over_before_the_next_is_drawn_while_that_one_is_being_read():
    """At Attio's pace (the next batch not read yet) the caller commits and sends a batch while the next is
    read, not after it; with the next one at hand, it is drawn while `work` runs on the current one."""
    assert _order(in_hand=False) == [("drawn", 1), ("handed", 1), ("drawn", 2), ("handed", 2), ("drawn", 3),
                                     ("handed", 3)]
    assert _order(in_hand=True) == [("drawn", 1), ("drawn", 2), ("handed", 1), ("drawn", 3), ("handed", 2),
                                    ("handed", 3)]


def test_a_failure_drawing_the_next_batch_after_handing_over_the_current_one_is_raised():
    def batches():  # type: ignore[no-untyped-def]
        yield [1]
        raise RuntimeError("Attio refused")

    got = []
    with pytest.raises(RuntimeError, match="Attio refused"):
        for batch, result in one_ahead(batches(), len, lambda: False):
            got.append((batch, result))
    assert got == [([1], 1)]
