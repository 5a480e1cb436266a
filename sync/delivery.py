"""Sending the ledger's pending events to Usermaven, and releasing held ones whose person is now known."""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from sync.events import for_display, for_sending, with_identity
from sync.job import Context
from sync.usermaven import UsermavenAuthError, UsermavenRejected, UsermavenUnavailable, batches

log = logging.getLogger(__name__)


class DeliveryStopped(Exception):
    """Usermaven cannot take events now (down, or the token refused); the rest stay pending."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused  # 401/403: a configuration problem, not a passing one


def release_held(ctx: Context, detected_before: str, chunk: int = 200) -> None:
    """Look again at the deal and people of the events held before this run; those with an identity now
    become pending. Events held for less than a day are looked at every run, older ones hourly, so a year
    of held deals does not cost every poll a full re-read. Works `chunk` deals at a time (flat memory)."""
    record_ids = ctx.store.held_record_ids(detected_before)
    for start in range(0, len(record_ids), chunk):
        _release(ctx, record_ids[start:start + chunk])
    if ctx.summary.released:
        log.info("released %d held event(s) whose person now has an identity", ctx.summary.released)


def _release(ctx: Context, record_ids: list[str]) -> None:
    by_record: dict[str, list[dict]] = defaultdict(list)
    for row in ctx.store.held_rows(record_ids):
        by_record[row["record_id"]].append(row)
    deals = ctx.pipeline.deals_by_id(record_ids)
    ctx.resolver.forget_people(p for deal in deals.values() for p in deal.people_ids)
    ctx.resolver.load(deals.values())
    with ctx.store.atomic():
        for record_id, rows in by_record.items():
            deal = deals.get(record_id)
            if deal is None:
                identity, reason = None, "the deal no longer exists in Attio"
            else:
                identity, reason = ctx.resolver.identity(deal)
            for row in rows:
                if identity is not None:
                    ctx.store.release(row["event_id"], with_identity(row["payload"], identity))
                    ctx.summary.released += 1
                elif reason != row["reason"]:
                    ctx.store.hold(row["event_id"], reason or "no identity")
        ctx.store.mark_checked([row["event_id"] for rows in by_record.values() for row in rows])


def deliver(ctx: Context, min_batch: int = 1) -> None:
    """Send every pending event, oldest first, in batches; mark each batch sent when Usermaven says 200.

    With `min_batch` above 1 only full batches go out and the tail waits for the next call (a backfill
    sends as it reads without a half-empty request per step). A batch Usermaven rejects (400) is retried
    one event at a time so that only the bad events are marked failed. Raises DeliveryStopped when
    Usermaven is unreachable or refuses the token. A dry run prints the events instead, once each (its
    state is a throwaway copy, where they are marked sent).
    """
    for chunk in ctx.store.iter_pending():
        if ctx.dry_run:
            for row in chunk:
                ctx.out.write(json.dumps(for_display(row["payload"]), ensure_ascii=False) + "\n")
            ctx.out.flush()
            with ctx.store.atomic():
                ctx.store.mark_sent([row["event_id"] for row in chunk])
            ctx.summary.printed += len(chunk)
            continue
        for indexes in batches([row["payload"] for row in chunk]):
            if len(indexes) < min_batch:
                return
            _send([chunk[i] for i in indexes], ctx)


def _send(rows: list[dict], ctx: Context) -> None:
    ids = [row["event_id"] for row in rows]
    events = [for_sending(row["payload"], ctx.config.usermaven_api_key) for row in rows]
    try:
        ctx.usermaven.send(events)
    except UsermavenAuthError as exc:
        raise DeliveryStopped(str(exc), refused=True) from None
    except UsermavenUnavailable as exc:
        with ctx.store.atomic():
            ctx.store.note_attempt(ids, str(exc))
        raise DeliveryStopped(str(exc)) from None
    except UsermavenRejected as exc:
        if len(rows) > 1:
            for row in rows:
                _send([row], ctx)
            return
        with ctx.store.atomic():
            ctx.store.mark_failed(ids, str(exc))
        ctx.summary.failed += 1
        log.error("event %s (deal %s → %s) failed: %s", ids[0], rows[0]["deal_key"], rows[0]["to_stage"], exc)
        return
    with ctx.store.atomic():
        ctx.store.mark_sent(ids)
    ctx.summary.sent += len(ids)
