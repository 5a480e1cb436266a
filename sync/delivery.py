"""Sending the ledger's pending events to Usermaven, printing them in a dry run, and releasing held events
whose person is now known."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import TextIO

from sync.errors import (
    DeliveryStopped,
    UsermavenAuthError,
    UsermavenRedirected,
    UsermavenRejected,
    UsermavenUnavailable,
)
from sync.events import for_display, sending_texts, with_identity
from sync.models import Counts, Identity
from sync.resolve import Resolver
from sync.source import DealSource
from sync.state import State
from sync.usermaven import UsermavenClient, batches

log = logging.getLogger(__name__)

# Deals whose held events one run re-checks at most: two chunks, about 6 requests (deals, people, companies).
HELD_RECHECK_DEALS = 400


def release_held(state: State, source: DealSource, resolver: Resolver, detected_before: str,
                 chunk: int = 200, limit: int = HELD_RECHECK_DEALS) -> Counts:
    """Look again at the deal and people of the events held before this run; those with an identity now
    become pending. Events held for less than a day are looked at every run, older ones hourly, and at most
    `limit` deals per run (those checked longest ago first), so however many deals a backfill left held, a
    poll spends a bounded number of requests on them. Works `chunk` deals at a time (flat memory)."""
    record_ids = state.ledger.held_record_ids(detected_before, limit=limit)
    released = 0
    for start in range(0, len(record_ids), chunk):
        released += _release(state, source, resolver, record_ids[start:start + chunk])
    if released:
        log.info("released %d held event(s) whose person now has an identity", released)
    return Counts(released=released)


def _release(state: State, source: DealSource, resolver: Resolver, record_ids: list[str]) -> int:
    by_record: dict[str, list[dict]] = defaultdict(list)
    for row in state.ledger.held_rows(record_ids):
        by_record[row["record_id"]].append(row)
    deals = source.deals_by_id(record_ids)
    resolver.forget_people(p for deal in deals.values() for p in deal.people_ids)
    resolver.load(deals.values())
    released = 0
    with state.atomic():
        for record_id, rows in by_record.items():
            deal = deals.get(record_id)
            identity: Identity | None = None
            reason: str | None = "the deal no longer exists in Attio"
            if deal is not None:
                identity, reason = resolver.identity(deal)
            for row in rows:
                if identity is not None:
                    state.ledger.release(row["event_id"], with_identity(row["payload"], identity))
                    released += 1
                elif reason != row["reason"]:
                    state.ledger.hold(row["event_id"], reason or "no identity")
        state.ledger.mark_checked([row["event_id"] for rows in by_record.values() for row in rows])
    return released


def deliver(state: State, usermaven: UsermavenClient, api_key: str, min_batch: int = 1) -> Iterator[Counts]:
    """Send every pending event, oldest first, in batches; mark each batch sent when Usermaven says 200,
    and yield what each request did.

    With `min_batch` above 1 only full batches go out and the tail waits for the next call (a backfill
    sends as it reads without a half-empty request per step). A batch Usermaven rejects (400) is retried
    one event at a time so that only the bad events are marked failed. Raises DeliveryStopped when
    Usermaven is unreachable or refuses the token.
    """
    for chunk in state.ledger.iter_pending(decode=False):
        for indexes in batches([row["payload"] for row in chunk], sizes=[row["payload_bytes"] for row in chunk]):
            if len(indexes) < min_batch:
                return
            yield _send(state, usermaven, api_key, [chunk[i] for i in indexes])


def print_pending(state: State, out: TextIO) -> Iterator[Counts]:
    """A dry run's delivery: print every pending event once (one JSON object per line) instead of sending,
    yielding what was printed. The dry run's state keeps its writes apart from the file (state/dry.py): the
    printed rows are marked sent there, so they are printed once. A closed output (`| head`) raises
    BrokenPipeError after the count of what it took."""
    for chunk in state.ledger.iter_pending():
        printed = 0
        try:
            for row in chunk:
                out.write(json.dumps(for_display(row["payload"]), ensure_ascii=False) + "\n")
                out.flush()  # line by line: the count is what the reader was given
                printed += 1
        except BrokenPipeError:
            yield Counts(printed=printed)
            raise
        with state.atomic():
            state.ledger.mark_sent([row["event_id"] for row in chunk])
        yield Counts(printed=printed)


def _send(state: State, usermaven: UsermavenClient, api_key: str, rows: list[dict]) -> Counts:
    ids = [row["event_id"] for row in rows]
    # The stored text, api_key spliced in: the bytes `for_sending` and `send` would give, without decoding
    # and encoding every event again.
    events = sending_texts([row["payload"] for row in rows], api_key)
    try:
        usermaven.send_encoded(events)
    except (UsermavenAuthError, UsermavenRedirected) as exc:
        raise DeliveryStopped(str(exc), refused=True) from None
    except UsermavenUnavailable as exc:
        with state.atomic():
            state.ledger.note_attempt(ids, str(exc))
        raise DeliveryStopped(str(exc), maybe_received=exc.maybe_received) from None
    except UsermavenRejected as exc:
        if len(rows) > 1:
            counts = Counts()
            for row in rows:
                counts += _send(state, usermaven, api_key, [row])
            return counts
        with state.atomic():
            state.ledger.mark_failed(ids, str(exc))
        log.error("event %s (deal %s → %s) failed: %s", ids[0], rows[0]["deal_key"], rows[0]["to_stage"], exc)
        return Counts(failed=1)
    with state.atomic():
        state.ledger.mark_sent(ids)
    return Counts(sent=len(ids))
