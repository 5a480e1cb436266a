"""`run --backfill`: every deal's history, sending the transitions in [since, until), resumably."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice

from tqdm import tqdm

from sync.delivery import DeliveryStopped, deliver
from sync.job import Context, baseline_rows, events_for, record_new
from sync.models import Current, Transition, format_time, parse_time
from sync.poll import BASELINE, POLL
from sync.transitions import in_range
from sync.usermaven import BATCH_EVENTS

log = logging.getLogger(__name__)

BATCH = 50  # deals per commit: what a killed backfill reads again at most


def backfill_id(ctx: Context, since: datetime, until: datetime | None) -> str:
    """The same arguments on the same pipeline give the same id, so a second start resumes the first."""
    target, identifier = ctx.pipeline.target
    key = f"{target}/{identifier}/{ctx.pipeline.attribute}/{format_time(since)}/{until and format_time(until)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def backfill(ctx: Context, since: datetime, until: datetime | None) -> None:
    """Walk every deal, record the transitions in range that the ledger lacks, and send them as it goes.

    Each batch of deals is committed with its ledger rows and marked done, so a killed backfill started
    again with the same arguments skips the deals it finished. On an empty state it also records the
    baseline snapshot, and sets the checkpoint to the moment it began (Attio's clock) as soon as it knows it:
    polls run meanwhile, or after it was killed, take every change from then on, and the deals not in the
    snapshot yet count as new from then on.
    """
    store = ctx.store
    empty = store.checkpoint(POLL) is None
    run_id = backfill_id(ctx, since, until)
    if store.start_backfill(run_id, format_time(since), until and format_time(until)):
        log.info("resuming the unfinished backfill since %s", format_time(since))
    total = _count_deals(ctx) if ctx.show_progress else None
    bar = tqdm(total=total, unit="deal", desc="backfill", disable=not ctx.show_progress, dynamic_ncols=True)

    def todo() -> Iterator[Current]:
        for page in ctx.pipeline.scan(None):
            fresh = page.currents
            if empty:
                with store.atomic():
                    began = store.checkpoint(BASELINE)
                    if began is None:
                        # Attio always sends a Date; the local clock is only a fallback.
                        began = format_time(page.date or datetime.now(UTC))
                        store.set_checkpoint(BASELINE, began)
                        store.set_checkpoint(POLL, began)
                    store.save_snapshot(baseline_rows(fresh, parse_time(began)))
            done = store.done_keys(run_id, [c.ref.key for c in fresh])
            bar.update(len(done))
            yield from (c for c in fresh if c.ref.key not in done)
            del page, fresh  # one page in memory at a time

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        return in_range(transitions, since, until)

    delivering = True
    pairs = ctx.pipeline.with_histories(todo())
    try:
        while batch := list(islice(pairs, BATCH)):
            found = events_for(ctx, batch, select)
            with store.atomic():
                record_new(ctx, found, origin="backfill")
                store.mark_done(run_id, (current.ref.key for current, _ in batch))
            bar.update(len(batch))
            ctx.summary.deals_read += len(batch)
            if delivering:
                delivering = _deliver(ctx)
    finally:
        pairs.close()
        bar.close()
    store.finish_backfill(run_id)  # the tail of pending events goes out with the command's final delivery


def _deliver(ctx: Context) -> bool:
    """Send the full batches pending; False once Usermaven stops taking events (the rest stay pending)."""
    try:
        deliver(ctx, min_batch=BATCH_EVENTS)
    except DeliveryStopped as exc:
        if exc.refused:
            raise  # a refused token stops the backfill; what was committed stays, and it resumes later
        ctx.summary.errors.append(str(exc))
        log.error("%s; the backfill goes on recording, and the events stay pending for the next run", exc)
        return False
    return True


def _count_deals(ctx: Context) -> int:
    """How many deals there are, for the progress bar (one query per page of ids, no histories)."""
    return sum(len(page.currents) for page in ctx.pipeline.scan(None))
