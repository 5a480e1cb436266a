"""`replay DEAL_ID`: read one deal's history again and send its transitions again, with their original ids."""

from __future__ import annotations

import logging
from datetime import datetime

from sync.job import Context, events_for, ledger_row
from sync.models import Current, Transition
from sync.store import HELD
from sync.transitions import in_range

log = logging.getLogger(__name__)


def replay(ctx: Context, record_id: str, since: datetime | None) -> int:
    """Queue every transition of the deal (since `since`) for sending again; return how many.

    Transitions already in the ledger keep their event id and timestamp, so Usermaven replaces its copy
    instead of counting a second conversion; new ones are added. Raises AttioNotFound for an unknown deal.
    """
    currents = ctx.pipeline.find(record_id)
    pairs = list(ctx.pipeline.with_histories(currents))
    ctx.summary.deals_read += len(pairs)

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        return in_range(transitions, since, None)

    found = events_for(ctx, pairs, select)
    known = ctx.store.known_ids([t.event_id for t, _, _ in found])
    with ctx.store.atomic():
        for transition, event, reason in found:
            row = ledger_row(transition, event, "replay", reason)
            if transition.event_id in known:
                ctx.store.requeue_for_replay(transition.event_id, event, row["state"], reason)
            else:
                ctx.store.add_to_ledger([row])
            ctx.summary.held += row["state"] == HELD
    replayed = sum(1 for t, _, _ in found if t.event_id in known)
    ctx.summary.replayed += replayed
    ctx.summary.transitions += len(found) - replayed
    log.info("replay: deal %s has %d transition(s)%s", record_id, len(found),
             f" since {since:%Y-%m-%d %H:%M:%S}" if since else "")
    return len(found)
