"""Offset paging under deletions: a deal pushed past a page boundary by records deleted between two page
reads is still read, by a poll (whose checkpoint would otherwise pass it) and by a backfill."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from sync import attio as attio_module
from sync import source as source_module
from sync.attio import AttioClient, Page, QueryPages
from sync.models import DealRef, StageValue
from sync.source import DealSource
from tests.conftest import NOW, add_leads, ledger_rows, move_all


def _deleting_between_pages(monkeypatch, wanted: Callable[[str, dict | None], bool],
                            deletions: dict[tuple[int, int], Callable[[], None]]) -> list[str]:
    """Wrap AttioClient.query: after page `p` of the `s`-th matching scan is handed over, run deletions[(s, p)]."""
    query = AttioClient.query
    scans: list[str] = []

    def deleting(self: AttioClient, path: str, filter: dict | None = None,
                 page_size: int | None = None, **ahead: int | None) -> Iterator[Page]:
        if not wanted(path, filter):
            yield from query(self, path, filter, page_size, **ahead)
            return
        scans.append(path)
        scan = len(scans)
        for number, page in enumerate(query(self, path, filter, page_size, **ahead)):
            yield page
            if (scan, number) in deletions:
                deletions[(scan, number)]()

    monkeypatch.setattr(AttioClient, "query", deleting)
    return scans


def test_a_poll_reads_moved_deals_that_deletions_pushed_past_a_page(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)  # pages overlap by 4 rows
    workspace = attio.workspace
    ids = add_leads(workspace, "g", 40, days_back=100)
    assert run("run")[0] == 0  # baseline
    move_all(workspace, ids, "Qualified")

    def delete_six() -> None:
        for record_id in ids[:6]:
            workspace.delete_deal(record_id)

    scans = _deleting_between_pages(monkeypatch, lambda path, f: f is not None and "stage" in f,
                                    {(1, 0): delete_six})
    assert run("run")[0] == 0
    assert scans
    moved = {e["event_attributes"]["deal_id"] for e in usermaven.events
             if e["event_attributes"]["deal_stage"] == "Qualified"}
    assert set(ids[6:]) <= moved  # every moved deal still there, none lost at the page boundary
    # (A deleted deal may have been read before it went: its history reads start as soon as its page is handed
    # over, and the limiter lets them go at once.)
    assert moved <= set(ids)
    assert len(moved) == len([r for r in ledger_rows(env) if r["to_stage"] == "Qualified"])


def test_a_backfill_reads_every_deal_though_deletions_shift_pages_twice(attio, usermaven, run, env, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)
    workspace = attio.workspace
    ids = add_leads(workspace, "g", 60, days_back=100)

    def delete(first: int, last: int) -> Callable[[], None]:
        def run_deletions() -> None:
            for record_id in ids[first:last]:
                workspace.delete_deal(record_id)

        return run_deletions

    # The first pass loses rows after its page 1, and a later walk of the list loses more after its page 0:
    # without a check that pages meet, the same two deals fall past the boundary both times.
    _deleting_between_pages(monkeypatch, lambda path, f: f is None and "deals" in path,
                            {(1, 1): delete(16, 22), (2, 0): delete(0, 16)})
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    sent = {e["event_attributes"]["deal_id"] for e in usermaven.events}
    assert set(ids[22:]) <= sent
    assert "unfinished backfill" not in run("status")[1]


# -- pages requested ahead (a walk of the deal list that expects its rows) --

class _List:
    """A list of rows paged like Attio's query, on threads: each read waits for the page before it to be read
    first (so that pages requested together are read in order), and `deleting` runs once before `at` is read."""

    def __init__(self, rows: int, page_size: int, step: int, at: int | None = None, deleting: range = range(0)):
        self.rows = [{"id": {"record_id": f"r{n}"}} for n in range(rows)]
        self.page_size, self.step, self.at, self.deleting = page_size, step, at, deleting
        self.read: list[int] = []  # offsets, in the order they were asked for
        self._served: set[int] = set()
        self._turn = threading.Condition()

    def fetch(self, offset: int) -> Page:
        with self._turn:
            self.read.append(offset)
            self._turn.wait_for(lambda: offset == 0 or offset - self.step in self._served, timeout=5)
            if offset == self.at and self.deleting:
                del self.rows[self.deleting.start:self.deleting.stop]
                self.deleting = range(0)
            page = Page(self.rows[offset:offset + self.page_size], None, NOW)
            self._served.add(offset)
            self._turn.notify_all()
            return page


def test_pages_ahead_are_asked_for_at_once_and_none_past_the_end():
    rows = _List(1000, 100, 90)
    pages = QueryPages(rows.fetch, "/v2/objects/deals/records/query", 100, ahead=4, rows=1000)
    with rows._turn:
        assert rows._turn.wait_for(lambda: len(rows.read) == 4, timeout=5)  # before any page is taken
    taken = [row["id"]["record_id"] for page in pages for row in page.rows]
    assert set(taken) == {f"r{n}" for n in range(1000)}
    # The same pages a walk one by one reads (the last one short), none past it.
    assert sorted(rows.read) == list(range(0, 991, 90))


def test_without_the_rows_expected_each_full_page_asks_for_the_next_when_handed_over():
    """The first walk of a backfill does not know how many deals there are: the next page is asked for as soon
    as a full one is handed over (so this thread does not wait a round trip for it), and never one past the end."""
    rows = _List(1000, 100, 90)
    pages = QueryPages(rows.fetch, "/v2/objects/deals/records/query", 100, ahead=4)
    taken = []
    for page in pages:
        taken += [row["id"]["record_id"] for row in page.rows]
        handed = len(taken) // 100
        if len(page.rows) == 100:
            with rows._turn:
                assert rows._turn.wait_for(lambda n=handed: len(rows.read) == n + 1, timeout=5)
        assert len(rows.read) <= handed + 1  # one page ahead, not more
    assert set(taken) == {f"r{n}" for n in range(1000)}
    assert rows.read == list(range(0, 991, 90))


def test_pages_ahead_still_meet_when_deletions_shift_them():
    """Rows deleted while pages are read ahead: a page that does not meet the one before it is read again from
    further back, and the pages already asked for after it are dropped, so no row is skipped."""
    rows = _List(1000, 100, 90, at=180, deleting=range(100, 115))  # more than the overlap, before page 2
    pages = QueryPages(rows.fetch, "/v2/objects/deals/records/query", 100, ahead=4, rows=1000)
    taken = {row["id"]["record_id"] for page in pages for row in page.rows}
    assert taken >= {f"r{n}" for n in [*range(100), *range(115, 1000)]}
    assert rows.read.count(90) == 2  # read again from further back


def test_a_backfill_asks_for_its_sweep_while_the_last_histories_are_read(attio, usermaven, run, monkeypatch):
    """The walk that looks for deals the paging skipped is asked for when the first pass has walked the list,
    not one page after another once every history is recorded (at 300 ms a round trip each)."""
    monkeypatch.setattr(source_module, "PAGE_SECONDS", 1e-9)  # Attio "far away": pages are asked for ahead
    monkeypatch.setattr(source_module, "WALK_PAGE_SECONDS", 1e-9)
    add_leads(attio.workspace, "g", 30, days_back=100)
    sweep_asked, gave_up = threading.Event(), threading.Event()
    request, history = AttioClient.request, DealSource.history
    queries_seen: list[str] = []

    def requesting(self: AttioClient, method: str, path: str, *args: Any, **kwargs: Any) -> Page:
        if path == "/v2/objects/deals/records/query":
            queries_seen.append(path)
            if len(queries_seen) == 2:
                sweep_asked.set()
        return request(self, method, path, *args, **kwargs)

    def waiting_for_the_sweep(self: DealSource, ref: DealRef) -> list[StageValue] | None:
        if not gave_up.is_set() and not sweep_asked.wait(timeout=5):
            gave_up.set()  # the sweep waits for these reads: it was not asked for ahead
        return history(self, ref)

    monkeypatch.setattr(AttioClient, "request", requesting)
    monkeypatch.setattr(DealSource, "history", waiting_for_the_sweep)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert not gave_up.is_set() and len(queries_seen) == 2
    assert len({e["event_attributes"]["deal_id"] for e in usermaven.events}) == 30


def test_queries_go_ahead_of_the_history_reads_waiting_for_the_limiter(attio, usermaven, run, monkeypatch):
    """The run waits for its queries (the next page, a batch's people and companies), not for any one read."""
    add_leads(attio.workspace, "g", 5, days_back=100)
    asked: list[tuple[str, bool]] = []
    request = AttioClient.request

    def recording(self: AttioClient, method: str, path: str, *args: Any, urgent: bool = False,
                  **kwargs: Any) -> Page:
        asked.append((path.rsplit("/", 1)[-1], urgent))
        return request(self, method, path, *args, urgent=urgent, **kwargs)

    monkeypatch.setattr(AttioClient, "request", recording)
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    assert {urgent for last, urgent in asked if last == "query"} == {True}
    assert {urgent for last, urgent in asked if last == "values"} == {False}


def test_the_last_walk_asks_for_more_pages_ahead_than_the_first(attio, usermaven, run, monkeypatch):
    """The walk after the first finds its deals done and only asks the state about each page, so at 90 ms it
    asks for six pages at once, where the first walk (which reads every history) asks for two."""
    add_leads(attio.workspace, "g", 30, days_back=100)
    request, query = AttioClient.request, AttioClient.query
    ahead_asked: list[tuple[int | None, int]] = []

    def at_100_ms(self: AttioClient, *args: Any, **kwargs: Any) -> Any:
        answer = request(self, *args, **kwargs)
        self.latency = 0.09  # what Attio in another region answers in
        return answer

    def recording(self: AttioClient, path: str, *args: Any, ahead: int = 1, rows: int | None = None,
                  **kwargs: Any) -> Iterator[Page]:
        if path == "/v2/objects/deals/records/query":
            ahead_asked.append((rows, ahead))
        return query(self, path, *args, ahead=ahead, rows=rows, **kwargs)

    monkeypatch.setattr(AttioClient, "request", at_100_ms)
    monkeypatch.setattr(AttioClient, "query", recording)
    code, _, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert ahead_asked == [(None, 2), (30, source_module.PAGES_AHEAD)]
    assert len(usermaven.events) > 0
