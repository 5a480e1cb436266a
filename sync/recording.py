"""The step every command shares: deals with their histories → transitions → events (with the person they
belong to) → ledger rows, and the snapshot rows that go with them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from sync.attributes import EventAttribute, Names, references, render_all
from sync.events import EventSettings, build_event
from sync.models import Counts, Current, Deal, DealRef, StageValue, Transition, format_time
from sync.resolve import Resolver
from sync.source import DealSource, History, Unread
from sync.state.ledger import HELD, PENDING, Ledger, encoded
from sync.transitions import latest, transitions_from_history

Selector = Callable[[Current, list[Transition]], list[Transition]]
# A transition, its event as the ledger stores it (JSON text), and why it is held (None: it is not).
Found = tuple[Transition, str, str | None]
B = TypeVar("B")
R = TypeVar("R")


def ledger_row(transition: Transition, event: dict | str, origin: str, held_reason: str | None) -> dict:
    """A ledger row for a transition: pending, or held with the reason when its user is unknown. The event goes
    in as a dict or as its stored JSON text (`state.ledger.encoded`)."""
    return {
        "event_id": transition.event_id,
        "deal_key": transition.deal.key,
        "record_id": transition.deal.record_id,
        "entry_id": transition.deal.entry_id,
        "from_stage_id": transition.from_stage_id,
        "from_stage": transition.from_stage,
        "to_stage_id": transition.to_stage_id,
        "to_stage": transition.to_stage,
        "changed_at": format_time(transition.changed_at),
        "payload": event,
        "state": HELD if held_reason else PENDING,
        "reason": held_reason,
        "origin": origin,
    }


def baseline_rows(currents: Sequence[Current], began: datetime | None) -> list[dict]:
    """Snapshot rows for a baseline that began at `began` (Attio's clock).

    A deal whose stage was written at or after that moment moved while the scan ran: it gets no row, so the
    next poll treats it as new since the baseline and reads its history, instead of taking the moved-to
    stage for the starting point and never sending the move.
    """
    return [snapshot_row(c) for c in currents
            if c.stage is None or began is None or c.stage.active_from < began]


def snapshot_row(current: Current, history: Sequence[StageValue] = ()) -> dict:
    """The snapshot of a deal: the stage it is in now and since when (its history's last value when it was
    read, as that is newer than the query's answer)."""
    stage = latest(history) if history else current.stage
    return {
        "key": current.ref.key,
        "record_id": current.ref.record_id,
        "entry_id": current.ref.entry_id,
        "stage_id": stage.status_id if stage else None,
        "stage_title": stage.title if stage else None,
        "stage_since": format_time(stage.active_from) if stage else None,
    }


def events_for(batch: Sequence[tuple[Current, list[StageValue]]], select: Selector, source: DealSource,
               resolver: Resolver, settings: EventSettings) -> list[Found]:
    """For each deal's history, the transitions `select` keeps, each with its event and held reason.

    People, companies and owners for the whole batch are fetched together.
    """
    chosen = [(current, select(current, transitions_from_history(current.ref, history)))
              for current, history in batch]
    chosen = [(current, transitions) for current, transitions in chosen if transitions]
    if not chosen:
        return []
    deals = source.deals(current for current, _ in chosen)
    lookups = resolver.load(deals.values(), owners=True)
    values = {current.ref.key: {**_deal(deals, current).attributes, **source.entry_values(current)}
              for current, _ in chosen}
    names = _names(source.event_attributes, values.values(), resolver)
    result: list[Found] = []
    for current, transitions in chosen:
        deal = _deal(deals, current)
        identity, reason = lookups.identity(deal)
        company, owner = lookups.company_name(deal), lookups.owner_name(deal)
        attributes = render_all(source.event_attributes, values[current.ref.key], names)
        for transition in transitions:
            event = build_event(transition, deal, settings, identity, company, owner, attributes)
            # Encoded here, on the helper thread, while the caller's thread commits the batch before.
            result.append((transition, encoded(event), reason if identity is None else None))
    return result


def _deal(deals: dict[str, Deal], current: Current) -> Deal:
    return deals.get(current.ref.record_id) or Deal(record_id=current.ref.record_id)


def _names(attributes: Sequence[EventAttribute], values: Iterable[Mapping[str, Sequence[dict]]],
           resolver: Resolver) -> Names:
    """The names the batch's event attributes point at, looked up together (none: no request)."""
    records: set[tuple[str, str]] = set()
    members: set[str] = set()
    for each in values:
        more_records, more_members = references(attributes, each)
        records |= more_records
        members |= more_members
    return resolver.names(records, members) if records or members else Names()


def split_unread(batch: Sequence[tuple[Current, History]]
                 ) -> tuple[list[tuple[Current, list[StageValue]]], list[tuple[DealRef, str]]]:
    """A batch's deals whose history was read, and the others with why not (what the retry set keeps)."""
    read = [(current, history) for current, history in batch if not isinstance(history, Unread)]
    unread = [(current.ref, history.message) for current, history in batch if isinstance(history, Unread)]
    return read, unread


def one_ahead(batches: Iterator[B], work: Callable[[B], R], in_hand: Callable[[], bool] | None = None
              ) -> Iterator[tuple[B, R]]:
    """(batch, work(batch)) for each batch, in order, with `work` for the next batch running on a helper
    thread while the caller commits and sends the current one.

    Batches are drawn on the caller's thread (drawing them may read the state); `work` must not touch the
    state (events_for does not: it reads Attio). Only this one helper thread calls `work`; what `work` shares
    with other threads (the resolver, which a backfill also fills ahead on a thread of its own) must be
    safe to share.

    With `in_hand`, which says whether the next batch is read already: when it is not (Attio's rate limit or
    its latency sets the pace), the current batch is handed over first, so that the caller commits and sends
    it while the next one is read, instead of after; when it is, the next one is drawn first, while `work`
    runs on the current one.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="ahead")
    try:
        current = next(batches, None)
        pending = pool.submit(work, current) if current is not None else None
        while current is not None and pending is not None:
            if in_hand is not None and not in_hand():
                yield current, pending.result()
                current = next(batches, None)
                pending = pool.submit(work, current) if current is not None else None
                continue
            try:
                upcoming = next(batches, None)
            except BaseException:
                # Drawing the next batch failed (an Attio error, Ctrl-C): the current one is still committed.
                yield current, pending.result()
                raise
            ahead = pool.submit(work, upcoming) if upcoming is not None else None
            yield current, pending.result()
            current, pending = upcoming, ahead
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def known_event_ids(ledger: Ledger, found: Sequence[Found]) -> set[str]:
    """The event ids of these transitions that the ledger has already (found by deal and event id)."""
    return ledger.known_ids([(t.deal.key, t.event_id) for t, _, _ in found])


def record_new(ledger: Ledger, found: Sequence[Found], origin: str) -> Counts:
    """Add the transitions the ledger does not have yet (call inside the batch's transaction)."""
    known = known_event_ids(ledger, found)
    # By event id: a deal read twice in one batch (a repeat the scan forgot) gives its transitions twice.
    rows = list({t.event_id: ledger_row(t, event, origin, reason)
                 for t, event, reason in found if t.event_id not in known}.values())
    ledger.add(rows)
    return Counts(transitions=len(rows), held=sum(1 for row in rows if row["state"] == HELD))
