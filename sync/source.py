"""Where deals and their stages are read from: the deal object itself, or a pipeline list's entries."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from urllib.parse import quote

from sync import clock
from sync.attio import (
    AttioClient,
    Page,
    active_from_filter,
    check_stage_event_types,
    current_stage,
    deal_from_record,
    list_parent_problem,
    pick_values,
    reading,
    stage_attribute_slug,
    stage_value,
    user_id_attribute_slug,
)
from sync.attributes import AttributeProblem, EventAttribute, select_attributes
from sync.config import Config
from sync.errors import AttioAuthError, AttioError, AttioNotFound, SetupError
from sync.events import EVENT_ATTRIBUTE_KEYS
from sync.http import InFlight
from sync.models import Current, Deal, DealRef, StageValue, format_time
from sync.transitions import behind, latest

log = logging.getLogger(__name__)


# History reads in a row that fail with no answer about the deal itself (5xx, 429 or no connection, after every
# retry) before the run stops: Attio is down, and putting every deal aside would only make the next run slower.
UNAVAILABLE_AFTER = 5
# Histories read ahead of the deal at work: this many seconds of requests at the rate limit (300 deals at 100
# rps). A backfill takes them in batches of 100 and builds a batch's events while it commits the one before only
# when the next batch is read already: with a window of one batch (1 s at 100 rps) it never is, and it held 3-5
# MB less but was about 5% slower at 50,000 deals with Attio answering at once (no different at 10,000;
# benchmarks/LOG.md, 2026-11-29). At 25 rps the window is 2 x ATTIO_CONCURRENCY (96): the rate limit sets the
# pace there, and the next batch is seldom read before it is wanted.
READ_AHEAD_SECONDS = 3.0
# Deal keys a scan remembers to drop the repeats of overlapping pages: the last four pages' worth. A repeat comes
# from the page before (the overlap) or, after deletions, from as far back as the query stepped back; only a step
# back of more than three pages (that many deals deleted between two page reads) brings one the scan has
# forgotten, and a deal read twice is recorded once (the ledger keys events on their id).
SCAN_MEMORY = 2_000
# A walk of the deal list that expects its rows asks for pages ahead when Attio's answers take longer than this
# thread's work on a page (reading 500 records, asking the state which are done), up to PAGES_AHEAD at once.
PAGE_SECONDS = 0.05
PAGES_AHEAD = 6
# A walk after the first (a backfill's last pass: given `rows`, it finds its deals done) only asks the state which
# deals of a page are done, 11-13 ms a page measured (15 with a margin): at the same latency it asks for more pages
# ahead, or the end of a backfill would wait a round trip per page or two.
WALK_PAGE_SECONDS = 0.015


@dataclass(frozen=True)
class Unread:
    """A deal whose history could not be used this time, and why; it goes to the retry set."""

    message: str
    attio_down: bool = False  # Attio said nothing about the deal itself (a 5xx, or no answer at all)


History = list[StageValue] | Unread


def _about_the_deal(error: AttioError) -> bool:
    """Attio answered about this deal (a 4xx other than auth or rate limit): other deals may read fine."""
    return error.status is not None and 400 <= error.status < 500 and error.status not in (401, 403, 429)


@dataclass
class ScanPage:
    currents: list[Current]
    date: datetime | None  # Attio's clock (its Date header), None if missing or unreadable
    received: datetime  # this machine's clock when the page arrived


def scan_time(page: ScanPage) -> datetime | None:
    """What the first page of a scan says the time was, on Attio's clock checked against this machine's."""
    moment, warning = clock.answer_time(page.date, page.received)
    if warning:
        log.warning("%s", warning)
    return moment


class DealSource:
    """Reads deals, their current stage and their stage history, from an object or a list."""

    def __init__(self, client: AttioClient, config: Config):
        self.client = client
        self.object = config.attio_object
        self.list = config.attio_list
        self.attribute = config.attio_stage_attribute
        self.user_id_attribute = config.attio_user_id_attribute
        self.event_attribute_names = config.attio_event_attributes
        self.stage_event_types = config.usermaven_stage_event_types
        # The attributes ATTIO_EVENT_ATTRIBUTES names, as `check` found them in the workspace.
        self.event_attributes: list[EventAttribute] = []
        self.workers = config.attio_concurrency
        self.max_rps = config.attio_max_rps
        self._entries_filter_refused = False
        self._titles: dict[str, str] | None = None
        self._first_page: Future[Page] | None = None  # see check(list_first=True)
        self._lock = threading.Lock()

    @property
    def target(self) -> tuple[str, str]:
        return ("lists", self.list) if self.list else ("objects", self.object)

    def check(self, list_first: bool = False) -> None:
        """Check the token and that the configured attributes exist, before any work (SetupError if not).
        Settings that name attributes by id are turned into slugs, as values are keyed by slug.

        With `list_first` (a backfill, whose first step is a walk of every deal), the first page of the deal list
        is asked for with these reads, and the next `scan(None)` starts with it."""
        target, identifier = self.target
        # The first reads go out together: one round trip before the run starts, not three or four.
        with ThreadPoolExecutor(5, thread_name_prefix="check") as pool:
            if list_first:
                self._first_page = pool.submit(self.client.query_page, self._query_path(), None, 0)
            token = pool.submit(self.client.check_token)
            own = pool.submit(self.client.attributes, target, identifier)
            people_future = pool.submit(self.client.attributes, "objects", "people") if self.user_id_attribute else None
            list_future = pool.submit(self.client.get_list, self.list) if self.list else None
            token.result()  # an auth error first, whatever else failed
            attributes = own.result()
            people = people_future.result() if people_future else []
            if list_future:
                problem = list_parent_problem(self.client, list_future.result(), self.list or "", self.object)
                if problem:
                    raise SetupError(problem)
        with reading(f"GET /v2/{target}/{identifier}/attributes"):
            self.attribute = stage_attribute_slug(attributes, self.attribute, f"{target[:-1]} {identifier!r}")
        if self.user_id_attribute:
            with reading("GET /v2/objects/people/attributes"):
                self.user_id_attribute = user_id_attribute_slug(people, self.user_id_attribute)
        if self.event_attribute_names:
            self._check_event_attributes(attributes)
        if self.stage_event_types:
            check_stage_event_types(self.stage_event_types, self._status_titles(), self.attribute)

    def _check_event_attributes(self, target_attributes: list[dict]) -> None:
        """Find each attribute ATTIO_EVENT_ATTRIBUTES names on the object (and the list): SetupError naming
        every one that does not exist or cannot be rendered."""
        object_attributes = self.client.attributes("objects", self.object) if self.list else target_attributes
        list_attributes = target_attributes if self.list else []
        try:
            with reading(f"GET /v2/objects/{self.object}/attributes" + (f" and /v2/lists/{self.list}/attributes"
                                                                          if self.list else "")):
                self.event_attributes = select_attributes(
                    self.event_attribute_names, object_attributes, list_attributes, EVENT_ATTRIBUTE_KEYS,
                    f"the object {self.object!r}", repr(self.list) if self.list else None)
        except AttributeProblem as exc:
            raise SetupError("ATTIO_EVENT_ATTRIBUTES: " + "; ".join(exc.problems)) from None

    # -- current stages --

    def scan(self, changed_since: datetime | None = None, rows: int | None = None) -> Iterator[ScanPage]:
        """Pages of deals with their current stage: all of them, or those whose stage was written since.

        Each deal comes once, though consecutive query pages overlap (see PAGE_OVERLAP), unless deletions made
        the query step back more than SCAN_MEMORY deals: the scan's memory is bounded, not the workspace's size.
        When Attio is far away (see pages_ahead), pages are requested on threads of their own, the first as soon
        as this is called and each next one when the one before is handed over, so this thread does not wait a
        round trip per page. Given `rows`, the number of deals expected (a walk of every deal after a first one),
        the first pages are requested at once, and more of them at a given latency (WALK_PAGE_SECONDS): a walk
        that finds nothing to do costs about a round trip, not one per page."""
        path = self._query_path()
        use_filter = changed_since is not None and not (self.list and self._entries_filter_refused)
        filter_ = active_from_filter(self.attribute, changed_since) if use_filter and changed_since else None
        first, self._first_page = (self._first_page, None) if filter_ is None and rows is None else (None, None)
        ahead = self.pages_ahead(PAGE_SECONDS if rows is None else WALK_PAGE_SECONDS)
        return self._scan(path, filter_, self.client.query(path, filter_, ahead=ahead, rows=rows, first=first))

    def _query_path(self) -> str:
        target, identifier = self.target
        return f"/v2/{target}/{quote(identifier)}/{'entries' if self.list else 'records'}/query"

    def pages_ahead(self, page_seconds: float) -> int:
        """Pages of the deal list to have requested at once: one while Attio answers in less time than this
        thread takes over a page (`page_seconds`), more as the latency observed grows, at most PAGES_AHEAD
        (each page of 500 records is a few MB in memory)."""
        return max(1, min(PAGES_AHEAD, math.ceil(self.client.latency / page_seconds)))

    def _scan(self, path: str, filter_: dict | None, pages: Iterator[Page]) -> Iterator[ScanPage]:
        try:
            try:
                first = next(pages)
            except AttioError as exc:
                if not (self.list and filter_ and exc.status == 400):
                    raise
                # The active_from filter is unverified on list entries: without it, scan every entry and
                # let the snapshot diff find the changed ones.
                log.warning("Attio refused the active_from filter on list entries (%s); scanning every entry "
                            "of %s and comparing with the snapshot", exc, self.target[1])
                self._entries_filter_refused = True
                pages = self.client.query(path, None)
                first = next(pages)
            seen = RecentKeys(SCAN_MEMORY)
            chained = _chain(first, pages)
            del first
            for page in chained:
                with reading(f"POST {path}"):
                    currents = [c for c in map(self._current, page.rows) if c.ref.key not in seen]
                for current in currents:
                    seen.add(current.ref.key)
                yield ScanPage(currents, page.date, page.received)
                del page, currents  # one page in memory at a time
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _current(self, row: dict) -> Current:
        if self.list:
            ref = DealRef(record_id=row["parent_record_id"], entry_id=row["id"]["entry_id"])
            return Current(ref, current_stage(row.get("entry_values") or {}, self.attribute), row)
        ref = DealRef(record_id=row["id"]["record_id"])
        return Current(ref, current_stage(row.get("values") or {}, self.attribute), row)

    def find(self, record_id: str) -> list[Current]:
        """The deal with this record id (its entries in list mode); AttioNotFound if there is none."""
        record = self.client.record(self.object, record_id)
        path = f"/v2/objects/{self.object}/records/{record_id}"
        if not self.list:
            with reading(f"GET {path}"):
                return [Current(DealRef(record_id), current_stage(record.get("values") or {}, self.attribute),
                                record)]
        listed = self.client.record_entries(self.object, record_id)
        with reading(f"GET {path}/entries"):
            entries = [Current(DealRef(record_id, e["entry_id"]), None, record) for e in listed
                       if self.list in (e.get("list_api_slug"), e.get("list_id"))]
        if not entries:
            raise SetupError(f"deal {record_id} has no entry on the list {self.list!r}: nothing to replay")
        if any(a.on_list for a in self.event_attributes):
            # The entries' own attribute values go on the events: read each entry (the deal record is read
            # again with the others by `deals`).
            path = f"/v2/lists/{quote(self.list or '')}/entries"
            entries = [replace(e, record=self.client.get_one(f"{path}/{quote(e.ref.entry_id or '')}"))
                       for e in entries]
        return entries

    def currents(self, refs: Sequence[DealRef]) -> tuple[list[Current], list[tuple[DealRef, str]]]:
        """These deals as a query returns them (current stage and record), read again by id, for the ones no
        query brought back, and the ones that could not be read with Attio's message. Records come in batches
        (one by one if a batch is refused, so one bad deal holds back no other), list entries one by one; deals
        deleted are left out of both."""
        if not self.list:
            try:
                rows = self.client.records_by_id(self.object, [ref.record_id for ref in refs])
            except AttioAuthError:
                raise
            except AttioError:
                return self._one_by_one(refs, lambda ref: self.client.record(self.object, ref.record_id))
            with reading(f"POST /v2/objects/{self.object}/records/query"):
                return [self._current(row) for row in rows], []
        return self._one_by_one([ref for ref in refs if ref.entry_id],
                                lambda ref: self.client.entry(self.list or "", ref.entry_id or ""))

    def _one_by_one(self, refs: Sequence[DealRef], read: Callable[[DealRef], dict]
                    ) -> tuple[list[Current], list[tuple[DealRef, str]]]:
        found: list[Current] = []
        failed: list[tuple[DealRef, str]] = []
        for ref in refs:
            try:
                row = read(ref)
            except AttioNotFound:
                continue
            except AttioAuthError:
                raise
            except AttioError as exc:
                failed.append((ref, str(exc)))
                continue
            with reading(f"the {'entry' if ref.entry_id else 'record'} {ref.key}"):
                found.append(self._current(row))
        return found, failed

    # -- history --

    def history(self, ref: DealRef) -> list[StageValue] | None:
        """Every value the stage attribute has had on this deal, oldest first; None if the deal is gone."""
        attribute = quote(self.attribute)
        if ref.entry_id:
            path = f"/v2/lists/{quote(self.list or '')}/entries/{quote(ref.entry_id)}/attributes/{attribute}/values"
        else:
            path = f"/v2/objects/{quote(self.object)}/records/{quote(ref.record_id)}/attributes/{attribute}/values"
        try:
            raw = self.client.values(path)
        except AttioNotFound:
            # Deleted since the query listed it (deletes are permanent in Attio): nothing left to send.
            log.warning("deal %s was deleted in Attio while this run read it; skipped", ref.key)
            return None
        with reading(f"GET {path}"):
            values = [stage_value(v) for v in raw if v.get("status")]
        if all(v.title for v in values):
            return values
        titles = self._status_titles()
        return [replace(v, title=v.title or titles.get(v.status_id) or v.status_id) for v in values]

    def read_history(self, current: Current) -> History:
        """The deal's history, or an Unread saying why it cannot be used this time: Attio refused it, or it ends
        before the stage the query just returned (a read behind the query). A deleted deal has none."""
        try:
            history = self.history(current.ref)
        except AttioAuthError:
            raise
        except AttioError as exc:
            return Unread(str(exc), attio_down=not _about_the_deal(exc))
        if history is None:
            return []
        stage = current.stage
        if stage is not None and behind(stage, history):
            newest = latest(history)
            shown = f"{newest.title} since {format_time(newest.active_from)}" if newest else "nothing"
            return Unread(f"Attio's history of deal {current.ref.key} ends with {shown}, behind the stage the "
                          f"query returned ({stage.title} since {format_time(stage.active_from)})")
        return history

    def _status_titles(self) -> dict[str, str]:
        """Stage titles by status id, archived stages included (for values that come without a title)."""
        with self._lock:
            if self._titles is None:
                target, identifier = self.target
                statuses = self.client.statuses(target, identifier, self.attribute)
                with reading(f"GET /v2/{target}/{identifier}/attributes/{self.attribute}/statuses"):
                    self._titles = {s["id"]["status_id"]: s.get("title") or "" for s in statuses}
            return self._titles

    def with_histories(self, currents: Iterable[Current], window: int | None = None) -> HistoryReads:
        """(deal, history) in input order, histories read by a thread pool a bounded window ahead.

        A deal whose history cannot be used comes with an Unread instead, and the others go on. Two failures
        stop the reading instead (raised): a refused token, and UNAVAILABLE_AFTER reads in a row that Attio
        answered about nothing (down, not one bad deal).

        The requests in flight are sized from the rate limit and the latency observed (see in_flight_target),
        within ATTIO_CONCURRENCY. The window ahead holds READ_AHEAD_SECONDS of requests at the rate limit, so
        the reads go on while this thread records a batch, looks up its people and sends events.
        """
        window = window or max(self.workers * 2, math.ceil(self.max_rps * READ_AHEAD_SECONDS))
        return HistoryReads(self, currents, window)

    def in_flight_target(self) -> int:
        """How many history reads to have in flight: what the rate limit and the observed latency need
        (Little's law: rate × latency), with half again for jitter, within ATTIO_CONCURRENCY. Few threads when
        Attio answers fast (less memory), up to the ceiling when it is far away."""
        needed = math.ceil(self.max_rps * self.client.latency * 1.5) + 2
        return max(2, min(self.workers, needed))

    # -- the deal records events describe --

    def deals(self, currents: Iterable[Current], fetch: bool = True) -> dict[str, Deal]:
        """The deal record of each current (fetched in batches for list entries; with `fetch` False, only those
        whose record is at hand), by record id."""
        deals: dict[str, Deal] = {}
        missing: list[str] = []
        for current in currents:
            record = current.record
            if not self.list or ((record.get("id") or {}).get("record_id") == current.ref.record_id):
                with reading(f"the {self.object} record {current.ref.record_id}"):
                    deals[current.ref.record_id] = deal_from_record(record, self.event_attributes)
            else:
                missing.append(current.ref.record_id)
        if missing and fetch:
            deals.update(self.deals_by_id(missing))
        return deals

    def far_away(self) -> bool:
        """Attio's answers take longer than this thread's work on a page of deals (PAGE_SECONDS): round trips
        the run waits for show in its time, and are worth making ahead."""
        return self.client.latency > PAGE_SECONDS

    def deals_by_id(self, record_ids: Iterable[str]) -> dict[str, Deal]:
        records = self.client.records_by_id(self.object, list(record_ids))
        with reading(f"POST /v2/objects/{self.object}/records/query"):
            return {deal.record_id: deal for deal in (deal_from_record(r, self.event_attributes) for r in records)}

    def entry_values(self, current: Current) -> dict[str, tuple[dict, ...]]:
        """The current values of the configured list-entry attributes, from the entry already read."""
        if not self.list:
            return {}
        with reading(f"the {self.list} entry {current.ref.entry_id}"):
            return pick_values(current.record.get("entry_values") or {}, self.event_attributes, on_list=True)


class HistoryReads(Iterator[tuple[Current, History]]):
    """The (deal, history) pairs of `DealSource.with_histories`, in input order. `in_hand(n)` says whether
    the next n histories are read (taking them may still wait for the next page of the deal list). Dropped or
    closed, it reads nothing more."""

    def __init__(self, source: DealSource, currents: Iterable[Current], window: int):
        self._reads = _Reads()
        # The generator holds the reads, not this object: dropping this object closes it at once (a cycle would
        # leave its threads reading until the garbage collector ran).
        self._pairs = _read_histories(source, currents, window, self._reads)

    def __next__(self) -> tuple[Current, History]:
        return next(self._pairs)

    def close(self) -> None:
        self._pairs.close()

    def in_hand(self, count: int) -> bool:
        """Whether the next `count` histories (all that are left, once every deal is listed) are read. Call it
        from the thread that takes the pairs."""
        queue = self._reads.queue
        if len(queue) < count and not self._reads.listed:
            return False
        return all(future.done() for _, future in islice(queue, count))


@dataclass
class _Reads:
    """The reads a HistoryReads has asked for and not handed over, in order."""

    queue: deque[tuple[Current, Future[History]]] = field(default_factory=deque)
    listed: bool = False  # every deal is in the queue or was handed over


def _read_histories(source: DealSource, currents: Iterable[Current], window: int, reads: _Reads
                    ) -> Generator[tuple[Current, History], None, None]:
    pool = ThreadPoolExecutor(source.workers, thread_name_prefix="attio")
    gate = InFlight(pool, source.in_flight_target)
    queue = reads.queue
    down = 0

    def ready() -> tuple[Current, History]:
        nonlocal down
        head, future = queue.popleft()
        history = future.result()
        if not (isinstance(history, Unread) and history.attio_down):
            down = 0
        else:
            down += 1
            if down >= UNAVAILABLE_AFTER:
                raise AttioError(f"{history.message} ({down} history reads in a row failed so: Attio is down)")
        return head, history

    try:
        for current in currents:
            queue.append((current, gate.submit(source.read_history, current)))
            # Keep the window full: the caller's pauses (and the next page's query) are covered by it.
            while len(queue) >= window:
                yield ready()
        reads.listed = True
        while queue:
            yield ready()
    finally:
        gate.close()
        pool.shutdown(wait=True, cancel_futures=True)


class RecentKeys:
    """The last `size` keys added, for `in`: what a scan remembers of the deals it yielded."""

    def __init__(self, size: int):
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)


def _chain(first: Page, rest: Iterator[Page]) -> Iterator[Page]:
    yield first
    del first
    yield from rest
