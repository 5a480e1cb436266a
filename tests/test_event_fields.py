"""What a marketer builds goals on, end to end through the CLI: the deal's own fields, first entry into a stage,
time in the previous stage, stage ids, `utc_time`, per-stage event names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.models import epoch_ms
from tests.conftest import NOW, days, ledger_rows, queries, uid

MINUTE = timedelta(minutes=1)
CREATED = NOW - days(700)


@pytest.fixture
def fields(env, workspace, monkeypatch):
    """d1 carries a lead source, tags, a partner company, a closer, a close date and a contract value."""
    ws = workspace
    ws.add_company("Partner Co", record_id=uid("c2"))
    ws.add_attribute("lead_source", "select", options=["Webinar", "Referral"])
    ws.add_attribute("tags", "select", multiselect=True, options=["Enterprise", "Upsell", "Churn risk"])
    ws.add_attribute("partner", "record-reference", allowed_objects=["companies"])
    ws.add_attribute("closer", "actor-reference")
    ws.add_attribute("close_date", "date")
    ws.add_attribute("contract", "currency")
    ws.add_attribute("phone", "phone-number")
    ws.add_attribute("region", "text")
    d1 = uid("d1")
    ws.set_deal_values(d1, "lead_source", "Webinar", at=CREATED)
    ws.set_deal_values(d1, "tags", "Enterprise", "Upsell", at=CREATED)
    ws.set_deal_values(d1, "partner", uid("c2"), at=CREATED)
    ws.set_deal_values(d1, "closer", ws.members[0].member_id, at=CREATED)
    ws.set_deal_values(d1, "close_date", "2026-03-31", at=CREATED)
    ws.set_deal_values(d1, "contract", (9900, "EUR"), at=CREATED)
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "lead_source,tags,partner,closer,close_date,contract,region")
    return ws


def test_deal_fields_first_entry_and_time_in_stage_arrive_at_usermaven(attio, fields, usermaven, run, monkeypatch):
    monkeypatch.setenv("USERMAVEN_STAGE_EVENT_TYPES", f"Won 🎉=Deal Won;{fields.status_id('Lost')}=Deal Lost")
    assert run("run")[0] == 0  # baseline
    moves = [("Won 🎉", 1), ("Demo", 3), ("Won 🎉", 63), ("Lost", 70)]
    for title, minutes in moves:
        fields.move_deal(uid("d1"), title, NOW + minutes * MINUTE)
    fields.set_deal_values(uid("d2"), "partner", uid("c1"), at=CREATED)
    fields.move_deal(uid("d2"), "Demo", NOW + 90 * MINUTE)
    fields.clock = NOW + 100 * MINUTE
    company_queries = len(queries(attio, "companies"))
    assert run("run")[0] == 0
    events = [e for e in usermaven.events if e["event_attributes"]["deal_id"] == uid("d1")]
    assert [e["event_type"] for e in events] == ["Deal Won", "Deal Stage Changed", "Deal Won", "Deal Lost"]
    attrs = [e["event_attributes"] for e in events]
    assert [(a["previous_stage"], a["deal_stage"], a["first_time_in_stage"]) for a in attrs] == [
        ("Qualified", "Won 🎉", True), ("Won 🎉", "Demo", True), ("Demo", "Won 🎉", False), ("Won 🎉", "Lost", True)]
    stage = fields.status_id
    assert [(a["previous_stage_id"], a["deal_stage_id"]) for a in attrs] == [
        (stage("Qualified"), stage("Won 🎉")), (stage("Won 🎉"), stage("Demo")),
        (stage("Demo"), stage("Won 🎉")), (stage("Won 🎉"), stage("Lost"))]
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
    assert len(queries(attio, "companies")) == company_queries + 2


def test_backfill_knows_a_deal_was_won_before_the_range(workspace, usermaven, run):
    workspace.move_deal(uid("d2"), "Won 🎉", NOW - days(300))
    workspace.move_deal(uid("d2"), "Demo", NOW - days(200))
    workspace.move_deal(uid("d2"), "Won 🎉", NOW - days(100))
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


def test_missing_attribute_exits_2_naming_it_before_reading_any_history(attio, fields, usermaven, run, monkeypatch):
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "lead_source,lead_sorce")
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 2
    assert "ATTIO_EVENT_ATTRIBUTES: 'lead_sorce' is not an attribute of the object 'deals'" in err
    # A backfill asks for its first page of deals with the checks (one round trip for both); nothing more.
    assert [(q.identifier, q.body["offset"]) for q in attio.queries] in ([], [("deals", 0)])
    assert sum(attio.history_reads.values()) == 0
    assert usermaven.batches == []


def test_type_that_cannot_be_rendered_is_named(attio, fields, usermaven, run, monkeypatch):
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", "phone")
    code, out, err = run("run")
    assert code == 2
    assert "'phone' is of type 'phone-number', which cannot be put on the event" in err
    assert attio.queries == []


def test_stage_event_types_naming_no_stage_exit_2(attio, workspace, usermaven, run, monkeypatch):
    monkeypatch.setenv("USERMAVEN_STAGE_EVENT_TYPES", "Won=Deal Won")
    code, out, err = run("run")
    assert code == 2
    assert "USERMAVEN_STAGE_EVENT_TYPES names 'Won', not a stage of 'stage'" in err and "'Won 🎉'" in err
    assert attio.queries == []


def test_list_entry_attributes_on_backfill_and_replay(workspace, usermaven, run, monkeypatch):
    # Deals have an `owner` too: the list's is named by its attribute id, and the entry's owner is not the deal's.
    entry_owner = workspace.add_attribute("owner", "actor-reference", target="sales_pipeline")
    monkeypatch.setenv("ATTIO_LIST", "sales_pipeline")
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", f"{entry_owner.attribute_id},value")
    workspace.add_entry(uid("d1"), "Lead", NOW - days(30), entry_id=uid("e1"))
    workspace.move_entry(uid("e1"), "Won 🎉", NOW - days(2))
    grace = workspace.members[1]  # the deal's owner is Ada Lovelace
    workspace.set_entry_values(uid("e1"), "owner", grace.member_id, at=NOW - days(30))
    assert run("run", "--backfill", "--since", "2020-01-01")[0] == 0
    assert run("replay", uid("d1"))[0] == 0
    events = usermaven.events
    assert len(events) == 4
    for event in events:
        attrs = event["event_attributes"]
        # `owner` of the list entry, `value` (a currency) of the deal record, with its code beside it
        assert (attrs["owner"], attrs["value"], attrs["value_currency"]) == ("Grace Hopper", 4200, "USD")
        assert attrs["deal_owner"] == "Ada Lovelace"
        assert attrs["entry_id"] == uid("e1")
    assert datetime.strptime(events[0]["utc_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == NOW - days(30)


def test_every_type_from_the_sandbox_arrives_in_plain_form(workspace, usermaven, run, monkeypatch):
    typed = {
        "score": ("number", (12.5,), 12.5), "stars": ("rating", (4,), 4), "signed": ("checkbox", (False,), False),
        "renewal": ("timestamp", (datetime(2026, 3, 5, 14, 30, 0, 123456, tzinfo=UTC),),
                    "2026-03-05T14:30:00.123456Z"),
        "health": ("status", ("At risk",), "At risk"), "site": ("domain", ("app.acme.com",), "app.acme.com"),
        "billing": ("email-address", ("Billing@Acme.com",), "billing@acme.com"),
        "office": ("location", ({"line_1": "1 Main St", "locality": "London", "country_code": "GB"},),
                   "1 Main St, London, GB"),
        "people": ("record-reference", (workspace.add_person(name="Jane Doe"), workspace.add_person(name="Li Wei")),
                   ["Jane Doe", "Li Wei"]),
    }
    for slug, (kind, values, _) in typed.items():
        workspace.add_attribute(slug, kind, multiselect=len(values) > 1,
                                options=["On track", "At risk"] if kind == "status" else ())
        workspace.set_deal_values(uid("d2"), slug, *values, at=NOW - days(10))
    workspace.move_deal(uid("d2"), "Demo", NOW - days(5))
    monkeypatch.setenv("ATTIO_EVENT_ATTRIBUTES", ",".join(typed))
    assert run("run", "--backfill", "--since", (NOW - days(30)).strftime("%Y-%m-%d"))[0] == 0
    [event] = usermaven.events
    assert {slug: event["event_attributes"][slug] for slug in typed} == {
        slug: plain for slug, (_, _, plain) in typed.items()}
