"""Sending the ledger's pending events to Usermaven, printing them in a dry run, and releasing held events
whose person is now known."""

from __future__ import annotations

import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TextIO

from sync.errors import (
    DeliveryStopped,
    UsermavenAuthError,
    UsermavenError,
    UsermavenRejected,
    UsermavenUnavailable,
    UsermavenWrongUrl,
)
from sync.events import for_display, sending_texts, with_identity
from sync.models import Counts, Identity, format_time
from sync.resolve import Resolver
from sync.source import DealSource
from sync.state import State
from sync.state.ledger import keys, row_key
from sync.usermaven import BATCH_EVENTS, UsermavenClient, batches

log = logging.getLogger(__name__)

# Deals whose held events one run re-checks at most: two chunks, about 6 requests (deals, people, companies).
HELD_RECHECK_DEALS = 400
# Batches a backfill sends ahead of marking them sent: what a crash can make the next run send again.
SEND_AHEAD = 8
# An event whose send failed after it may have reached Usermaven (a timeout, a 500) waits before it is sent again:
# RESEND_AFTER after the first such failure, twice as long after each next one, MAX_WAIT at most. It goes in a
# batch half as large each time (alone after five), after the other events of its run, so that one event
# Usermaven always fails on is soon alone and holds back no other. It is marked failed, and not sent again, after
# MAX_UNCONFIRMED such sends in runs where Usermaven took other events (the event is the problem; about 20 hours
# of waits), or after GIVE_UP_AFTER in any case (an outage of about four days): its resends are bounded.
RESEND_AFTER = timedelta(minutes=1)
MAX_WAIT = timedelta(hours=6)
MAX_UNCONFIRMED = 12
GIVE_UP_AFTER = 24
# Such a failure does not stop the run's delivery: the others go on. This many in a row do: Usermaven is failing,
# not some events.
STOP_AFTER = 2


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
    lookups = resolver.load(deals.values())
    released = 0
    with state.atomic():
        for record_id, rows in by_record.items():
            deal = deals.get(record_id)
            identity: Identity | None = None
            reason: str | None = "the deal no longer exists in Attio"
            if deal is not None:
                identity, reason = lookups.identity(deal)
            for row in rows:
                if identity is not None:
                    state.ledger.release(row_key(row), with_identity(row["payload"], identity))
                    released += 1
                elif reason != row["reason"]:
                    state.ledger.hold(row_key(row), reason or "no identity")
        state.ledger.mark_checked([key for rows in by_record.values() for key in keys(rows)])
    return released


def deliver(state: State, usermaven: UsermavenClient, api_key: str, min_batch: int = 1, due: str | None = None,
            in_a_row: int = 0, taken: int = 0, room: Callable[[], bool] | None = None) -> Iterator[Counts]:
    """Send every pending event due at `due` (default: now), oldest first, in batches; mark each batch sent when
    Usermaven says 200, and yield what each request did. A run passes the time it began (what fails in it is not
    due again in it), and what its earlier sends met: `in_a_row` failures that may have arrived, `taken` events;
    and `room`, asked before each batch: whether its marks can still be written (else delivery ends there).

    With `min_batch` above 1 only full batches go out and the tail waits for the next call (a backfill
    sends as it reads without a half-empty request per step). A batch Usermaven rejects (400) is retried
    one event at a time so that only the bad events are marked failed. A send that may have arrived leaves its
    events waiting (see RESEND_AFTER) and the others go on; at the end the last such failure is raised as
    DeliveryStopped. Raises it at once when Usermaven is unreachable, refuses the token, or fails STOP_AFTER
    sends in a row.
    """
    last: DeliveryStopped | None = None
    for rows in _pending_batches(state, min_batch, due=due):
        if room is not None and not room():
            break
        try:
            for counts in _send(state, usermaven, api_key, rows, taken > 0):
                taken += counts.sent
                in_a_row = 0 if counts.sent else in_a_row
                yield counts
        except DeliveryStopped as exc:
            in_a_row += 1
            if exc.refused or not exc.maybe_received or in_a_row >= STOP_AFTER:
                raise
            last = exc
    if last is not None:
        raise last  # everything else due was sent: the run reports the failure


def _pending_batches(state: State, min_batch: int, queued: Collection[str] = (), due: str | None = None
                     ) -> Iterator[list[dict]]:
    """The pending rows due at `due` in Usermaven batches, oldest first, without the `queued` ones (left out by
    the query, as they stand when it begins); it ends at the first batch smaller than `min_batch`, which waits
    for the next call. Events sent before without a confirmation (see RESEND_AFTER) come after all the others,
    in smaller batches, and only when `min_batch` is 1 (a run's last delivery)."""
    for rows in state.ledger.iter_pending(decode=False, exclude=queued, due=due, unconfirmed=False):
        for batch in _batched(rows, BATCH_EVENTS):
            if len(batch) < min_batch:
                return
            yield batch
    if min_batch > 1:
        return
    for rows in state.ledger.iter_pending(decode=False, exclude=queued, due=due, unconfirmed=True):
        by_sends: dict[int, list[dict]] = defaultdict(list)
        for row in rows:
            by_sends[row["unconfirmed"]].append(row)
        for sends, group in sorted(by_sends.items()):
            yield from _batched(group, max(1, BATCH_EVENTS >> sends))


def _batched(rows: list[dict], max_events: int) -> Iterator[list[dict]]:
    """The rows in Usermaven batches of at most `max_events` (and BATCH_BYTES)."""
    for indexes in batches([row["payload"] for row in rows], max_events=max_events,
                           sizes=[row["payload_bytes"] for row in rows]):
        yield [rows[i] for i in indexes]


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
            state.ledger.mark_sent(keys(chunk))
        yield Counts(printed=printed)


def _send(state: State, usermaven: UsermavenClient, api_key: str, rows: list[dict], took_others: bool = False
          ) -> Iterator[Counts]:
    # The stored text, api_key spliced in: the bytes `for_sending` and `send` would give, without decoding
    # and encoding every event again.
    try:
        usermaven.send_encoded(sending_texts([row["payload"] for row in rows], api_key))
    except UsermavenError as exc:
        yield from _not_taken(state, usermaven, api_key, rows, exc, took_others)
        return
    yield _taken(state, rows)


def _taken(state: State, rows: list[dict]) -> Counts:
    """Usermaven answered 200 for these rows: marked sent."""
    with state.atomic():
        state.ledger.mark_sent(keys(rows))
    return Counts(sent=len(rows))


def _not_taken(state: State, usermaven: UsermavenClient, api_key: str, rows: list[dict], exc: UsermavenError,
               took_others: bool = False) -> Iterator[Counts]:
    """Usermaven did not take these rows: DeliveryStopped when it cannot take events now, or (a rejected batch)
    the rows sent again one by one so that only the bad ones are marked failed. What each step did is yielded
    as it is done, so that what was sent before a stop is counted. `took_others`: Usermaven took other events
    in this run (see MAX_UNCONFIRMED)."""
    if isinstance(exc, UsermavenAuthError | UsermavenWrongUrl):
        raise DeliveryStopped(str(exc), refused=True) from None
    if isinstance(exc, UsermavenRejected):
        if len(rows) > 1:
            for row in rows:
                yield from _send(state, usermaven, api_key, [row], took_others)
            return
        with state.atomic():
            state.ledger.mark_failed(keys(rows), str(exc))
        row = rows[0]
        log.error("event %s (deal %s → %s) failed: %s", row["event_id"], row["deal_key"], row["to_stage"], exc)
        yield Counts(failed=1)
        return
    maybe_received = isinstance(exc, UsermavenUnavailable) and exc.maybe_received
    if maybe_received:
        yield _unconfirmed(state, rows, str(exc), took_others)
    else:
        with state.atomic():
            state.ledger.note_attempt(keys(rows), str(exc))
    raise DeliveryStopped(str(exc), maybe_received=maybe_received) from None


def _unconfirmed(state: State, rows: list[dict], error: str, took_others: bool) -> Counts:
    """A send of these rows failed after it may have reached Usermaven: each waits to be sent again, or is marked
    failed after MAX_UNCONFIRMED such sends (`took_others`) or GIVE_UP_AFTER (see RESEND_AFTER)."""
    now = datetime.now(UTC)
    limit = MAX_UNCONFIRMED if took_others else GIVE_UP_AFTER
    waiting: dict[str, list[dict]] = defaultdict(list)  # rows by when they may be sent again
    given_up: list[dict] = []
    for row in rows:
        sends = row["unconfirmed"] + 1
        if sends >= limit:
            given_up.append(row)
        else:
            waiting[resend_at(sends, now)].append(row)
    with state.atomic():
        for retry_at, waiting_rows in waiting.items():
            state.ledger.note_unconfirmed(keys(waiting_rows), error, retry_at)
        if given_up:
            state.ledger.give_up(keys(given_up),
                                 f"{error}; sent {limit} times, each time it may have arrived: not sent again "
                                 "(replay the deal to queue it again)")
    for retry_at, waiting_rows in waiting.items():
        log.warning("%s: %d event(s) may have reached Usermaven; sent again from %s UTC", error, len(waiting_rows),
                    retry_at[:19].replace("T", " "))
    for row in given_up:
        log.error("event %s (deal %s → %s) failed: Usermaven failed %d times after it may have arrived (%s); "
                  "not sent again", row["event_id"], row["deal_key"], row["to_stage"], limit, error)
    return Counts(failed=len(given_up))


def resend_at(sends: int, now: datetime) -> str:
    """When an event may be sent again after `sends` sends that may have arrived: RESEND_AFTER after the first,
    twice as long after each one more, MAX_WAIT at most."""
    return format_time(now + min(RESEND_AFTER * 2 ** (sends - 1), MAX_WAIT))


class _Skipped(Exception):
    """A batch not sent, as delivery stopped on an earlier one: it stays pending."""


class Sender:
    """A backfill's delivery: full batches sent on a thread of their own, one at a time and in order, while
    the caller's thread records the next deals (Usermaven's answer and the caller's work overlap).

    The ledger's order holds: rows are read from the state, so only committed rows are sent, and they are
    marked sent (on the caller's thread, which owns the state's connection) only after Usermaven answered 200.
    At most `ahead` batches are sent and not yet marked; `send_full_batches` marks what finished each time it
    is called (after every committed batch of deals), so a crash makes the next run send again only those,
    with the same event ids. After a failure that stops delivery the batches queued behind it are not sent.
    The run's first batch is waited for, so that a refused token stops the backfill at its first batch.
    `close` (always, in a `finally`) waits for the batch on the wire and settles it."""

    def __init__(self, state: State, usermaven: UsermavenClient, api_key: str, min_batch: int = BATCH_EVENTS,
                 ahead: int | None = None):
        self.state, self.usermaven, self.api_key = state, usermaven, api_key
        self.min_batch, self.ahead = min_batch, ahead or SEND_AHEAD
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="usermaven")
        self._queued: deque[tuple[list[dict], Future[None]]] = deque()
        self._ids: set[str] = set()  # event ids queued or on the wire: not read as pending again
        self._halted = False
        self._answered = False  # Usermaven answered a batch of this run
        self.closed = Counts()  # what `close` settled
        self.stopped: DeliveryStopped | None = None  # the failure `close` settled, if any

    def send_full_batches(self) -> Iterator[Counts]:
        """Settle the batches that finished, then queue every full batch of pending events not queued yet.
        Raises DeliveryStopped as `deliver` does, once the batches before the failed one are settled."""
        yield from self._settle(wait=False)
        for batch in _pending_batches(self.state, self.min_batch, self._ids):
            while len(self._queued) >= self.ahead:
                yield from self._settle_first()
            self._ids.update(row["event_id"] for row in batch)
            self._queued.append((batch, self._pool.submit(self._post, [row["payload"] for row in batch])))
            if not self._answered:
                # The run's first batch is waited for: a refused token stops the backfill at once.
                yield from self._settle(wait=True)

    def finish(self) -> Iterator[Counts]:
        """Wait for every queued batch and settle it."""
        yield from self._settle(wait=True)

    def close(self) -> None:
        """Send nothing more; the batch on the wire is waited for and settled (marked sent if Usermaven took it,
        left pending otherwise), so that nothing is both sent and pending when the run goes on to its end.
        What settling did is in `closed`, counted as it is done (a second Ctrl-C may stop `close` midway)."""
        self._halted = True
        try:
            self._drain()
        finally:
            self._pool.shutdown(wait=True)
            # Interrupted above (a second Ctrl-C): the worker has finished now; what Usermaven took is marked,
            # or the run's last delivery would send it again.
            self._drain()

    def _drain(self) -> None:
        for counts in self._settle(wait=True, quiet=True):
            self.closed += counts

    def _post(self, stored: list[str]) -> None:
        """Send the events (their stored texts) on the worker thread, the API key spliced in there too."""
        if self._halted:
            raise _Skipped
        try:
            self.usermaven.send_encoded(sending_texts(stored, self.api_key))
        except UsermavenRejected:
            raise  # only these events: the batches behind it go on
        except UsermavenError:
            self._halted = True
            raise

    def _settle(self, wait: bool, quiet: bool = False) -> Iterator[Counts]:
        """Settle the finished batches at the front of the queue (all of them, waiting, with `wait`)."""
        while self._queued and (wait or self._queued[0][1].done()):
            try:
                yield from self._settle_first()
            except DeliveryStopped as exc:
                if not quiet:
                    raise
                self.stopped = exc  # closing: the caller reports it

    def _settle_first(self) -> Iterator[Counts]:
        """Settle the first batch, waiting for it, and with it every batch behind it that Usermaven took
        already: marked sent together, in one commit."""
        rows, future = self._queued[0]
        self._answered = True
        try:
            future.result()
        except _Skipped:
            self._forget(rows)
            yield Counts()
            return
        except UsermavenError as exc:
            self._forget(rows)
            if self._halted and isinstance(exc, UsermavenRejected):
                # Stopping (a failure, Ctrl-C, a full disk): its events are not sent one by one now; they stay
                # pending, for the run's last delivery if it may send.
                yield Counts()
                return
            yield from _not_taken(self.state, self.usermaven, self.api_key, rows, exc)
            return
        taken = [rows]
        for more, done in islice(self._queued, 1, None):
            if not done.done() or done.exception() is not None:
                break
            taken.append(more)
        marked = _taken(self.state, [row for each in taken for row in each])
        for each in taken:
            self._forget(each)
        yield marked

    def _forget(self, rows: list[dict]) -> None:
        self._queued.popleft()
        self._ids.difference_update(row["event_id"] for row in rows)
