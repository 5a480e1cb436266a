"""What a marketer builds goals on, end to end through the CLI: the deal's own fields, first entry into a stage,
time in the previous stage, stage ids, `utc_time`, per-stage event names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.models import epoch_ms
from tests.attio_shapes import MEMBER, STAGES, FakeEntry, attribute, days, uid, value_of
from tests.conftest import NOW, ledger_rows

MINUTE = timedelta(minutes=1)
CREATED = NOW - days(700)


def option(slug: str, title: str) -> dict:
    return {"id": {"workspace_id": "w", "object_id": "o", "attribute_id": uid(f"attr/{slug}"),
                   "option_id": uid(f"option/{title}")}, "title": title, "is_archived": False}


@pytest.fixture
def fields(env, workspace, monkeypatch):
    """d1 carries a lead source, tags, a partner company, a closer, a close date and a contract value."""
    workspace.companies[uid("c2")] = "Partner Co"
    workspace.deal_attributes += [
        attribute("lead_source", "select"), {**attribute("tags", "select"), "is_multiselect": True},
        attribute("partner", "record-reference"), attribute("closer", "actor-reference"),
        attribute("close_date", "date"), attribute("contract", "currency"), attribute("phone", "phone-number"),
        attribute("region", "text")]
    workspace.deals[uid("d1")].extra = {
        "lead_source": [value_of("select", CREATED, option=option("lead_source", "Webinar"))],
        "tags": [value_of("select", CREATED, option=option("tags", "Enterprise")),
                 value_of("select", CREATED, option=option("tags", "Upsell"))],
        "partner": [value_of("record-reference", CREATED, target_object="companies", target_record_id=uid("c2"))],
        "closer": [value_of("actor-reference", CREATED, referenced_actor_type="workspace-member",
                            referenced_actor_id=MEMBER)],
        "close_date": [value_of("date", CREATED, value="2026-03-31")],
        "contract": [value_of("currency", CREATED, currency_value=9900, currency_code="EUR")],
    }
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "lead_source,tags,partner,closer,close_date,contract,region")
    return workspace


def test_deal_fields_first_entry_and_time_in_stage_arrive_at_usermaven(fields, usermaven, run, monkeypatch):
    monkeypatch.setenv("USERMAVEN_STAGE_EVENT_TYPES", f"Won 🎉=Deal Won;{STAGES['Lost']}=Deal Lost")
    assert run("run")[0] == 0  # baseline
    moves = [("Won 🎉", 1), ("Demo", 3), ("Won 🎉", 63), ("Lost", 70)]
    for title, minutes in moves:
        fields.move(uid("d1"), title, NOW + minutes * MINUTE)
    fields.deals[uid("d2")].extra = {"partner": [value_of("record-reference", CREATED, target_object="companies",
                                                          target_record_id=uid("c1"))]}
    fields.move(uid("d2"), "Demo", NOW + 90 * MINUTE)
    fields.clock = NOW + 100 * MINUTE
    company_queries = len([q for q in fields.queries if q["object"] == "companies"])
    assert run("run")[0] == 0
    events = [e for e in usermaven.events if e["event_attributes"]["deal_id"] == uid("d1")]
    assert [e["event_type"] for e in events] == ["Deal Won", "Deal Stage Changed", "Deal Won", "Deal Lost"]
    attrs = [e["event_attributes"] for e in events]
    assert [(a["previous_stage"], a["deal_stage"], a["first_time_in_stage"]) for a in attrs] == [
        ("Qualified", "Won 🎉", True), ("Won 🎉", "Demo", True), ("Demo", "Won 🎉", False), ("Won 🎉", "Lost", True)]
    assert [(a["previous_stage_id"], a["deal_stage_id"]) for a in attrs] == [
        (STAGES["Qualified"], STAGES["Won 🎉"]), (STAGES["Won 🎉"], STAGES["Demo"]),
        (STAGES["Demo"], STAGES["Won 🎉"]), (STAGES["Won 🎉"], STAGES["Lost"])]
    # Qualified since 600 days before NOW (its history), then 2, 60 and 7 minutes
    assert [a["seconds_in_previous_stage"] for a in attrs] == [600 * 86_400 + 60, 120, 3600, 420]
    assert {a["deal_created_at"] for a in attrs} == {CREATED.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    for event, (_, minutes) in zip(events, moves, strict=True):
        assert event["_timestamp"] == epoch_ms(NOW + minutes * MINUTE)
        assert event["utc_time"] == (NOW + minutes * MINUTE).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    added = {"lead_source": "Webinar", "tags": ["Enterprise", "Upsell"], "partner": "Partner Co",
             "closer": "Ada Lovelace", "close_date": "2026-03-31", "contract": 9900, "contract_currency": "EUR",
             "region": None}
    assert {key: attrs[0][key] for key in added} == added
    [d2] = [e["event_attributes"] for e in usermaven.events if e["event_attributes"]["deal_id"] == uid("d2")]
    assert (d2["partner"], d2["lead_source"], d2["tags"], d2["contract"]) == ("Acme Inc", None, [], None)
    # per batch of deals: one query for the deals' companies, one for the names their attributes point at
    assert len([q for q in fields.queries if q["object"] == "companies"]) == company_queries + 2


def test_backfill_knows_a_deal_was_won_before_the_range(workspace, usermaven, run):
    workspace.move(uid("d2"), "Won 🎉", NOW - days(300))
    workspace.move(uid("d2"), "Demo", NOW - days(200))
    workspace.move(uid("d2"), "Won 🎉", NOW - days(100))
    since = (NOW - days(250)).strftime("%Y-%m-%d")
    assert run("run", "--backfill", "--since", since)[0] == 0
    d2 = [e["event_attributes"] for e in usermaven.events if e["event_attributes"]["deal_id"] == uid("d2")]
    assert [(a["deal_stage"], a["first_time_in_stage"], a["seconds_in_previous_stage"]) for a in d2] == [
        ("Demo", True, 100 * 86_400), ("Won 🎉", False, 100 * 86_400)]


def test_replay_sends_the_same_times_byte_for_byte(workspace, usermaven, run, env):
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    first = {e["event_id"]: (e["_timestamp"], e["utc_time"]) for e in usermaven.events}
    stored = {r["event_id"]: r["payload"] for r in ledger_rows(env)}
    usermaven.batches.clear()
    assert run("replay", uid("d1"))[0] == 0
    again = {e["event_id"]: (e["_timestamp"], e["utc_time"]) for e in usermaven.events}
    assert again and again == {k: first[k] for k in again}
    for event_id, payload in ((r["event_id"], r["payload"]) for r in ledger_rows(env)):
        assert payload == stored[event_id]  # the deal did not change: the replayed payload is the same text


def test_missing_attribute_exits_2_naming_it_before_reading_deals(fields, usermaven, run, monkeypatch):
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "lead_source,lead_sorce")
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 2
    assert "ATTIO_EVENT_ATTRIBUTES: 'lead_sorce' is not an attribute of the object 'deals'" in err
    assert fields.queries == [] and sum(fields.history_reads.values()) == 0
    assert usermaven.batches == []


def test_type_that_cannot_be_rendered_is_named(fields, usermaven, run, monkeypatch):
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "phone")
    code, out, err = run("run")
    assert code == 2
    assert "'phone' is of type 'phone-number', which cannot be put on the event" in err
    assert fields.queries == []


def test_stage_event_types_naming_no_stage_exit_2(workspace, usermaven, run, monkeypatch):
    monkeypatch.setenv("USERMAVEN_STAGE_EVENT_TYPES", "Won=Deal Won")
    code, out, err = run("run")
    assert code == 2
    assert "USERMAVEN_STAGE_EVENT_TYPES names 'Won', not a stage of 'stage'" in err and "'Won 🎉'" in err
    assert workspace.queries == []


def test_list_entry_attributes_on_backfill_and_replay(workspace, usermaven, run, monkeypatch):
    monkeypatch.setenv("ATTIO_LIST", "sales_pipeline")
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "owner,value")
    workspace.entries[uid("e1")] = FakeEntry(uid("e1"), uid("d1"), NOW - days(30), [
        ("Lead", NOW - days(30)), ("Won 🎉", NOW - days(2))], extra={"owner": [value_of(
            "actor-reference", NOW - days(30), referenced_actor_type="workspace-member", referenced_actor_id=MEMBER)]})
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    assert run("replay", uid("d1"))[0] == 0
    events = usermaven.events
    assert len(events) == 4
    for event in events:
        attrs = event["event_attributes"]
        # `owner` of the list entry, `value` (a currency) of the deal record, with its code beside it
        assert (attrs["owner"], attrs["value"], attrs["value_currency"]) == ("Ada Lovelace", 4200, "USD")
        assert attrs["entry_id"] == uid("e1")
    assert datetime.strptime(events[0]["utc_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == NOW - days(30)
