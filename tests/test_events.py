"""Transitions → events, identities, and reading Attio's value shapes: pure functions."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sync.attio import current_stage, deal_from_record, person_from_record, stage_value
from sync.attributes import EventAttribute
from sync.events import EventSettings, build_event, for_display, for_sending, resolve_identity
from sync.models import Deal, DealRef, Person, Transition, epoch_ms

FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = EventSettings(event_type="Deal Stage Changed", site_url="https://acme.example")
WHEN = datetime(2024, 2, 1, 10, 0, 0, 123456, tzinfo=UTC)


def transition(entry_id: str | None = None, first: bool = True) -> Transition:
    return Transition(event_id="evt-1", deal=DealRef("rec-1", entry_id), from_stage_id="s-lead",
                      from_stage="Lead", to_stage_id="s-won", to_stage="Won 🎉", changed_at=WHEN,
                      first_time_in_stage=first, from_stage_since=WHEN - timedelta(days=3, seconds=1.5))


def test_event_has_every_field_of_the_seed_guide_and_more():
    deal = Deal(record_id="rec-1", name="Acme", value=4200, currency="EUR", owner_id="m-1",
                people_ids=("p-1",), company_id="c-1", web_url="https://app.attio.com/x",
                created_at=datetime(2023, 12, 1, 8, 30, tzinfo=UTC))
    identity, _ = resolve_identity([Person("p-1", ("jane@acme.com",))])
    event = build_event(transition(), deal, SETTINGS, identity, company_name="Acme Inc", owner_name="Ada Lovelace",
                        attributes={"lead_source": "Webinar", "region": None})
    assert event == {
        "event_type": "Deal Stage Changed",
        "event_id": "evt-1",
        "_timestamp": 1706781600123,
        "utc_time": "2024-02-01T10:00:00.123000Z",
        "url": "https://acme.example",
        "user": {"id": "jane@acme.com", "email": "jane@acme.com"},
        "company": {"id": "c-1", "name": "Acme Inc"},
        "event_attributes": {
            "deal_id": "rec-1", "deal_name": "Acme", "deal_stage": "Won 🎉", "deal_stage_id": "s-won",
            "previous_stage": "Lead", "previous_stage_id": "s-lead", "first_time_in_stage": True,
            "seconds_in_previous_stage": 259201,
            "deal_value": 4200, "deal_currency": "EUR", "deal_owner": "Ada Lovelace",
            "deal_url": "https://app.attio.com/x", "deal_created_at": "2023-12-01T08:30:00.000000Z",
            "stage_changed_at": "2024-02-01T10:00:00.123456Z", "source": "Attio CRM",
            "lead_source": "Webinar", "region": None,
        },
    }
    assert "api_key" not in event  # the ledger never holds the key
    assert list(for_sending(event, "um_key"))[0] == "api_key"
    assert for_sending(event, "um_key")["api_key"] == "um_key"
    assert for_display(event)["api_key"] == "<USERMAVEN_API_KEY>"
    assert "Won 🎉" in json.dumps(event, ensure_ascii=False)


def test_event_without_company_or_value_or_owner():
    event = build_event(transition(), Deal(record_id="rec-1"), SETTINGS, None)
    assert "company" not in event and "user" not in event
    attrs = event["event_attributes"]
    assert (attrs["deal_value"], attrs["deal_currency"], attrs["deal_owner"], attrs["deal_name"]) == (
        None, None, None, None)


def test_first_stage_has_no_previous_stage_or_time_in_it():
    first = Transition(event_id="evt-0", deal=DealRef("rec-1"), from_stage_id=None, from_stage=None,
                       to_stage_id="s-lead", to_stage="Lead", changed_at=WHEN, first_time_in_stage=True,
                       from_stage_since=None)
    attrs = build_event(first, Deal(record_id="rec-1"), SETTINGS, None)["event_attributes"]
    assert (attrs["previous_stage"], attrs["previous_stage_id"], attrs["seconds_in_previous_stage"]) == (
        None, None, None)
    assert attrs["first_time_in_stage"] is True and attrs["deal_created_at"] is None


def test_utc_time_is_the_instant_of_timestamp_in_rfc_3339():
    for moment in (WHEN, datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)):
        event = build_event(replace(transition(), changed_at=moment), Deal(record_id="rec-1"), SETTINGS, None)
        parsed = datetime.strptime(event["utc_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert event["utc_time"].endswith("Z")
        assert epoch_ms(parsed) == event["_timestamp"] and parsed == parsed.replace(microsecond=parsed.microsecond
                                                                                      // 1000 * 1000)
    # built twice, the same bytes: a resend or replay carries the same times
    again = [json.dumps(build_event(transition(), Deal(record_id="rec-1"), SETTINGS, None)) for _ in range(2)]
    assert again[0] == again[1]


def test_stage_event_types_by_title_or_id_and_the_default_for_the_rest():
    settings = EventSettings("Deal Stage Changed", "https://acme.example",
                             stage_event_types={"Won 🎉": "Deal Won", "s-lost": "Deal Lost"})
    won = build_event(transition(), Deal(record_id="rec-1"), settings, None)
    lost = build_event(replace(transition(), to_stage_id="s-lost", to_stage="Lost"), Deal(record_id="rec-1"),
                       settings, None)
    other = build_event(replace(transition(), to_stage_id="s-demo", to_stage="Demo"), Deal(record_id="rec-1"),
                        settings, None)
    assert [e["event_type"] for e in (won, lost, other)] == ["Deal Won", "Deal Lost", "Deal Stage Changed"]
    assert won["event_id"] == build_event(transition(), Deal(record_id="rec-1"), SETTINGS, None)["event_id"]


def test_added_attributes_never_replace_the_events_own():
    event = build_event(transition(), Deal(record_id="rec-1"), SETTINGS, None, attributes={"deal_stage": "x"})
    assert event["event_attributes"]["deal_stage"] == "Won 🎉"


def test_list_entry_events_name_their_entry():
    event = build_event(transition("entry-9"), Deal(record_id="rec-1"), SETTINGS, None)
    assert event["event_attributes"]["entry_id"] == "entry-9"
    assert event["event_attributes"]["deal_id"] == "rec-1"


def test_identity_cases():
    case1, _ = resolve_identity([Person("p", ("a@x.io", "b@x.io"), user_id="u-7")])
    assert (case1.as_user(), case1.case) == ({"id": "u-7", "email": "a@x.io"}, "user_id")
    case1_no_email, _ = resolve_identity([Person("p", (), user_id="u-7")])
    assert case1_no_email.as_user() == {"id": "u-7"}
    case2, _ = resolve_identity([Person("p", ("a@x.io", "b@x.io"))])
    assert (case2.as_user(), case2.case) == ({"id": "a@x.io", "email": "a@x.io"}, "email")
    first_that_yields, _ = resolve_identity([Person("p0"), Person("p1", ("c@y.io",)), Person("p2", (), "u-1")])
    assert first_that_yields.user_id == "c@y.io"
    assert resolve_identity([]) == (None, "deal has no associated person")
    assert resolve_identity([Person("p0"), Person("p1")]) == (
        None, "the deal's associated 2 people have no email and no user id")


def test_reading_attio_shapes_from_fixtures():
    deal_record = json.loads((FIXTURES / "deal_record.json").read_text())
    deal = deal_from_record(deal_record)
    assert deal.record_id == "bf071e1f-6035-429d-b874-d83ea64ea13b"
    assert (deal.name, deal.value, deal.currency) == ("Acme — annual plan", 12500.5, "GBP")
    assert deal.owner_id == "50cf242c-7fa3-4cad-87d0-75b1af71c57b"
    assert deal.people_ids == ("a1b2c3d4-0000-4000-8000-000000000001", "a1b2c3d4-0000-4000-8000-000000000002")
    assert deal.company_id == "c0ffee00-0000-4000-8000-000000000001"
    assert deal.created_at == datetime(2024, 1, 10, 9, 0, tzinfo=UTC) and deal.attributes == {}
    picked = deal_from_record(deal_record, [EventAttribute("owner", "actor-reference"),
                                            EventAttribute("value", "currency"), EventAttribute("region", "text"),
                                            EventAttribute("stage", "status", on_list=True)])
    assert picked.attributes == {"owner": tuple(deal_record["values"]["owner"]),
                                 "value": tuple(deal_record["values"]["value"]), "region": ()}
    stage = current_stage(deal_record["values"], "stage")
    assert (stage.title, stage.status_id) == ("Won 🎉", "11f07f01-c10f-4e05-a522-33e050bc52ee")
    assert stage.active_from == datetime(2024, 3, 5, 14, 30, 0, 123456, tzinfo=UTC)

    history = json.loads((FIXTURES / "stage_history.json").read_text())["data"]
    values = [stage_value(v) for v in history]
    assert [v.title for v in values] == ["Lead", "In Progress", "Won 🎉"]
    assert values[-1] == stage

    person = person_from_record(json.loads((FIXTURES / "person_record.json").read_text()), "app_user_id")
    assert person.emails == ("jane@acme.com", "jane.doe@acme.com")
    assert person.user_id == "app-user-42"
    assert person_from_record(json.loads((FIXTURES / "person_record.json").read_text()), None).user_id is None
