"""When Attio is far away, the round trips a backfill waits for overlap with others: its first page of deals goes
out with the checks, and a batch's people and companies are looked up while its histories are read, so the
last batch does not wait one more round trip once they are in."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from sync import attio as attio_module
from sync import backfill as backfill_module
from sync import resolve as resolve_module
from sync import source as source_module
from sync.attio import AttioClient, Page
from sync.errors import AttioError
from sync.models import Deal, DealRef, Person, StageValue
from sync.resolve import Resolver
from sync.source import DealSource
from tests.conftest import NOW, add_deal, add_leads, days, ledger_rows, uid

DEALS_QUERY = "/v2/objects/deals/records/query"
PEOPLE_QUERY = "/v2/objects/people/records/query"
COMPANIES_QUERY = "/v2/objects/companies/records/query"


def _requests_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """(path, body) of each request made to Attio from now on, in order."""
    seen: list[tuple[str, Any]] = []
    request = AttioClient.request

    def recording(self: AttioClient, method: str, path: str, *args: Any, **kwargs: Any) -> Page:
        seen.append((path, kwargs.get("body")))
        return request(self, method, path, *args, **kwargs)

    monkeypatch.setattr(AttioClient, "request", recording)
    return seen


def _paths(seen: list[tuple[str, Any]]) -> list[str]:
    return [path for path, _ in list(seen)]


def test_a_backfill_asks_for_its_first_page_of_deals_with_the_checks(attio, usermaven, run, monkeypatch):
    add_leads(attio.workspace, "g", 30, days_back=100)
    page_asked, gave_up = threading.Event(), threading.Event()
    seen = _requests_seen(monkeypatch)
    check_token = AttioClient.check_token
    query_page = AttioClient.query_page

    def asking(self: AttioClient, path: str, *args: Any, **kwargs: Any) -> Page:
        page_asked.set()
        return query_page(self, path, *args, **kwargs)

    def waiting_for_the_page(self: AttioClient) -> dict:
        if not page_asked.wait(timeout=5):
            gave_up.set()  # the first page was not asked for until the checks were answered
        return check_token(self)

    monkeypatch.setattr(AttioClient, "query_page", asking)
    monkeypatch.setattr(AttioClient, "check_token", waiting_for_the_page)
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert not gave_up.is_set()
    # The page asked for with the checks is the walk's first: no page is asked for twice (the walk and the
    # sweep after it, one page each).
    assert _paths(seen).count(DEALS_QUERY) == 2
    assert len({e["event_attributes"]["deal_id"] for e in usermaven.events}) == 30


def test_the_page_asked_for_with_the_checks_has_the_size_of_the_walk_s_pages(attio, usermaven, run, monkeypatch):
    monkeypatch.setattr(attio_module, "PAGE_SIZE", 20)
    add_leads(attio.workspace, "g", 60, days_back=100)
    seen = _requests_seen(monkeypatch)
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    pages = [body for path, body in seen if path == DEALS_QUERY]
    assert {body["limit"] for body in pages} == {20} and len(pages) > 3


def test_a_poll_does_not_ask_for_a_page_before_the_checks_are_answered(attio, usermaven, run, monkeypatch):
    """A poll's query filters on the stage attribute, which the checks find: it waits for them."""
    add_leads(attio.workspace, "g", 3, days_back=100)
    seen = _requests_seen(monkeypatch)
    assert run("run")[0] == 0  # the baseline
    first = _paths(seen)
    assert first.index(DEALS_QUERY) > first.index("/v2/self")
    seen.clear()
    assert run("run")[0] == 0
    later = _paths(seen)
    assert later.index(DEALS_QUERY) > later.index("/v2/self")


@pytest.fixture
def mixed(workspace):
    """Deals whose events differ by person and company: an email, an app user id, no person at all, two people
    and a company, spread over two batches: m0 to m99 are the oldest (the first batch), then m100 to m129 and
    the workspace's own three deals."""
    ws = workspace
    for n in range(130):
        kind = n % 4
        people = [] if kind == 2 else [ws.add_person(f"m{n}@acme.com" if kind != 1 else None,
                                                     user_id=f"app-{n}" if kind == 1 else None)]
        if kind == 3:
            people.insert(0, ws.add_person(None, name=f"Nobody {n}"))
        add_deal(ws, uid(f"m{n}"), f"M{n}", [("Lead", NOW - days(1000 - n)), ("Qualified", NOW - days(800 - n))],
                 people=people, company=uid("c1") if n % 3 else None)
    return ws


def _sent(usermaven: Any) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for batch in usermaven.batches for e in batch)


def test_far_away_a_batch_s_people_are_asked_for_before_its_histories_are_in(mixed, attio, usermaven, run, env,
                                                                               monkeypatch, tmp_path):
    seen = _requests_seen(monkeypatch)
    code, _, err = run("run", "--backfill", "--since", "2020-01-01")  # Attio in-process: near
    assert code == 0, err
    near, near_queries = _sent(usermaven), _paths(seen).count(PEOPLE_QUERY)
    usermaven.batches.clear()
    seen.clear()

    monkeypatch.setattr(source_module, "PAGE_SECONDS", 1e-9)  # any answer takes longer: Attio is far away
    monkeypatch.setenv("SYNC_STATE_DB", str(tmp_path / "far.db"))
    # The reads run ahead of the batches (3 s at the default 100 requests a second: 300 deals), so a batch's
    # last deal goes to be read while its first wait here.
    history = DealSource.history
    gave_up = threading.Event()

    def waiting_for_the_lookups(self: DealSource, ref: DealRef) -> list[StageValue] | None:
        # Each batch's people (100 deals a batch) are asked for before any of its histories is read.
        wanted = 1 if ref.record_id in {uid(f"m{n}") for n in range(100)} else 2
        if not gave_up.is_set():
            for _ in range(500):
                if _paths(seen).count(PEOPLE_QUERY) >= wanted:
                    break
                threading.Event().wait(0.01)
            else:
                gave_up.set()
        return history(self, ref)

    monkeypatch.setattr(DealSource, "history", waiting_for_the_lookups)
    code, _, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    assert not gave_up.is_set()
    # The same events, byte for byte, and no more lookups than a near run makes.
    assert _sent(usermaven) == near
    assert _paths(seen).count(PEOPLE_QUERY) == near_queries == 2


class _People:
    """An Attio client for the resolver: people and companies by id, counting the queries."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def records_by_id(self, object_: str, ids: list[str]) -> list[dict]:
        self.asked.append(list(ids))
        if object_ == "companies":
            return [{"id": {"record_id": i}, "values": {"name": [{"value": f"Co {i}"}]}} for i in ids]
        return [{"id": {"record_id": i}, "values": {"email_addresses": [{"email_address": f"{i}@x.io"}]}}
                for i in ids]

    def workspace_members(self) -> list[dict]:
        return []


def test_what_a_load_found_stays_though_another_thread_s_load_evicts_it_from_the_cache():
    client = _People()
    resolver = Resolver(client, None, cache_size=2)  # type: ignore[arg-type]
    mine = Deal("d1", people_ids=("a", "b"), company_id="c")
    found = resolver.load([mine])
    for n in range(resolve_module.LOADS_KEPT):  # the batches after it, looked up ahead: a and b are evicted
        resolver.load([Deal(f"d{n}", people_ids=(f"x{n}", f"y{n}"))])
    asked = len(client.asked)
    assert found.identity(mine)[0] is not None
    assert found.identity(mine) == resolver.load([mine]).identity(mine)
    assert ["a", "b"] in client.asked[asked:]  # they were evicted, and asked for again
    assert found.company_name(mine) == "Co c"
    assert found.people == {"a": Person("a", ("a@x.io",)), "b": Person("b", ("b@x.io",))}


def _far_and_near(run: Any, usermaven: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, *argv: str
                  ) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """The events sent and the requests made by the same command near and then far (a second state file)."""
    seen = _requests_seen(monkeypatch)
    assert run(*argv)[0] == 0
    near = (_sent(usermaven), _paths(seen))
    seen.clear()
    usermaven.batches.clear()
    monkeypatch.setattr(source_module, "PAGE_SECONDS", 1e-9)
    monkeypatch.setenv("SYNC_STATE_DB", str(tmp_path / "far.db"))
    assert run(*argv)[0] == 0
    return near, (_sent(usermaven), _paths(seen))


def _lookups(seen: list[str]) -> list[str]:
    return [path for path in seen if path in (PEOPLE_QUERY, COMPANIES_QUERY, "/v2/workspace_members")]


def test_far_away_with_until_looks_up_no_more_than_near(mixed, usermaven, run, monkeypatch, tmp_path):
    """The deals of the second batch moved after --until and were created after it: no transition in range, no
    lookup, near or far."""
    until = (NOW - days(900)).date().isoformat()
    (near_sent, near_seen), (far_sent, far_seen) = _far_and_near(
        run, usermaven, monkeypatch, tmp_path, "run", "--backfill", "--since", "2020-01-01", "--until", until)
    assert far_sent == near_sent and near_sent
    assert sorted(_lookups(far_seen)) == sorted(_lookups(near_seen))


def test_a_person_attio_does_not_return_is_asked_for_once(workspace, usermaven, run, monkeypatch, tmp_path):
    ghost = workspace.add_person("ghost@acme.com")
    add_deal(workspace, uid("g1"), "G1", [("Lead", NOW - days(30))], people=[ghost, uid("p1")])
    add_deal(workspace, uid("g2"), "G2", [("Lead", NOW - days(5))], people=[ghost])
    workspace.people.remove(ghost)  # gone from Attio, still named by the deals
    seen = _requests_seen(monkeypatch)
    monkeypatch.setattr(source_module, "PAGE_SECONDS", 1e-9)
    monkeypatch.setattr(backfill_module, "BATCH", 2)  # d1 d2 | g1 d3 | g2: the ghost in two batches
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    asked = [body for path, body in seen if path == PEOPLE_QUERY and ghost in json.dumps(body)]
    assert len(asked) == 1


def test_rechecking_held_events_reads_no_workspace_members(workspace, usermaven, run, monkeypatch):
    """d3 has no person: its event is held, and the next poll reads the deal again to check it; owner names are
    not needed for that."""
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    seen = _requests_seen(monkeypatch)
    assert run("run")[0] == 0
    by_id = [body for path, body in seen if path == DEALS_QUERY and "$in" in json.dumps(body)]
    assert any(uid("d3") in json.dumps(body) for body in by_id)  # the held deal was read again
    assert "/v2/workspace_members" not in _paths(seen)


def test_looking_up_ahead_evicts_no_people_a_batch_still_needs(mixed, usermaven, run, monkeypatch, tmp_path):
    """The batches read ahead name more people than the cache holds (deals with many people, at a high rate):
    the batch whose events come first keeps its people, and no one is looked up twice."""
    monkeypatch.setattr(resolve_module, "CACHE_SIZE", 60)
    (near_sent, near_seen), (far_sent, far_seen) = _far_and_near(
        run, usermaven, monkeypatch, tmp_path, "run", "--backfill", "--since", "2020-01-01")
    assert far_sent == near_sent
    assert far_seen.count(PEOPLE_QUERY) == near_seen.count(PEOPLE_QUERY) == 2


def test_after_a_lookup_ahead_fails_the_pass_looks_people_up_with_their_events(mixed, usermaven, run, env,
                                                                                monkeypatch):
    """Attio fails the first lookup ahead (after every retry): the batch's events ask again, and the batches
    after it are looked up with their events, not ahead (their retries are not made twice)."""
    monkeypatch.setattr(source_module, "PAGE_SECONDS", 1e-9)
    records_by_id, load = AttioClient.records_by_id, Resolver._load
    loader: list[str] = []  # the thread whose load is under way (one at a time: the resolver's lock)
    asked_by: list[str] = []  # the thread whose load asked for people, per people query

    def loading(self: Resolver, deals: list[Deal]) -> None:
        loader[:] = [threading.current_thread().name.split("_")[0]]
        load(self, deals)

    def failing_once(self: AttioClient, object_: str, ids: list[str]) -> list[dict]:
        if object_ == "people":
            asked_by.extend(loader)
            if len(asked_by) == 1:
                raise AttioError("Attio answered 503 (after every retry)", status=503)
        return records_by_id(self, object_, ids)

    monkeypatch.setattr(Resolver, "_load", loading)
    monkeypatch.setattr(AttioClient, "records_by_id", failing_once)
    code, _, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    # The failed lookup ahead, then the first batch's events asking again, then the second batch's events.
    assert asked_by == ["lookup", "ahead", "ahead"]
    assert len([row for row in ledger_rows(env) if row["state"] == "sent"]) == len(usermaven.events) > 0


def test_a_first_page_that_fails_with_the_checks_stops_the_backfill_as_before(workspace, attio, usermaven, run,
                                                                               env):
    """The page asked for beside the checks fails after every retry: its error is the run's (exit 1), nothing
    is recorded, and the next run reads it again."""
    attio.fail_next(7, status=503, endpoint="records_query", message="Service unavailable")
    code, _, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 1
    assert "Attio answered 503" in err and "Service unavailable" in err
    assert ledger_rows(env) == [] and usermaven.events == []
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    assert len(usermaven.events) > 0
