"""What tests steer and observe in the Attio sandbox: an empty workspace with chosen ids, Attio's clock,
faults aimed at one endpoint or one record's history, a deal deleted before its history is read, a list
refusing the active_from filter, and the queries and history reads it received."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from sync.sandbox import AttioSandbox, Workspace
from sync.sandbox.endpoints import Query

CLOCK = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def workspace() -> Workspace:
    ws = Workspace.empty(clock=CLOCK)
    person = ws.add_person("jane@acme.com", record_id="p-1")
    ws.create_deal("Acme", "Lead", people=[person], at=CLOCK - timedelta(days=3), record_id="d-1")
    ws.move_deal("d-1", "Qualified", CLOCK - timedelta(days=2))
    ws.create_deal("Beta", "Lead", at=CLOCK - timedelta(days=1), record_id="d-2")
    ws.add_entry("d-1", "Lead", CLOCK - timedelta(days=1), entry_id="e-1")
    return ws


@pytest.fixture
def attio(workspace: Workspace) -> Iterator[AttioSandbox]:
    with AttioSandbox(workspace, rate_limit=None) as sandbox:
        yield sandbox


@pytest.fixture
def http(attio: AttioSandbox) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {attio.token}"
        yield session


def history(http: requests.Session, attio: AttioSandbox, record_id: str) -> requests.Response:
    return http.get(f"{attio.url}/v2/objects/deals/records/{record_id}/attributes/stage/values",
                    params={"show_historic": "true"}, timeout=5)


def test_empty_workspace_has_the_schema_but_no_records():
    ws = Workspace.empty()
    assert (len(ws.deals.items), len(ws.people.items), len(ws.companies.items)) == (0, 0, 0)
    assert ws.pipeline is not None and len(ws.pipeline.items) == 0
    assert {"name", "stage", "value", "owner", "associated_people", "associated_company"} <= set(ws.deals.attributes)
    assert "Won 🎉" in [s.title for s in ws.statuses]


def test_chosen_ids_are_kept_and_a_taken_one_is_refused(workspace):
    assert workspace.deal_ids() == ["d-1", "d-2"]
    assert workspace.entry_ids("d-1") == ["e-1"]
    with pytest.raises(ValueError, match="already has"):
        workspace.create_deal("Again", "Lead", record_id="d-1")


def test_attios_clock_is_the_date_header_and_the_time_of_undated_writes(attio, http, workspace):
    assert http.get(f"{attio.url}/v2/self", timeout=5).headers["Date"] == "Sun, 01 Mar 2026 12:00:00 GMT"
    workspace.clock = CLOCK + timedelta(minutes=5)
    workspace.move_deal("d-2", "Demo")
    assert workspace.deal("d-2").current("stage")[0].active_from == CLOCK + timedelta(minutes=5)
    assert http.get(f"{attio.url}/v2/self", timeout=5).headers["Date"] == "Sun, 01 Mar 2026 12:05:00 GMT"


def test_faults_aimed_at_one_endpoint_spare_the_others(attio, http):
    attio.fail_next(1, status=429, endpoint="records_query")
    assert http.get(f"{attio.url}/v2/self", timeout=5).status_code == 200
    limited = http.post(f"{attio.url}/v2/objects/deals/records/query", json={}, timeout=5)
    assert limited.status_code == 429
    assert limited.json()["type"] == "rate_limit_error"
    retry_at = email.utils.parsedate_to_datetime(limited.headers["Retry-After"])
    assert retry_at == CLOCK + timedelta(seconds=1)  # the next second of Attio's clock
    assert http.post(f"{attio.url}/v2/objects/deals/records/query", json={}, timeout=5).status_code == 200
    with pytest.raises(ValueError, match="unknown endpoint"):
        attio.fail_next(1, endpoint="records")


def test_a_status_fault_with_a_message_is_attios_own_error(attio, http):
    attio.fail_next(1, status=503)
    assert http.get(f"{attio.url}/v2/self", timeout=5).headers["Content-Type"] == "text/html"
    attio.fail_next(1, status=503, message="Service unavailable")
    answer = http.get(f"{attio.url}/v2/self", timeout=5)
    assert answer.status_code == 503
    assert answer.json() == {"status_code": 503, "type": "api_error", "code": "unavailable",
                             "message": "Service unavailable"}


def test_refused_history_reads_of_one_record_then_answers(attio, http):
    attio.fail_history("d-1", 2)
    assert [history(http, attio, "d-1").status_code for _ in range(3)] == [400, 400, 200]
    assert history(http, attio, "d-2").status_code == 200
    assert attio.history_reads == {"d-1": 3, "d-2": 1}
    assert history(http, attio, "d-1").json()["data"][-1]["status"]["title"] == "Qualified"


def test_a_stale_history_read_misses_the_newest_value_the_record_shows(attio, http, workspace):
    attio.stale_history("d-1")
    record = http.get(f"{attio.url}/v2/objects/deals/records/d-1", timeout=5).json()["data"]
    assert record["values"]["stage"][0]["status"]["title"] == "Qualified"
    titles = [[v["status"]["title"] for v in history(http, attio, "d-1").json()["data"]] for _ in range(2)]
    assert titles[0] == titles[1][:-1] and titles[1][-1] == "Qualified"


def test_a_deal_deleted_before_its_history_is_read_answers_404(attio, http, workspace):
    attio.delete_before_history("d-1")
    listed = http.post(f"{attio.url}/v2/objects/deals/records/query", json={}, timeout=5).json()["data"]
    assert [row["id"]["record_id"] for row in listed] == ["d-1", "d-2"]
    gone = history(http, attio, "d-1")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert workspace.deal_ids() == ["d-2"] and workspace.entry_ids() == []


def test_a_list_can_refuse_the_active_from_filter(attio, http):
    changed = {"filter": {"stage": {"active_from": {"$gte": "2026-01-01T00:00:00.000000Z"}}}}
    entries = f"{attio.url}/v2/lists/sales_pipeline/entries/query"
    assert len(http.post(entries, json=changed, timeout=5).json()["data"]) == 1
    attio.list_active_from = False
    refused = http.post(entries, json=changed, timeout=5)
    assert refused.status_code == 400 and refused.json()["code"] == "filter_error"
    assert http.post(entries, json={}, timeout=5).status_code == 200
    records = f"{attio.url}/v2/objects/deals/records/query"
    assert http.post(records, json=changed, timeout=5).status_code == 200


def test_queries_are_recorded_with_their_bodies(attio, http):
    body = {"filter": {"record_id": {"$in": ["d-2"]}}, "limit": 10, "offset": 0}
    http.post(f"{attio.url}/v2/objects/deals/records/query", json=body, timeout=5)
    http.post(f"{attio.url}/v2/lists/sales_pipeline/entries/query", json={}, timeout=5)
    assert attio.queries == [Query("objects", "deals", body), Query("lists", "sales_pipeline", {})]
    attio.reset_stats()
    assert attio.queries == [] and attio.history_reads == {}


def test_a_renamed_stage_keeps_its_id(attio, http, workspace):
    before = history(http, attio, "d-1").json()["data"][-1]["status"]
    workspace.rename_stage("Qualified", "Sales qualified")
    after = history(http, attio, "d-1").json()["data"][-1]["status"]
    assert (after["id"], after["title"]) == (before["id"], "Sales qualified")
    row = http.post(f"{attio.url}/v2/objects/deals/records/query", json={}, timeout=5).json()["data"][0]
    assert row["values"]["stage"][0]["status"]["title"] == "Sales qualified"  # the cached rendering too


def test_attributes_added_by_a_test_and_their_values(attio, http, workspace):
    workspace.add_attribute("tags", "select", multiselect=True, options=["Enterprise", "Upsell"])
    workspace.add_attribute("region", "text", target="sales_pipeline")
    listed = http.get(f"{attio.url}/v2/objects/deals/attributes", timeout=5).json()["data"]
    assert [(a["api_slug"], a["type"], a["is_multiselect"]) for a in listed][-1] == ("tags", "select", True)
    row = http.get(f"{attio.url}/v2/objects/deals/records/d-2", timeout=5).json()["data"]
    assert row["values"]["tags"] == []  # the cached rendering knows the new attribute
    workspace.set_deal_values("d-2", "tags", "Enterprise", "Upsell", at=CLOCK - timedelta(hours=2))
    workspace.set_deal_values("d-2", "tags", "Upsell")
    values = http.get(f"{attio.url}/v2/objects/deals/records/d-2/attributes/tags/values",
                      params={"show_historic": "true"}, timeout=5).json()["data"]
    assert [(v["option"]["title"], v["active_until"]) for v in values] == [
        ("Enterprise", "2026-03-01T12:00:00.000000000Z"), ("Upsell", "2026-03-01T12:00:00.000000000Z"),
        ("Upsell", None)]
    workspace.set_entry_values("e-1", "region", "EMEA")
    entry = http.get(f"{attio.url}/v2/lists/sales_pipeline/entries/e-1", timeout=5).json()["data"]
    assert entry["entry_values"]["region"][0]["value"] == "EMEA"


def test_writes_attio_would_refuse_are_refused(workspace):
    workspace.add_attribute("region", "text")
    workspace.add_attribute("partner", "record-reference", allowed_objects=["companies"])
    with pytest.raises(ValueError, match="not multi-select"):
        workspace.set_deal_values("d-1", "region", "EMEA", "APAC")
    with pytest.raises(TypeError):
        workspace.set_deal_values("d-1", "region", 3)
    with pytest.raises(KeyError, match="may point at"):
        workspace.set_deal_values("d-1", "partner", "p-1")  # a person, where only companies are allowed
    with pytest.raises(ValueError, match="move_deal"):
        workspace.set_deal_values("d-1", "stage", "Won 🎉")
    with pytest.raises(ValueError, match="already has"):
        workspace.add_attribute("region", "number")
