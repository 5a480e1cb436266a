"""Histories → transitions, and event ids: pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sync.models import DealRef, StageValue
from sync.transitions import after, behind, event_id, in_order, in_range, latest, transitions_from_history

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
DEAL = DealRef("rec-1")


def value(status: str, minutes: int, title: str | None = None) -> StageValue:
    return StageValue(status_id=status, title=title or status.title(), active_from=T0 + timedelta(minutes=minutes),
                      attribute_id="attr-stage", parent_id="obj-deals")


def pairs(transitions) -> list[tuple]:
    return [(t.from_stage, t.to_stage) for t in transitions]


def test_first_stage_is_a_transition_from_nothing():
    [first] = transitions_from_history(DEAL, [value("lead", 0)])
    assert (first.from_stage, first.from_stage_id, first.to_stage, first.changed_at) == (None, None, "Lead", T0)


def test_a_b_c_a_gives_every_move_in_order():
    history = [value("lead", 0), value("demo", 5), value("won", 9), value("lead", 30)]
    assert pairs(transitions_from_history(DEAL, history)) == [
        (None, "Lead"), ("Lead", "Demo"), ("Demo", "Won"), ("Won", "Lead")]


def test_unsorted_history_is_ordered_by_active_from():
    history = [value("demo", 5), value("lead", 0)]
    assert pairs(transitions_from_history(DEAL, history)) == [(None, "Lead"), ("Lead", "Demo")]


def test_rewriting_the_same_stage_is_not_a_transition():
    history = [value("lead", 0), value("lead", 3), value("demo", 5)]
    result = transitions_from_history(DEAL, history)
    assert pairs(result) == [(None, "Lead"), ("Lead", "Demo")]
    assert result[1].changed_at == T0 + timedelta(minutes=5)


def test_event_id_is_stable_and_depends_on_ids_and_time_not_titles():
    renamed = value("won", 9, title="Closed Won")
    assert event_id(DEAL, value("won", 9)) == event_id(DEAL, renamed)
    assert event_id(DEAL, value("won", 9)) != event_id(DEAL, value("won", 10))
    assert event_id(DEAL, value("won", 9)) != event_id(DealRef("rec-2"), value("won", 9))
    assert event_id(DEAL, value("won", 9)) != event_id(DealRef("rec-1", entry_id="entry-1"), value("won", 9))
    # the same history read twice gives the same ids
    history = [value("lead", 0), value("won", 9)]
    assert [t.event_id for t in transitions_from_history(DEAL, history)] == \
        [t.event_id for t in transitions_from_history(DEAL, list(history))]


def test_event_id_is_a_uuid_fixed_across_releases():
    # Changing how ids are made would resend every transition as new conversions: pin one.
    assert event_id(DEAL, value("won", 9)) == "450389a5-de6a-5814-aa1e-b09274809e6e"


def test_after_and_in_range():
    history = [value("lead", 0), value("demo", 5), value("won", 9)]
    result = transitions_from_history(DEAL, history)
    assert pairs(after(result, T0 + timedelta(minutes=5))) == [("Demo", "Won")]
    assert pairs(after(result, T0 + timedelta(minutes=5), inclusive=True)) == [("Lead", "Demo"), ("Demo", "Won")]
    assert after(result, None) == result
    assert pairs(in_range(result, T0 + timedelta(minutes=1), T0 + timedelta(minutes=9))) == [("Lead", "Demo")]


def test_values_written_at_the_same_instant_are_ordered_by_active_until_not_by_attio():
    """Lead then Qualified in the same millisecond: Lead ended when Qualified began; Qualified is current."""
    lead = replace(value("lead", 0), active_until=T0)
    qualified = value("qualified", 0)  # active_until None: the current value
    for listed in ([lead, qualified], [qualified, lead]):
        assert pairs(transitions_from_history(DEAL, listed)) == [(None, "Lead"), ("Lead", "Qualified")]
        assert latest(listed) == qualified
        assert in_order(listed) == [lead, qualified]


def test_a_tie_of_ended_values_is_broken_the_same_way_whatever_the_order():
    a, b = replace(value("a", 0), active_until=T0), replace(value("b", 0), active_until=T0)
    current = value("c", 0)
    orders = [[a, b, current], [b, a, current], [current, b, a]]
    assert len({tuple(v.status_id for v in in_order(o)) for o in orders}) == 1
    assert {latest(o) for o in orders} == {current}


def test_first_time_in_stage_comes_from_the_whole_history():
    history = [value("lead", 0), value("won", 5), value("negotiation", 9), value("won", 30), value("lost", 40)]
    result = transitions_from_history(DEAL, history)
    assert [(t.to_stage, t.first_time_in_stage) for t in result] == [
        ("Lead", True), ("Won", True), ("Negotiation", True), ("Won", False), ("Lost", True)]
    # selecting the recent moves afterwards keeps what the whole history said
    assert [t.first_time_in_stage for t in after(result, T0 + timedelta(minutes=20))] == [False, True]


def test_previous_stage_started_when_the_deal_entered_it_not_at_its_last_rewrite():
    history = [value("lead", 0), value("lead", 3), value("demo", 5), value("won", 65)]
    result = transitions_from_history(DEAL, history)
    assert [t.from_stage_since for t in result] == [None, T0, T0 + timedelta(minutes=5)]
    assert result[2].changed_at - result[2].from_stage_since == timedelta(hours=1)


def test_a_history_that_ends_before_the_current_stage_is_behind():
    history = [value("lead", 0), value("demo", 5)]
    assert not behind(value("demo", 5), history)
    assert behind(value("won", 9), history)  # the query saw a newer write than the history read
    assert behind(value("lead", 0), [])
    assert not behind(value("lead", 0), [value("lead", 0), value("demo", 5)])  # the history is the newer read
