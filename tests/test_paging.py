"""Offset paging under deletions: a deal pushed past a page boundary by records deleted between two page
reads is still read, by a poll (whose checkpoint would otherwise pass it) and by a backfill."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

from sync import attio as attio_module
from sync.attio import AttioClient, Page
from tests.conftest import add_leads, ledger_rows


def _deleting_between_pages(monkeypatch, wanted: Callable[[str, dict | None], bool],
                            deletions: dict[tuple[int, int], Callable[[], None]]) -> list[str]:
    """Wrap AttioClient.query: after page `p` of the `s`-th matching scan is handed over, run deletions[(s, p)]."""
    query = AttioClient.query
    scans: list[str] = []

    def deleting(self: AttioClient, path: str, filter: dict | None = None,
                 page_size: int | None = None) -> Iterator[Page]:
        if not wanted(path, filter):
            yield from query(self, path, filter, page_size)
            return
        scans.append(path)
        scan = len(scans)
        for number, page in enumerate(query(self, path, filter, page_size)):
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
    workspace.clock += timedelta(minutes=10)
    for record_id in ids:
        workspace.move_deal(record_id, "Qualified")
    workspace.clock += timedelta(minutes=10)

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
