"""Deal attributes on the event: which ones the setting names, and each Attio type in its plain form."""

from __future__ import annotations

import pytest

from sync.attributes import (
    RENDERED_TYPES,
    AttributeProblem,
    EventAttribute,
    Names,
    references,
    render,
    render_all,
    select_attributes,
)
from sync.events import EVENT_ATTRIBUTE_KEYS
from sync.sandbox.records import Attribute
from tests.conftest import NOW, uid

MEMBER = "50cf242c-7fa3-4cad-87d0-75b1af71c57b"
DEALS = uid("object/deals")


def definition(slug: str, kind: str, parent: str = DEALS) -> dict:
    """An attribute of the object (or, given its id as ``parent``, the list) as Attio lists it."""
    return Attribute(uid(f"attr/{parent}/{slug}"), slug, slug.title(), kind, NOW).to_api(uid("workspace"), parent)


def value(attribute_type: str, until: str | None = None, **fields: object) -> dict:
    """A value as Attio's spec has it (output-value), current unless `until` is given."""
    return {"active_from": "2024-01-01T10:00:00.000000000Z", "active_until": until,
            "created_by_actor": {"type": "workspace-member", "id": MEMBER}, **fields,
            "attribute_type": attribute_type}


def option(title: str) -> dict:
    ids = {"workspace_id": "w", "object_id": "o", "attribute_id": "a", "option_id": f"opt-{title}"}
    return {"id": ids, "title": title, "is_archived": False}


def one(kind: str, *values: dict, multiselect: bool = False, names: Names | None = None) -> object:
    rendered = render(EventAttribute("x", kind, multiselect), values, names or Names())
    return rendered["x"]


def test_every_type_the_issue_names_in_its_plain_form():
    names = Names(records={("companies", "c-1"): "Acme Inc", ("people", "p-1"): "Jane Doe"},
                  members={MEMBER: "Ada Lovelace"})
    assert one("text", value("text", value="Webinar")) == "Webinar"
    assert one("number", value("number", value=12.5)) == 12.5
    assert one("rating", value("rating", value=4)) == 4
    assert one("checkbox", value("checkbox", value=False)) is False
    assert one("date", value("date", value="2024-03-05")) == "2024-03-05"
    assert one("timestamp", value("timestamp", value="2024-03-05T14:30:00.123456789Z")) == \
        "2024-03-05T14:30:00.123456Z"
    assert one("select", value("select", option=option("EMEA"))) == "EMEA"
    assert one("select", value("select", option=option("EMEA")), value("select", option=option("Partner")),
               multiselect=True) == ["EMEA", "Partner"]
    status = {"id": {"workspace_id": "w", "object_id": "o", "attribute_id": "a", "status_id": "s-1"},
              "title": "Won 🎉", "is_archived": False, "celebration_enabled": True, "target_time_in_status": None}
    assert one("status", value("status", status=status)) == "Won 🎉"
    assert one("record-reference", value("record-reference", target_object="companies", target_record_id="c-1"),
               names=names) == "Acme Inc"
    assert one("record-reference", value("record-reference", target_object="people", target_record_id="p-1"),
               value("record-reference", target_object="people", target_record_id="p-gone"),
               multiselect=True, names=names) == ["Jane Doe"]
    assert one("actor-reference", value("actor-reference", referenced_actor_type="workspace-member",
                                        referenced_actor_id=MEMBER), names=names) == "Ada Lovelace"
    assert one("actor-reference", value("actor-reference", referenced_actor_type="api-token",
                                        referenced_actor_id="t-1"), names=names) is None
    assert one("domain", value("domain", domain="app.acme.com", root_domain="acme.com")) == "app.acme.com"
    assert one("email-address", value("email-address", original_email_address="Jane@Acme.com",
                                      email_address="jane@acme.com", email_domain="acme.com",
                                      email_root_domain="acme.com", email_local_specifier="jane")) == "jane@acme.com"
    location = value("location", line_1="1 Main St", line_2=None, line_3=None, line_4=None, locality="London",
                     region=None, postcode="N1 9GU", country_code="GB", latitude=None, longitude=None)
    assert one("location", location) == "1 Main St, London, N1 9GU, GB"


def test_currency_value_with_its_code_beside_it():
    attribute = EventAttribute("contract_value", "currency")
    money = value("currency", currency_value=4200.5, currency_code="EUR")
    assert render(attribute, [money], Names()) == {"contract_value": 4200.5, "contract_value_currency": "EUR"}
    assert render(attribute, [], Names()) == {"contract_value": None, "contract_value_currency": None}


def test_empty_and_past_values():
    assert one("text") is None
    assert one("select", multiselect=True) == []
    past = value("text", until="2024-02-01T00:00:00.000000000Z", value="old")
    assert one("text", past, value("text", value="new")) == "new"
    assert one("text", past) is None


def test_references_lists_what_needs_a_name_lookup():
    attributes = [EventAttribute("partner", "record-reference", True), EventAttribute("closer", "actor-reference"),
                  EventAttribute("region", "text")]
    values = {"partner": [value("record-reference", target_object="companies", target_record_id="c-1"),
                          value("record-reference", target_object="people", target_record_id="p-1")],
              "closer": [value("actor-reference", referenced_actor_type="workspace-member",
                               referenced_actor_id=MEMBER)],
              "region": [value("text", value="EMEA")]}
    assert references(attributes, values) == ({("companies", "c-1"), ("people", "p-1")}, {MEMBER})
    assert render_all(attributes, values, Names(members={MEMBER: "Ada Lovelace"})) == {
        "partner": [], "closer": "Ada Lovelace", "region": "EMEA"}


def test_selecting_by_slug_or_id_on_the_object_or_the_list():
    on_object = [definition("lead_source", "select"), definition("name", "text")]
    on_list = [definition("owner", "actor-reference", "list-1")]
    by_id = on_object[0]["id"]["attribute_id"]
    assert select_attributes([by_id, "owner"], on_object, on_list, list_name="sales_pipeline") == [
        EventAttribute("lead_source", "select"), EventAttribute("owner", "actor-reference", on_list=True)]
    multi = {**definition("tags", "select"), "is_multiselect": True}
    assert select_attributes(["tags"], [multi]) == [EventAttribute("tags", "select", multiselect=True)]


def test_every_problem_is_named_at_once():
    on_object = [definition("lead_source", "select"), definition("phone", "phone-number"),
                 definition("owner", "actor-reference"), definition("amount", "currency"),
                 definition("amount_currency", "text"), definition("source", "text")]
    on_list = [definition("owner", "actor-reference", "list-1")]
    wanted = ["lead_sorce", "phone", "owner", "source", "amount", "amount_currency", "lead_source"]
    with pytest.raises(AttributeProblem) as caught:
        select_attributes(wanted, on_object, on_list, EVENT_ATTRIBUTE_KEYS, "object 'deals'", "sales_pipeline")
    assert caught.value.problems == [
        "'lead_sorce' is not an attribute of object 'deals' or of the list sales_pipeline",
        "'phone' is of type 'phone-number', which cannot be put on the event; the types that can: "
        + ", ".join(RENDERED_TYPES),
        "'owner' is an attribute of both object 'deals' and the list sales_pipeline: name the one you mean by its "
        "attribute id",
        "'source' would overwrite the event attribute 'source': leave it out",
        "'amount_currency' would overwrite the event attribute 'amount_currency': leave it out",
    ]


def test_rendered_types_are_the_ones_the_issue_lists():
    assert set(RENDERED_TYPES) == {"text", "number", "currency", "select", "status", "checkbox", "date", "timestamp",
                                   "record-reference", "actor-reference", "domain", "email-address", "location",
                                   "rating"}
