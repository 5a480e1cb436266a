"""`run --backfill`: every deal's history, recording the transitions in [since, until), resumably."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import datetime
from itertools import islice

from tqdm import tqdm

from sync import clock
from sync.events import EventSettings
from sync.models import Counts, Current, Transition, format_time, parse_time
from sync.recording import baseline_rows, events_for, record_new
from sync.resolve import Resolver
from sync.source import DealSource, scan_time
from sync.state import State
from sync.state.checkpoints import BASELINE, POLL
from sync.transitions import in_range

log = logging.getLogger(__name__)

BATCH = 50  # deals per commit: what a killed backfill reads again at most


def backfill_id(source: DealSource, since: datetime, until: datetime | None) -> str:
    """The same arguments on the same pipeline give the same id, so a second start resumes the first."""
    target, identifier = source.target
    key = f"{target}/{identifier}/{source.attribute}/{format_time(since)}/{format_time(until) if until else None}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def backfill(state: State, source: DealSource, resolver: Resolver, settings: EventSettings, since: datetime,
             until: datetime | None, progress: bool = False) -> Iterator[Counts]:
    """Walk every deal and record the transitions in range that the ledger lacks, yielding the counts of
    each committed batch (the caller sends what is pending between batches).

    Each batch of deals is committed with its ledger rows and marked done, so a killed backfill started
    again with the same arguments skips the deals it finished. On an empty state it also records the
    baseline snapshot, and sets the checkpoint to the moment it began (Attio's clock) as soon as it knows it:
    polls run meanwhile, or after it was killed, take every change from then on, and the deals not in the
    snapshot yet count as new from then on.
    """
    empty = state.checkpoints.get(POLL) is None
    run_id = backfill_id(source, since, until)
    if state.backfills.start(run_id, format_time(since), format_time(until) if until else None):
        log.info("resuming the unfinished backfill since %s", format_time(since))
    total = _count_deals(source) if progress else None
    bar = tqdm(total=total, unit="deal", desc="backfill", disable=not progress, dynamic_ncols=True)

    def todo() -> Iterator[Current]:
        for page in source.scan(None):
            fresh = page.currents
            if empty:
                with state.atomic():
                    began = state.checkpoints.get(BASELINE)
                    if began is None:
                        # Attio's clock checked against ours; without a readable Date, ours less the tolerance.
                        began = format_time(scan_time(page) or page.received - clock.CLOCK_TOLERANCE)
                        state.checkpoints.set(BASELINE, began)
                        state.checkpoints.set(POLL, began)
                    state.snapshot.save(baseline_rows(fresh, parse_time(began)))
            done = state.backfills.done_keys(run_id, [c.ref.key for c in fresh])
            bar.update(len(done))
            yield from (c for c in fresh if c.ref.key not in done)
            del page, fresh  # one page in memory at a time

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        return in_range(transitions, since, until)

    pairs = source.with_histories(todo())
    try:
        while batch := list(islice(pairs, BATCH)):
            found = events_for(batch, select, source, resolver, settings)
            with state.atomic():
                counts = record_new(state.ledger, found, origin="backfill")
                state.backfills.mark_done(run_id, (current.ref.key for current, _ in batch))
            bar.update(len(batch))
            yield counts + Counts(deals_read=len(batch))
    finally:
        pairs.close()
        bar.close()
    state.backfills.finish(run_id)


def _count_deals(source: DealSource) -> int:
    """How many deals there are, for the progress bar (one query per page of ids, no histories)."""
    return sum(len(page.currents) for page in source.scan(None))
