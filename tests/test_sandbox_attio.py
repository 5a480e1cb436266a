"""The Attio sandbox over real loopback HTTP: filters, paging, sorts, histories, lists, auth, rate limit,
faults, admin endpoints and the ``serve`` command."""

import email.utils
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from sync.sandbox import AttioSandbox, Faults, Workspace
from sync.sandbox.generator import RENAMED_FROM, RENAMED_TO
from sync.sandbox.records import format_ts

TOKEN = "sandbox-attio-token"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace() -> Workspace:
    return Workspace.generate(seed=11, deals=150)


@pytest.fixture
def attio(workspace: Workspace) -> Iterator[AttioSandbox]:
    with AttioSandbox(workspace, rate_limit=None) as sandbox:
        yield sandbox


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def query(http: requests.Session, attio: AttioSandbox, body: dict, target: str = "objects/deals/records"):
    response = http.post(f"{attio.url}/v2/{target}/query", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def record_ids(rows: list[dict]) -> list[str]:
    return [row["id"]["record_id"] for row in rows]


def current_stage_times(ws: Workspace) -> dict[str, datetime]:
    return {r: ws.deal(r).current("stage")[-1].active_from for r in ws.deal_ids()}


# ---- auth and metadata ---------------------------------------------------------------------------------------


def test_self_reports_an_active_token_for_the_workspace(attio, http, workspace):
    body = http.get(f"{attio.url}/v2/self").json()
    assert body["active"] is True and body["workspace_id"] == workspace.workspace_id
    assert "record_permission:read" in body["scope"].split()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/self"),
    ("GET", "/v2/workspace_members"),
    ("GET", "/v2/objects/deals/attributes"),
    ("POST", "/v2/objects/deals/records/query"),
    ("POST", "/v2/lists/sales_pipeline/entries/query"),
    ("GET", "/v2/no/such/route"),
])
def test_missing_or_wrong_token_answers_401_everywhere(attio, headers, method, path):
    response = requests.request(method, attio.url + path, headers=headers, json={}, timeout=5)
    assert response.status_code == 401
    assert response.json()["type"] == "auth_error" and response.json()["code"] == "invalid_token"
    assert attio.stats["unauthorized"] == 1


def test_attributes_are_found_by_slug_or_object_id(attio, http, workspace):
    by_slug = http.get(f"{attio.url}/v2/objects/deals/attributes").json()["data"]
    by_id = http.get(f"{attio.url}/v2/objects/{workspace.deals.id}/attributes").json()["data"]
    assert by_slug == by_id
    stage = next(a for a in by_slug if a["api_slug"] == "stage")
    assert stage["type"] == "status"
    assert stage["id"]["attribute_id"] == workspace.stage_attribute.attribute_id
    people = http.get(f"{attio.url}/v2/objects/people/attributes").json()["data"]
    assert {a["api_slug"] for a in people} == {"name", "email_addresses", "app_user_id"}


def test_statuses_hide_the_archived_stage_unless_asked(attio, http, workspace):
    url = f"{attio.url}/v2/objects/deals/attributes/stage/statuses"
    visible = http.get(url).json()["data"]
    everything = http.get(url, params={"show_archived": "true"}).json()["data"]
    assert workspace.archived_stage not in {s["id"]["status_id"] for s in visible}
    assert workspace.archived_stage in {s["id"]["status_id"] for s in everything}
    assert len(everything) == len(visible) + 1
    by_attribute_id = http.get(
        f"{attio.url}/v2/objects/deals/attributes/{workspace.stage_attribute.attribute_id}/statuses"
    ).json()["data"]
    assert by_attribute_id == visible


def test_list_statuses_belong_to_the_list(attio, http, workspace):
    statuses = http.get(f"{attio.url}/v2/lists/sales_pipeline/attributes/stage/statuses").json()["data"]
    assert statuses and {s["id"]["object_id"] for s in statuses} == {workspace.list_id}


def test_workspace_members_lists_every_member(attio, http, workspace):
    members = http.get(f"{attio.url}/v2/workspace_members").json()["data"]
    assert [m["id"]["workspace_member_id"] for m in members] == [m.member_id for m in workspace.members]
    assert {"first_name", "last_name", "email_address", "access_level"} <= set(members[0])


def test_unknown_object_list_or_route_is_a_404(attio, http):
    for method, path in [
        ("POST", "/v2/objects/unicorns/records/query"),
        ("GET", "/v2/objects/unicorns/attributes"),
        ("POST", "/v2/lists/nope/entries/query"),
        ("GET", "/v2/objects/deals/attributes/name/statuses"),
        ("GET", "/v2/nothing"),
    ]:
        response = http.request(method, attio.url + path, json={})
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found" and response.json()["type"] == "invalid_request_error"


# ---- records query: filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("op,keep", [
    ("$gte", lambda t, p: t >= p),
    ("$gt", lambda t, p: t > p),
    ("$lte", lambda t, p: t <= p),
    ("$lt", lambda t, p: t < p),
])
def test_active_from_operators_compare_the_current_stage_value(attio, http, workspace, op, keep):
    times = current_stage_times(workspace)
    pivot = sorted(times.values())[len(times) // 2]
    rows = query(http, attio, {"filter": {"stage": {"active_from": {op: format_ts(pivot)}}}})
    assert set(record_ids(rows)) == {r for r, t in times.items() if keep(t, pivot)}


def test_changed_since_filter_sees_a_move_and_excludes_the_exact_cursor(attio, http, workspace):
    cursor = max(current_stage_times(workspace).values())
    assert query(http, attio, {"filter": {"stage": {"active_from": {"$gt": format_ts(cursor)}}}}) == []
    record_id = workspace.deal_ids()[7]
    moved = workspace.move_deal(record_id, "Won 🎉")
    rows = query(http, attio, {"filter": {"stage": {"active_from": {"$gt": format_ts(cursor)}}}})
    assert record_ids(rows) == [record_id]
    assert rows[0]["values"]["stage"] == [moved]
    assert query(http, attio, {"filter": {"stage": {"active_from": {"$gt": moved["active_from"]}}}}) == []
    window = {"$gte": moved["active_from"], "$lte": moved["active_from"]}
    assert record_ids(query(http, attio, {"filter": {"stage": {"active_from": window}}})) == [record_id]


def test_record_id_in_filter_returns_exactly_those_records(attio, http, workspace):
    wanted = workspace.deal_ids()[10:15]
    rows = query(http, attio, {"filter": {"record_id": {"$in": wanted + ["00000000-0000-4000-8000-000000000000"]}}})
    assert sorted(record_ids(rows)) == sorted(wanted)
    assert record_ids(query(http, attio, {"filter": {"record_id": wanted[0]}})) == [wanted[0]]


def test_and_or_combine_filters(attio, http, workspace):
    ids = workspace.deal_ids()
    times = current_stage_times(workspace)
    pivot = sorted(times.values())[len(times) // 2]
    recent = {"stage": {"active_from": {"$gte": format_ts(pivot)}}}
    both = query(http, attio, {"filter": {"$and": [recent, {"record_id": {"$in": ids[:40]}}]}})
    assert set(record_ids(both)) == {r for r in ids[:40] if times[r] >= pivot}
    either = query(http, attio, {"filter": {"$or": [{"record_id": ids[0]}, {"record_id": {"$in": ids[5:7]}}]}})
    assert set(record_ids(either)) == {ids[0], ids[5], ids[6]}
    implicit = query(http, attio, {"filter": {**recent, "record_id": {"$in": ids[:40]}}})
    assert record_ids(implicit) == record_ids(both)


def test_shorthand_filters_match_stage_titles_and_text(attio, http, workspace):
    won = {r for r in workspace.deal_ids() if workspace.deal(r).current("stage")[0].status.title == "Won 🎉"}
    assert won
    assert set(record_ids(query(http, attio, {"filter": {"stage": "Won 🎉"}}))) == won
    assert set(record_ids(query(http, attio, {"filter": {"stage": workspace.status_id("Won 🎉")}}))) == won
    record_id = workspace.deal_ids()[3]
    name = workspace.deal(record_id).current("name")[0].fields["value"]
    assert record_ids(query(http, attio, {"filter": {"name": name}})) == [record_id]
    people = query(http, attio, {"filter": {"email_addresses": {"$not_empty": False}}}, "objects/people/records")
    assert people and all(p["values"]["email_addresses"] == [] for p in people)


@pytest.mark.parametrize("body", [
    {"filter": {"no_such_attribute": "x"}},
    {"filter": {"stage": {"active_from": {"$after": "2024-01-01T00:00:00Z"}}}},
    {"filter": {"stage": {"active_from": {"$gte": "yesterday"}}}},
    {"filter": {"$and": {"stage": "Lead"}}},
    {"filter": {"$xor": []}},
    {"sorts": [{"direction": "sideways", "attribute": "created_at"}]},
    {"sorts": [{"direction": "asc", "attribute": "no_such_attribute"}]},
])
def test_bad_filter_or_sort_is_a_400_filter_error(attio, http, body):
    response = http.post(f"{attio.url}/v2/objects/deals/records/query", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "filter_error" and response.json()["status_code"] == 400


@pytest.mark.parametrize("body", [{"limit": -1}, {"offset": "ten"}, {"limit": 1.5}])
def test_bad_paging_is_a_400_validation_error(attio, http, body):
    response = http.post(f"{attio.url}/v2/objects/deals/records/query", json=body)
    assert response.status_code == 400 and response.json()["code"] == "validation_type"


# ---- records query: paging and sorts -------------------------------------------------------------------------


def test_default_limit_is_500_and_offsets_page_without_gaps(http):
    workspace = Workspace.generate(seed=2, deals=1100)
    with AttioSandbox(workspace, rate_limit=None) as attio:
        sort = [{"direction": "asc", "attribute": "created_at"}]
        pages = [query(http, attio, {"sorts": sort, "offset": offset}) for offset in (0, 500, 1000)]
        assert [len(p) for p in pages] == [500, 500, 100]
        assert [r for page in pages for r in record_ids(page)] == workspace.deal_ids()
        small = [record_ids(query(http, attio, {"sorts": sort, "limit": 70, "offset": o})) for o in range(0, 1100, 70)]
        assert [r for page in small for r in page] == workspace.deal_ids()
        assert query(http, attio, {"offset": 1100}) == []


@pytest.mark.parametrize("filter_", [None, {"stage": {"active_from": {"$gte": "2000-01-01T00:00:00.000000000Z"}}}])
def test_a_walk_over_every_deal_pages_them_in_created_order_as_deals_come_move_and_go(http, filter_):
    """A backfill's query (no filter) and one every deal matches: the pages hold every deal once, by
    (created_at, record id), however deep."""
    workspace = Workspace.generate(seed=2, deals=1100)
    body = {"sorts": [{"direction": "asc", "attribute": "created_at"}], "limit": 70}
    if filter_ is not None:
        body["filter"] = filter_

    def every_page() -> list[str]:
        pages = [record_ids(query(http, attio, {**body, "offset": o})) for o in range(0, 1200, 70)]
        return [record_id for page in pages for record_id in page]

    def by_creation() -> list[str]:
        return [d.record_id for d in sorted((workspace.deal(r) for r in workspace.deals.items),
                                            key=lambda d: (d.created_at, d.record_id))]

    with AttioSandbox(workspace, rate_limit=None) as attio:
        assert every_page() == by_creation()
        created = workspace.create_deal("Deal of today", "Lead")
        assert every_page() == by_creation() and every_page()[-1] == created
        workspace.move_deal(by_creation()[10], "Negotiation")
        assert every_page() == by_creation()
        gone = by_creation()[500]
        workspace.delete_deal(gone)
        assert every_page() == by_creation() and gone not in every_page()


def test_sorts_order_rows_and_break_ties_by_record_id(attio, http, workspace):
    at = datetime.now(UTC) - timedelta(minutes=5)
    tied = sorted(workspace.create_deal(f"Tie {i}", "Lead", at=at) for i in range(4))
    newest_first = record_ids(query(http, attio, {"sorts": [{"direction": "desc", "attribute": "created_at"}]}))
    assert newest_first[:4] == tied
    by_id = record_ids(query(http, attio, {"sorts": [{"direction": "asc", "attribute": "record_id"}]}))
    assert by_id == sorted(workspace.deal_ids())
    by_id_desc = record_ids(query(http, attio, {"sorts": [{"direction": "desc", "attribute": "record_id"}]}))
    assert by_id_desc == sorted(workspace.deal_ids(), reverse=True)
    by_stage_time = query(http, attio, {"sorts": [{"direction": "asc", "attribute": "stage", "field": "active_from"}]})
    times = [row["values"]["stage"][0]["active_from"] for row in by_stage_time]
    assert times == sorted(times)


def test_records_carry_every_attribute_with_only_active_values(attio, http, workspace):
    record_id = workspace.deal_ids()[0]
    workspace.move_deal(record_id, "Demo")
    (row,) = query(http, attio, {"filter": {"record_id": record_id}})
    assert row["id"] == {"workspace_id": workspace.workspace_id, "object_id": workspace.deals.id,
                         "record_id": record_id}
    assert set(row["values"]) == {"name", "stage", "owner", "value", "associated_people", "associated_company"}
    assert [v["status"]["title"] for v in row["values"]["stage"]] == ["Demo"]
    assert all(v["active_until"] is None for values in row["values"].values() for v in values)
    single = http.get(f"{attio.url}/v2/objects/deals/records/{record_id}").json()["data"]
    assert single == row


# ---- stage histories -----------------------------------------------------------------------------------------


def test_stage_history_is_oldest_first_with_active_until_chaining(attio, http, workspace):
    record_id = next(r for r in workspace.deal_ids() if len(workspace.deal(r).values["stage"]) >= 4)
    url = f"{attio.url}/v2/objects/deals/records/{record_id}/attributes/stage/values"
    history = http.get(url, params={"show_historic": "true"}).json()["data"]
    assert history == workspace.stage_history(record_id)
    assert [v["active_from"] for v in history] == sorted(v["active_from"] for v in history)
    for before, after in zip(history, history[1:], strict=False):
        assert before["active_until"] == after["active_from"]
    assert history[-1]["active_until"] is None
    assert http.get(url).json()["data"] == history[-1:]
    page = http.get(url, params={"show_historic": "true", "limit": 2, "offset": 1}).json()["data"]
    assert page == history[1:3]


def test_history_shows_the_renamed_stage_under_its_current_title(attio, http, workspace):
    renamed_id = workspace.renamed_stage[0]
    record_id = next(
        r for r in workspace.deal_ids()
        if any(v.status.status_id == renamed_id for v in workspace.deal(r).values["stage"])
    )
    url = f"{attio.url}/v2/objects/deals/records/{record_id}/attributes/stage/values?show_historic=true"
    titles = [v["status"]["title"] for v in http.get(url).json()["data"]]
    assert RENAMED_TO in titles and RENAMED_FROM not in titles


def test_history_of_an_unknown_or_deleted_record_is_a_404(attio, http, workspace):
    record_id = workspace.deal_ids()[0]
    workspace.delete_deal(record_id)
    for path in (f"records/{record_id}/attributes/stage/values", "records/not-a-uuid/attributes/stage/values",
                 f"records/{workspace.deal_ids()[1]}/attributes/nope/values"):
        response = http.get(f"{attio.url}/v2/objects/deals/{path}", params={"show_historic": "true"})
        assert response.status_code == 404 and response.json()["code"] == "not_found"


# ---- lists ---------------------------------------------------------------------------------------------------


def test_list_entries_point_at_deals_and_one_deal_has_two_entries(attio, http, workspace):
    entries = query(http, attio, {"limit": 1000}, "lists/sales_pipeline/entries")
    assert len(entries) == len(workspace.entry_ids())
    parents = [e["parent_record_id"] for e in entries]
    assert set(parents) <= set(workspace.deal_ids())
    assert any(parents.count(p) == 2 for p in parents)
    entry = entries[0]
    assert entry["parent_object"] == "deals" and entry["id"]["list_id"] == workspace.list_id
    assert set(entry["entry_values"]) == {"stage"}
    by_id = http.get(f"{attio.url}/v2/lists/{workspace.list_id}/entries/{entry['id']['entry_id']}").json()["data"]
    assert by_id == entry


def test_entries_filter_on_their_own_stage_active_from(attio, http, workspace):
    entry_id = workspace.entry_ids()[0]
    cursor = max(workspace.entry(e).current("stage")[0].active_from for e in workspace.entry_ids())
    moved = workspace.move_entry(entry_id, "Proposal")
    rows = query(http, attio, {"filter": {"stage": {"active_from": {"$gt": format_ts(cursor)}}}},
                 "lists/sales_pipeline/entries")
    assert [r["id"]["entry_id"] for r in rows] == [entry_id]
    url = f"{attio.url}/v2/lists/sales_pipeline/entries/{entry_id}/attributes/stage/values"
    history = http.get(url, params={"show_historic": "true"}).json()["data"]
    assert history[-1] == moved and history == workspace.entry_history(entry_id)
    parent = workspace.entry(entry_id).parent_record_id
    by_parent = query(http, attio, {"filter": {"parent_record_id": parent}}, "lists/sales_pipeline/entries")
    assert {r["id"]["entry_id"] for r in by_parent} == set(workspace.entry_ids(parent))


# ---- rate limit ----------------------------------------------------------------------------------------------


def wait_for_fresh_second() -> None:
    fraction = time.time() % 1
    if fraction > 0.5:
        time.sleep(1 - fraction + 0.01)


def test_over_rate_limit_answers_429_with_http_date(workspace, http):
    with AttioSandbox(workspace, rate_limit=3) as attio:
        wait_for_fresh_second()
        second = int(time.time())
        answers = [http.get(f"{attio.url}/v2/self") for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        limited = answers[3]
        assert limited.json() == {"status_code": 429, "type": "rate_limit_error", "code": "rate_limit_exceeded",
                                  "message": limited.json()["message"]}
        retry_at = email.utils.parsedate_to_datetime(limited.headers["Retry-After"])
        assert limited.headers["Retry-After"].endswith(" GMT")
        assert retry_at.timestamp() == second + 1
        assert attio.stats["rate_limited"] == 2
        time.sleep(max(0.0, retry_at.timestamp() - time.time()) + 0.01)
        assert http.get(f"{attio.url}/v2/self").status_code == 200


def test_without_rate_limit_nothing_is_429(workspace, http):
    with AttioSandbox(workspace, rate_limit=None) as attio:
        statuses = {http.get(f"{attio.url}/v2/self").status_code for _ in range(150)}
        assert statuses == {200}


# ---- faults --------------------------------------------------------------------------------------------------


def test_fail_next_status_answers_that_status_then_recovers(attio, http):
    attio.fail_next(2, kind="status", status=500)
    assert [http.get(f"{attio.url}/v2/self").status_code for _ in range(3)] == [500, 500, 200]
    attio.fail_next(1, status=503)
    assert http.get(f"{attio.url}/v2/self").status_code == 503
    assert attio.stats["faults"] == 3


def test_fail_next_timeout_answers_after_the_client_gave_up(workspace, http):
    with AttioSandbox(workspace, rate_limit=None, faults=Faults(timeout_seconds=1.0)) as attio:
        attio.fail_next(1, kind="timeout")
        with pytest.raises(requests.exceptions.ReadTimeout):
            http.get(f"{attio.url}/v2/self", timeout=0.2)
        assert http.get(f"{attio.url}/v2/self", timeout=2).status_code == 200


def test_fail_next_drop_closes_the_connection_without_an_answer(attio, http):
    attio.fail_next(1, kind="drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(f"{attio.url}/v2/objects/deals/records/query", json={})
    assert http.post(f"{attio.url}/v2/objects/deals/records/query", json={}).status_code == 200


def test_fail_next_malformed_answers_200_with_truncated_json(attio, http):
    attio.fail_next(1, kind="malformed")
    response = http.post(f"{attio.url}/v2/objects/deals/records/query", json={"limit": 5})
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()
    assert len(http.post(f"{attio.url}/v2/objects/deals/records/query", json={"limit": 5}).json()["data"]) == 5


def test_fail_next_rejects_an_unknown_kind(attio):
    with pytest.raises(ValueError):
        attio.fail_next(1, kind="explode")


def test_random_faults_are_drawn_from_the_seed(workspace, http):
    def run() -> list[int]:
        faults = Faults(error_rate=0.4, statuses=(500, 503), seed=42)
        with AttioSandbox(workspace, rate_limit=None, faults=faults) as attio:
            return [http.get(f"{attio.url}/v2/self").status_code for _ in range(30)]

    first = run()
    assert first == run()
    assert {500, 503, 200} == set(first)


def test_latency_delays_every_answer(workspace, http):
    with AttioSandbox(workspace, rate_limit=None, latency=0.15) as attio:
        started = time.perf_counter()
        http.get(f"{attio.url}/v2/self")
        assert time.perf_counter() - started >= 0.15


def test_stop_closes_keep_alive_connections(workspace, http):
    attio = AttioSandbox(workspace, rate_limit=None)
    url = attio.start()
    assert http.get(f"{url}/v2/self").status_code == 200
    attio.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(f"{url}/v2/self", timeout=2)


# ---- stats and admin -----------------------------------------------------------------------------------------


def test_stats_count_requests_by_kind_but_not_admin_calls(attio, http):
    http.get(f"{attio.url}/v2/self")
    http.post(f"{attio.url}/v2/objects/deals/records/query", json={})
    http.post(f"{attio.url}/v2/objects/deals/records/query", json={})
    http.post(f"{attio.url}/v2/objects/people/records/query", json={})
    requests.get(f"{attio.url}/_sandbox/stats")
    stats = attio.stats
    assert stats["requests"] == 4
    assert stats["by_kind"] == {"self": 1, "records_query": 3}
    assert stats["queries"] == {"deals": 2, "people": 1}
    assert requests.get(f"{attio.url}/_sandbox/stats").json() == stats
    attio.reset_stats()
    assert attio.stats["requests"] == 0
    assert attio.stats["queries"] == {}


def test_admin_move_changes_a_deal_or_entry_stage(attio, http, workspace):
    record_id = workspace.deal_ids()[4]
    moved = requests.post(f"{attio.url}/_sandbox/move", json={"record_id": record_id, "stage": "Lost"}).json()
    assert moved["data"]["status"]["title"] == "Lost"
    assert workspace.stage_history(record_id)[-1] == moved["data"]
    entry_id = workspace.entry_ids()[0]
    moved = requests.post(f"{attio.url}/_sandbox/move", json={"entry_id": entry_id, "stage": "Demo"}).json()
    assert workspace.entry_history(entry_id)[-1] == moved["data"]
    missing = requests.post(f"{attio.url}/_sandbox/move", json={"record_id": "nope", "stage": "Lost"})
    assert missing.status_code == 404
    assert requests.post(f"{attio.url}/_sandbox/move", json={"record_id": record_id}).status_code == 400
    assert attio.stats["requests"] == 0


def test_admin_fail_next_injects_faults(attio, http):
    answer = requests.post(f"{attio.url}/_sandbox/fail_next", json={"n": 2, "kind": "status", "status": 502})
    assert answer.json() == {"pending": 2}
    assert [http.get(f"{attio.url}/v2/self").status_code for _ in range(3)] == [502, 502, 200]


def test_admin_create_deal_and_transitions(attio, workspace):
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = requests.post(f"{attio.url}/_sandbox/create_deal",
                            json={"name": "Remote deal", "stage": "Lead", "value": 10, "currency_code": "EUR"})
    record_id = created.json()["record_id"]
    transitions = requests.get(f"{attio.url}/_sandbox/transitions", params={"since": format_ts(since)}).json()
    assert [t["record_id"] for t in transitions["data"]] == [record_id]
    assert transitions["data"][0]["from_status_id"] is None


# ---- speed and the serve command -----------------------------------------------------------------------------


def test_changed_since_query_over_ten_thousand_deals_pages_the_right_deals(http):
    """Speed is the benchmark's business (benchmarks/bench.py); this checks the indexed path is right."""
    workspace = Workspace.generate(seed=1, deals=10_000)
    times = sorted(current_stage_times(workspace).values())
    body = {
        "filter": {"stage": {"active_from": {"$gte": format_ts(times[len(times) // 3])}}},
        "sorts": [{"direction": "asc", "attribute": "created_at"}],
        "limit": 500,
    }
    with AttioSandbox(workspace, rate_limit=None) as attio:
        wanted = {r for r, t in current_stage_times(workspace).items() if t >= times[len(times) // 3]}
        seen: list[str] = []
        for offset in range(0, len(wanted) + 500, 500):
            page = http.post(f"{attio.url}/v2/objects/deals/records/query", json={**body, "offset": offset})
            seen += [row["id"]["record_id"] for row in page.json()["data"]]
        assert len(seen) == len(set(seen)) and set(seen) == wanted
        changed = {"filter": {"stage": {"active_from": {"$gt": format_ts(times[-1])}}}}
        response = http.post(f"{attio.url}/v2/objects/deals/records/query", json=changed)
        assert response.json() == {"data": []}


def test_serve_prints_one_json_line_and_the_cli_exports_and_stops_on_sigterm(tmp_path):
    events_file = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "sync.sandbox", "serve", "--deals", "40", "--seed", "3", "--rate-limit", "50",
         "--events-file", str(events_file)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert set(info) == {"attio_url", "attio_token", "usermaven_events_url", "usermaven_api_key",
                             "usermaven_server_token", "deals"}
        assert info["deals"] == 40
        exports = dict(process.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(6))
        assert exports == {
            "ATTIO_BASE_URL": info["attio_url"], "ATTIO_API_KEY": info["attio_token"],
            "USERMAVEN_EVENTS_URL": info["usermaven_events_url"], "USERMAVEN_API_KEY": info["usermaven_api_key"],
            "USERMAVEN_SERVER_TOKEN": info["usermaven_server_token"], "USERMAVEN_SITE_URL": "https://sandbox.example",
        }
        me = requests.get(f"{info['attio_url']}/v2/self",
                          headers={"Authorization": f"Bearer {info['attio_token']}"}, timeout=5)
        assert me.json()["active"] is True
        token = f"{info['usermaven_api_key']}.{info['usermaven_server_token']}"
        sent = requests.post(info["usermaven_events_url"], params={"token": token},
                             json={"event_type": "Deal Stage Changed", "event_id": "e1"}, timeout=5)
        assert sent.json() == {"status": "ok"}
        assert json.loads(events_file.read_text())["event_id"] == "e1"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_record_entries_lists_every_entry_of_a_record(attio, workspace):
    twice = next(r for r in workspace.deal_ids() if len(workspace.entry_ids(r)) == 2)
    response = requests.get(f"{attio.url}/v2/objects/deals/records/{twice}/entries",
                            headers={"Authorization": f"Bearer {attio.token}"}, timeout=5)
    assert response.status_code == 200
    rows = response.json()["data"]
    assert sorted(r["entry_id"] for r in rows) == sorted(workspace.entry_ids(twice))
    assert {r["list_api_slug"] for r in rows} == {"sales_pipeline"}
    assert {r["list_id"] for r in rows} == {workspace.list_id}
    missing = requests.get(f"{attio.url}/v2/objects/deals/records/00000000-0000-4000-8000-000000000000/entries",
                           headers={"Authorization": f"Bearer {attio.token}"}, timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_the_readmes_way_to_move_a_deal_moves_it(attio, workspace):
    """README, "The sandbox and the demo": its two commands, a records query for an id and the move."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The sandbox and the demo", 1)[1].split("\n## ", 1)[0]
    [query] = re.findall(r"-d '(\{[^']*\})' \"\$ATTIO_BASE_URL(/v2/objects/deals/records/query)\"", section)
    [move] = re.findall(r"-d '(\{[^']*\})' \"\$ATTIO_BASE_URL(/_sandbox/move)\"", section)
    found = requests.post(f"{attio.url}{query[1]}", data=query[0].encode(), timeout=5,
                          headers={"Authorization": f"Bearer {attio.token}", "Content-Type": "application/json"})
    record_id = found.json()["data"][0]["id"]["record_id"]
    body = move[0].replace("RECORD_ID", record_id)
    moved = requests.post(f"{attio.url}{move[1]}", data=body.encode(), timeout=5,
                          headers={"Content-Type": "application/json"})
    assert moved.status_code == 200
    assert workspace.deal(record_id).current("stage")[0].status.title == json.loads(body)["stage"]
    assert workspace.expected_transitions()[-1].record_id == record_id
