"""`replay DEAL_ID`: read one deal's history again and queue its transitions again, with their original ids."""

from __future__ import annotations

import logging
from datetime import datetime

from sync.errors import AttioError
from sync.events import EventSettings
from sync.models import Counts, Current, StageValue, Transition
from sync.recording import events_for, known_event_ids, ledger_row
from sync.resolve import Resolver
from sync.source import DealSource, Unread
from sync.state import State
from sync.state.ledger import HELD, row_key
from sync.transitions import in_range

log = logging.getLogger(__name__)


def replay(state: State, source: DealSource, resolver: Resolver, settings: EventSettings, record_id: str,
           since: datetime | None) -> Counts:
    """Queue every transition of the deal (since `since`) for sending again.

    Transitions already in the ledger keep their event id and timestamp, so Usermaven replaces its copy
    instead of counting a second conversion; new ones are added. Raises AttioNotFound for an unknown deal.
    """
    currents = source.find(record_id)
    pairs: list[tuple[Current, list[StageValue]]] = []
    reads = source.with_histories(currents)
    try:
        for current, history in reads:
            if isinstance(history, Unread):
                raise AttioError(history.message)
            pairs.append((current, history))
    finally:
        reads.close()  # an unreadable history: the deal's other entries are not read on

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        return in_range(transitions, since, None)

    found = events_for(pairs, select, source, resolver, settings)
    known = known_event_ids(state.ledger, found)
    held = 0
    with state.atomic():
        for transition, event, reason in found:
            row = ledger_row(transition, event, "replay", reason)
            if transition.event_id in known:
                state.ledger.requeue_for_replay(row_key(row), event, row["state"], reason)
            else:
                state.ledger.add([row])
            held += row["state"] == HELD
    replayed = sum(1 for t, _, _ in found if t.event_id in known)
    log.info("replay: deal %s has %d transition(s)%s", record_id, len(found),
             f" since {since:%Y-%m-%d %H:%M:%S}" if since else "")
    return Counts(deals_read=len(pairs), transitions=len(found) - replayed, replayed=replayed, held=held)
