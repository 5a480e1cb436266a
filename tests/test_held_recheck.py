"""Held events after a large backfill: each run re-checks a bounded number of deals, in turn."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from sync.state import State
from sync.state.ledger import HELD


def _held_state(deals: int) -> State:
    state = State(Database(sqlite3.connect(":memory:")))
    state.ledger.add([{"event_id": f"e{n}-{k}", "deal_key": f"r{n}", "record_id": f"r{n}", "entry_id": None,
                       "from_stage_id": None, "from_stage": None, "to_stage_id": "s", "to_stage": "Lead",
                       "changed_at": "2025-01-01T00:00:00.000000Z", "payload": {}, "state": HELD,
                       "reason": "deal has no associated person", "origin": "backfill"}
                      for n in range(deals) for k in range(2)])
    return state


def test_each_run_rechecks_at_most_the_limit_oldest_checked_first():
    state = _held_state(5)
    later = "9999-01-01T00:00:00.000000Z"
    first = state.ledger.held_record_ids(later, limit=2)
    assert first == ["r0", "r1"]
    state.ledger.mark_checked([("r0", "e0-0"), ("r0", "e0-1"), ("r1", "e1-0"), ("r1", "e1-1")])
    second = state.ledger.held_record_ids(later, limit=2)
    assert second == ["r2", "r3"]  # never checked before those checked just now
    assert len(state.ledger.held_record_ids(later)) == 5  # no limit: every due deal


def test_release_held_reads_a_bounded_number_of_deals(monkeypatch):
    from sync import delivery

    state = _held_state(1000)
    asked: list[list[str]] = []

    class Source:
        def deals_by_id(self, record_ids):  # type: ignore[no-untyped-def]
            asked.append(list(record_ids))
            return {}

    class Resolver:
        def forget_people(self, ids):  # type: ignore[no-untyped-def]
            list(ids)

        def load(self, deals):  # type: ignore[no-untyped-def]
            list(deals)

    delivery.release_held(state, Source(), Resolver(), "9999-01-01T00:00:00.000000Z")  # type: ignore[arg-type]
    assert sum(len(a) for a in asked) == delivery.HELD_RECHECK_DEALS
    assert max(len(a) for a in asked) <= 200
