"""`run`: the incremental poll (and, on an empty state, the baseline)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

from sync import clock
from sync.events import EventSettings
from sync.models import Counts, Current, Transition, format_time, parse_time
from sync.recording import baseline_rows, events_for, one_ahead, record_new, snapshot_row, split_unread
from sync.resolve import Resolver
from sync.source import DealSource, scan_time
from sync.state import State
from sync.state.checkpoints import BASELINE, POLL
from sync.state.retries import POLL_SCOPE
from sync.transitions import after

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 100


def _not_ahead(moment: datetime, received: datetime | None) -> datetime:
    """A checkpoint is never later than this machine's clock plus the tolerance, whatever Attio's data says."""
    return clock.checked(moment, received) if received else moment


def _latest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def record_baseline(state: State, source: DealSource) -> Counts:
    """Snapshot every deal's current stage without sending anything; set the checkpoint to Attio's clock
    at the start of the scan. Returns the number of deals recorded (as `deals_read`)."""
    started: datetime | None = None
    received: datetime | None = None
    latest: datetime | None = None
    count = 0
    for page in source.scan(None):
        if received is None:
            started, received = scan_time(page), page.received
        latest = _latest(latest, max((c.stage.active_from for c in page.currents if c.stage), default=None))
        with state.atomic():
            state.snapshot.save(baseline_rows(page.currents, started))
        count += len(page.currents)
    checkpoint = format_time(_not_ahead(started or latest or EPOCH, received))
    with state.atomic():
        state.checkpoints.set(BASELINE, checkpoint)
        state.checkpoints.set(POLL, checkpoint)
    return Counts(deals_read=count)


def _changed(current: Current, snapshot: dict | None) -> bool:
    if current.stage is None:
        return False
    if snapshot is None:
        return True
    return (snapshot["stage_id"], snapshot["stage_since"]) != (
        current.stage.status_id, format_time(current.stage.active_from))


def poll(state: State, source: DealSource, resolver: Resolver, settings: EventSettings,
         overlap: timedelta) -> Iterator[Counts]:
    """Read the deals whose stage was written since the checkpoint (less `overlap`) and those in the retry set,
    record their new transitions with the snapshot batch by batch (yielding each committed batch's counts),
    then advance the checkpoint — only once every batch is committed, so a run that stops early leaves it where
    it was. A deal whose history cannot be used goes to the retry set with its batch instead of stopping it."""
    recorded = state.checkpoints.get(POLL)
    if recorded is None:
        # Without a baseline every deal would look new and its whole history would be sent.
        raise RuntimeError("no checkpoint: the baseline must be recorded before a poll")
    checkpoint = parse_time(recorded)
    now = clock.local_now()
    if checkpoint > now + clock.CLOCK_TOLERANCE:
        # Set by an earlier version that trusted any Date: polling from it would miss every change until then.
        log.warning("the checkpoint %s is ahead of this machine's clock; polling from now instead. Changes made "
                    "since the clock went wrong may be missing: run a backfill over those days", recorded)
        checkpoint = now
    baseline = state.checkpoints.get(BASELINE)
    # A deal missing from the snapshot was created after the baseline: its history from then on is new.
    floor = parse_time(baseline) - overlap if baseline else None
    started: datetime | None = None
    received: datetime | None = None
    latest: datetime | None = None
    snapshots: dict[str, dict] = {}
    listed = 0

    retry = {ref.key: ref for ref in state.retries.refs(POLL_SCOPE)}
    unread_before_histories: list[str] = []

    def changed_deals() -> Iterator[Current]:
        nonlocal started, received, latest, listed
        for page in source.scan(checkpoint - overlap):
            if received is None:
                started, received = scan_time(page), page.received
            fresh = page.currents
            listed += len(fresh)
            latest = _latest(latest, max((c.stage.active_from for c in fresh if c.stage), default=None))
            known = state.snapshot.rows([c.ref.key for c in fresh])
            for current in fresh:
                if current.ref.key in snapshots:
                    continue  # a repeat the scan no longer remembered, of a deal this poll is reading
                if retry.pop(current.ref.key, None) or _changed(current, known.get(current.ref.key)):
                    snapshots[current.ref.key] = known.get(current.ref.key) or {}
                    yield current
        # The deals earlier polls could not read, which the scan did not bring back: their current stage (so that
        # a history behind it is caught again), then their history.
        leftover = list(retry.values())
        if not leftover:
            return
        found, failed = source.currents(leftover)
        if failed:
            # Not even its current stage could be read: it stays in the retry set, and the others go on.
            with state.atomic():
                state.retries.add(POLL_SCOPE, failed)
            unread_before_histories.extend(ref.key for ref, _ in failed)
        gone = sorted({ref.key for ref in leftover} - {current.ref.key for current in found}
                      - {ref.key for ref, _ in failed})
        if gone:
            log.warning("deal(s) %s, to be read again, were deleted in Attio; dropped from the retry set",
                        ", ".join(gone))
            with state.atomic():
                state.retries.remove(POLL_SCOPE, gone)
        listed += len(found)
        known = state.snapshot.rows([current.ref.key for current in found])
        for current in found:
            snapshots[current.ref.key] = known.get(current.ref.key) or {}
            yield current

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        snapshot = snapshots.pop(current.ref.key, {})
        if snapshot.get("stage_since"):
            return after(transitions, parse_time(snapshot["stage_since"]))
        return after(transitions, floor, inclusive=True)

    pairs = source.with_histories(changed_deals())
    batches = iter(lambda: list(islice(pairs, BATCH)), [])
    changed = transitions = reported = unreadable = 0
    try:
        for batch, found in one_ahead(batches, lambda b: events_for(split_unread(b)[0], select, source, resolver,
                                                                    settings)):
            read, unread = split_unread(batch)
            with state.atomic():
                state.snapshot.save(snapshot_row(current, history) for current, history in read)
                counts = record_new(state.ledger, found, origin="poll")
                # A deal that could not be read waits in the retry set: the checkpoint may then pass it.
                state.retries.remove(POLL_SCOPE, [current.ref.key for current, _ in read])
                state.retries.add(POLL_SCOPE, unread)
            for ref, _ in unread:
                snapshots.pop(ref.key, None)
            changed += len(batch)
            transitions += counts.transitions
            unreadable += len(unread)
            yield counts + Counts(deals_read=listed - reported, unread=len(unread))
            reported = listed
    finally:
        pairs.close()
    # Attio's own clock at the start of the scan (checked against ours): whatever changes after it is caught
    # next time. Without a readable Date, the latest stage write the scan saw.
    moment = _not_ahead(_latest(checkpoint, started or latest) or checkpoint, received)
    with state.atomic():
        state.checkpoints.set(POLL, format_time(moment))
    yield Counts(deals_read=listed - reported, unread=len(unread_before_histories))
    unreadable += len(unread_before_histories)
    log.info("poll: %d deal(s) with a stage written since %s or to read again, %d changed, %d new transition(s), "
             "%d to read again next run", listed, format_time(checkpoint - overlap), changed, transitions, unreadable)
