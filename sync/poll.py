"""`run`: the incremental poll (and, on an empty state, the baseline)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from itertools import islice

from sync.job import Context, baseline_rows, events_for, record_new, snapshot_row
from sync.models import Current, Transition, format_time, parse_time
from sync.transitions import after

log = logging.getLogger(__name__)

POLL, BASELINE = "poll", "baseline"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 100


def _latest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def record_baseline(ctx: Context) -> int:
    """Snapshot every deal's current stage without sending anything; set the checkpoint to Attio's clock
    at the start of the scan. Returns the number of deals recorded."""
    started: datetime | None = None
    latest: datetime | None = None
    count = 0
    for page in ctx.pipeline.scan(None):
        started = started or page.date
        latest = _latest(latest, max((c.stage.active_from for c in page.currents if c.stage), default=None))
        with ctx.store.atomic():
            ctx.store.save_snapshot(baseline_rows(page.currents, started))
        count += len(page.currents)
    checkpoint = format_time(started or latest or EPOCH)
    with ctx.store.atomic():
        ctx.store.set_checkpoint(BASELINE, checkpoint)
        ctx.store.set_checkpoint(POLL, checkpoint)
    ctx.summary.deals_read += count
    return count


def _changed(current: Current, snapshot: dict | None) -> bool:
    if current.stage is None:
        return False
    if snapshot is None:
        return True
    return (snapshot["stage_id"], snapshot["stage_since"]) != (
        current.stage.status_id, format_time(current.stage.active_from))


def poll(ctx: Context) -> None:
    """Read the deals whose stage was written since the checkpoint (less the overlap), record their new
    transitions with the snapshot, batch by batch, then advance the checkpoint."""
    recorded = ctx.store.checkpoint(POLL)
    if recorded is None:
        # Without a baseline every deal would look new and its whole history would be sent.
        raise RuntimeError("no checkpoint: the baseline must be recorded before a poll")
    checkpoint = parse_time(recorded)
    overlap = timedelta(seconds=ctx.config.overlap_seconds)
    baseline = ctx.store.checkpoint(BASELINE)
    # A deal missing from the snapshot was created after the baseline: its history from then on is new.
    floor = parse_time(baseline) - overlap if baseline else None
    started: datetime | None = None
    latest: datetime | None = None
    snapshots: dict[str, dict] = {}

    def changed_deals():  # type: ignore[no-untyped-def]
        nonlocal started, latest
        for page in ctx.pipeline.scan(checkpoint - overlap):
            started = started or page.date
            fresh = page.currents
            ctx.summary.deals_read += len(fresh)
            latest = _latest(latest, max((c.stage.active_from for c in fresh if c.stage), default=None))
            known = ctx.store.snapshot([c.ref.key for c in fresh])
            for current in fresh:
                if _changed(current, known.get(current.ref.key)):
                    snapshots[current.ref.key] = known.get(current.ref.key) or {}
                    yield current

    def select(current: Current, transitions: list[Transition]) -> list[Transition]:
        snapshot = snapshots.pop(current.ref.key, {})
        if snapshot.get("stage_since"):
            return after(transitions, parse_time(snapshot["stage_since"]))
        return after(transitions, floor, inclusive=True)

    pairs = ctx.pipeline.with_histories(changed_deals())
    changed = 0
    try:
        while batch := list(islice(pairs, BATCH)):
            found = events_for(ctx, batch, select)
            with ctx.store.atomic():
                ctx.store.save_snapshot(snapshot_row(current, history) for current, history in batch)
                record_new(ctx, found, origin="poll")
            changed += len(batch)
    finally:
        pairs.close()
    # Attio's own clock at the start of the scan: whatever changes after it is caught next time.
    with ctx.store.atomic():
        ctx.store.set_checkpoint(POLL, format_time(_latest(checkpoint, started or latest) or checkpoint))
    log.info("poll: %d deal(s) with a stage written since %s, %d changed, %d new transition(s)",
             ctx.summary.deals_read, format_time(checkpoint - overlap), changed, ctx.summary.transitions)
