"""Batches are resolved one ahead on a helper thread; the caller still gets them in order, each once. At
Attio's pace a batch is handed over (committed, sent) while the next one is read."""

from __future__ import annotations

import gc
import threading
import time
from types import SimpleNamespace

import pytest

from sync.config import load_config
from sync.models import Current, DealRef, StageValue
from sync.recording import one_ahead
from sync.source import DealSource
from sync.state.backfills import Backfills
from tests.conftest import add_leads, ledger_rows


def test_results_in_order_from_one_helper_thread():
    threads: set[str] = set()

    def work(batch: list[int]) -> int:
        threads.add(threading.current_thread().name)
        return sum(batch)

    assert list(one_ahead(iter([[1, 2], [3], [4, 5]]), work)) == [([1, 2], 3), ([3], 3), ([4, 5], 9)]
    assert len(threads) == 1 and threading.current_thread().name not in threads


@pytest.mark.parametrize("next_in_hand", [None, False], ids=["drawn first", "handed over first"])
def test_a_failure_drawing_the_next_batch_still_hands_over_the_current_one(next_in_hand):
    def batches():  # type: ignore[no-untyped-def]
        yield [1]
        raise RuntimeError("Attio refused")

    got = []
    in_hand = None if next_in_hand is None else (lambda: next_in_hand)
    with pytest.raises(RuntimeError, match="Attio refused"):
        for batch, result in one_ahead(batches(), len, in_hand):
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


def test_history_reads_say_whether_the_next_ones_are_read(env):
    """`in_hand(n)`: whether taking the next n pairs would wait for Attio (what lets a backfill commit a batch
    while the next one is read)."""
    release = threading.Event()

    class Source(DealSource):
        def history(self, ref):  # type: ignore[no-untyped-def]
            if ref.record_id == "slow":
                release.wait(timeout=5)
            return []

    source = Source(SimpleNamespace(latency=0.05), load_config(env))  # type: ignore[arg-type]
    reads = source.with_histories(Current(DealRef(name), None) for name in ["first", "slow", "last"])
    assert not reads.in_hand(1)  # no deal listed yet
    assert next(reads)[0].ref.record_id == "first"
    assert not reads.in_hand(2) and not reads.in_hand(1)  # "slow" is still being read
    release.set()
    for _ in range(500):
        if reads.in_hand(2):
            break
        threading.Event().wait(0.01)
    assert reads.in_hand(2) and reads.in_hand(100)  # every deal is listed: the two left are all there is
    assert [current.ref.record_id for current, _ in reads] == ["slow", "last"]
    assert reads.in_hand(1)  # nothing left to wait for


def test_history_reads_dropped_unfinished_read_nothing_more(env):
    """A caller that leaves its loop (replay raising on an unreadable history) stops the reads at once, not when
    the garbage collector runs."""
    started: list[str] = []
    gate = threading.Event()

    class Source(DealSource):
        def history(self, ref: DealRef) -> list[StageValue]:
            started.append(ref.record_id)
            gate.wait(timeout=0.05)
            return []

    source = Source(SimpleNamespace(latency=0.05), load_config(env))  # type: ignore[arg-type]
    before = set(threading.enumerate())
    gc.disable()
    try:
        reads = source.with_histories(Current(DealRef(f"d{n}"), None) for n in range(40))
        next(reads)
        del reads
        read_when_dropped = len(started)
        time.sleep(0.5)  # time for reads that were not stopped to start
        assert len(started) == read_when_dropped < 40
        assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("attio")]
    finally:
        gc.enable()


def test_a_backfill_commits_a_batch_while_the_next_is_read(attio, usermaven, run, env, monkeypatch):
    """The second batch's histories are answered only once the first batch is recorded: a backfill that drew
    the next batch before handing over the current one would wait for them (here, until the 5 s give-up)."""
    ids = add_leads(attio.workspace, "g", 150, days_back=200)  # two batches, in this order
    first_done, gave_up = threading.Event(), threading.Event()
    mark_done, history = Backfills.mark_done, DealSource.history

    def marking(self: Backfills, *args: object) -> None:
        mark_done(self, *args)  # type: ignore[arg-type]
        first_done.set()

    def waiting(self: DealSource, ref: DealRef) -> list[StageValue] | None:
        if ref.record_id in ids[100:] and not gave_up.is_set() and not first_done.wait(timeout=5):
            gave_up.set()
        return history(self, ref)

    monkeypatch.setattr(Backfills, "mark_done", marking)
    monkeypatch.setattr(DealSource, "history", waiting)
    code, _, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert not gave_up.is_set()
    assert len({e["event_attributes"]["deal_id"] for e in usermaven.events}) == 150
    sent = [e["event_id"] for e in usermaven.events]  # as received: a resend would show twice
    assert len(sent) == len(set(sent)) == len(ledger_rows(env))
