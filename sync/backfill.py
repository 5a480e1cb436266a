"""`run --backfill`: every deal's history, recording the transitions in [since, until), resumably."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import islice

from tqdm import tqdm

from sync import clock
from sync.events import EventSettings
from sync.models import Counts, Current, Transition, format_time, parse_time
from sync.recording import baseline_rows, events_for, one_ahead, record_new, split_unread
from sync.resolve import Resolver
from sync.source import DealSource, ScanPage, scan_time
from sync.state import State
from sync.state.checkpoints import BASELINE, POLL
from sync.transitions import in_range

log = logging.getLogger(__name__)

# Deals per commit: a killed backfill reads again the batch it was committing, the next one and the histories
# read ahead; the deals of the batches committed before are done.
BATCH = 100
# Passes over the deal list after the first, for deals the offset paging pushed past a page boundary; the
# backfill is finished once a pass finds none.
SWEEPS = 3


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

    A deal whose history cannot be used is not marked done: it waits in the retry set (scope: the backfill's
    id) and the others go on. The backfill is finished only when every deal is done, and when a last pass over
    the deal list finds none that the paging skipped (offsets shift when deals are deleted mid-scan).
    """
    empty = state.checkpoints.get(POLL) is None
    run_id = backfill_id(source, since, until)
    if state.backfills.start(run_id, format_time(since), format_time(until) if until else None):
        log.info("resuming the unfinished backfill since %s", format_time(since))
    else:
        with state.atomic():
            state.retries.clear(run_id)
    total = _count_deals(source) if progress else None
    bar = tqdm(total=total, unit="deal", desc="backfill", disable=not progress, dynamic_ncols=True)
    # When this run's first pass began: the later of Attio's clock and this machine's, so that a clock behind
    # can only make a sweep read more deals, never fewer.
    began: datetime | None = None
    unread: set[str] = set()  # deals that failed in this run: not read again until the next run
    missed = 0

    listed = 0  # deals the first pass found on the list: what a sweep expects to walk
    sweep_pages: Iterator[ScanPage] | None = None

    def todo(sweep: bool, pages: Iterator[ScanPage]) -> Iterator[Current]:
        """The deals not done yet; in a sweep, only those that existed when the first pass began."""
        nonlocal began, missed, listed, sweep_pages
        for page in pages:
            began = began or max(page.date or page.received, page.received)
            fresh = page.currents
            done = state.backfills.done_keys(run_id, [c.ref.key for c in fresh])
            wanted = [c for c in fresh if c.ref.key not in done and c.ref.key not in unread
                      and not (sweep and _created_after(c, began))]
            if empty:
                with state.atomic():
                    baseline = state.checkpoints.get(BASELINE)
                    if baseline is None:
                        # Attio's clock checked against ours; without a readable Date, ours less the tolerance.
                        baseline = format_time(scan_time(page) or page.received - clock.CLOCK_TOLERANCE)
                        state.checkpoints.set(BASELINE, baseline)
                        state.checkpoints.set(POLL, baseline)
                    state.snapshot.save(baseline_rows(wanted if sweep else fresh, parse_time(baseline)))
            if sweep:
                missed += len(wanted)
            else:
                listed += len(fresh)
                bar.update(len(done))
            yield from wanted
            del page, fresh, wanted  # one page in memory at a time
        if not sweep:
            # The list is walked: the sweep's first pages are asked for now, while the last histories are read
            # and recorded, instead of one round trip after another once they are. (It only reads which deals
            # are done once this pass has committed them all.)
            sweep_pages = source.scan(None, rows=listed)

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        return in_range(transitions, since, until)

    def record(currents: Iterator[Current]) -> Iterator[Counts]:
        lookups = ThreadPoolExecutor(1, thread_name_prefix="lookup") if source.far_away() else None
        if lookups is not None:
            currents = _looking_up(currents, lookups, source, resolver, since, until)
        pairs = source.with_histories(currents)
        batches = iter(lambda: list(islice(pairs, BATCH)), [])
        try:
            for batch, found in one_ahead(batches, lambda b: events_for(split_unread(b)[0], select, source,
                                                                        resolver, settings),
                                          lambda: pairs.in_hand(BATCH)):
                read, failed = split_unread(batch)
                keys = [current.ref.key for current, _ in read]
                with state.atomic():
                    counts = record_new(state.ledger, found, origin="backfill")
                    state.backfills.mark_done(run_id, keys)
                    state.retries.remove(run_id, keys)
                    state.retries.add(run_id, failed)
                unread.update(ref.key for ref, _ in failed)
                bar.update(len(batch))
                yield counts + Counts(deals_read=len(read), unread=len(failed))
        finally:
            if lookups is not None:
                lookups.shutdown(wait=False, cancel_futures=True)  # none started after this (a failure, Ctrl-C)
            pairs.close()
            if lookups is not None:
                lookups.shutdown(wait=True)

    try:
        yield from record(todo(False, source.scan(None)))
        for _ in range(SWEEPS):
            missed = 0
            pages, sweep_pages = sweep_pages or source.scan(None, rows=listed), None
            yield from record(todo(True, pages))
            if not missed:
                break
            log.info("backfill: %d deal(s) were pushed past a page boundary of the deal list; read now", missed)
    finally:
        bar.close()
    if unread:
        log.info("backfill: every other deal is done; %d deal(s) could not be read and are not", len(unread))
        return
    if missed:
        log.warning("backfill: the deal list kept shifting under %d passes; run the same command again to finish",
                    SWEEPS + 1)
        return
    with state.atomic():
        state.retries.clear(run_id)
        state.backfills.finish(run_id)


def _looking_up(currents: Iterator[Current], lookups: ThreadPoolExecutor, source: DealSource, resolver: Resolver,
                since: datetime, until: datetime | None) -> Iterator[Current]:
    """The currents, as they come; as each batch's deals go to have their histories read, the people, companies
    and owners of those that can have a transition in range are looked up on `lookups`: deals whose stage was
    last set at or after `since` and that were created before `until`. When Attio is far away, the batch's
    events then find them there, and the last batch does not wait one more round trip once its histories are
    in. Deals whose records come apart from the query (list entries) are looked up with their events, as
    before.

    A lookup that fails here is made again, and its error raised, when the batch's events are built; the
    batches after it are no longer looked up ahead (Attio is failing: the retries are not made twice)."""
    batch: list[Current] = []
    failed = threading.Event()  # set by the first lookup that fails: the ones after it do nothing
    for current in currents:
        batch.append(current)
        if len(batch) == BATCH:
            lookups.submit(_look_up, batch, source, resolver, since, until, failed)
            batch = []
        yield current
    if batch:
        lookups.submit(_look_up, batch, source, resolver, since, until, failed)


def _look_up(batch: list[Current], source: DealSource, resolver: Resolver, since: datetime, until: datetime | None,
             failed: threading.Event) -> None:
    if failed.is_set():
        return
    moved = [c for c in batch if c.stage is not None and c.stage.active_from >= since
             and not (until and _created_after(c, until))]
    try:
        resolver.load(source.deals(moved, fetch=False).values(), owners=True)
    except Exception:
        failed.set()
        log.debug("looking up the people and companies of a batch ahead failed; asked again with its events",
                  exc_info=True)


def _created_after(current: Current, moment: datetime | None) -> bool:
    """The deal was created after `moment`: the polls from then on have it, whatever a backfill reads."""
    created = current.record.get("created_at")
    return bool(created and moment and parse_time(created) >= moment)


def _count_deals(source: DealSource) -> int:
    """How many deals there are, for the progress bar (one query per page of ids, no histories)."""
    return sum(len(page.currents) for page in source.scan(None))
