"""Every kind of response the Attio sandbox serves validates against Attio's own OpenAPI 3.1 spec.

Spec quirks, and what this file does about each:

1. Nullable enums without null. 40 schemas declare ``type: [string, "null"]`` with an ``enum`` that omits
   null: ``currency_code`` (currency values), ``config.currency.default_currency_code`` and ``display_type``
   (attributes), ``workspace_access`` (lists) and ``country_code`` (locations/phones). JSON Schema then
   rejects the null the type allows, although Attio sends it (a deal value without a currency; every
   non-currency attribute's config). :func:`allow_null_in_nullable_enums` adds null to exactly those enums.
2. 401 and 429 are documented nowhere in the spec (no ``default`` response either). They are validated
   against the error shape Attio documents for every non-2xx answer instead; the 401 body itself is unverified.
3. Some error responses are missing for some operations: ``POST /v2/lists/{list}/entries/query`` documents no
   400 and ``GET /v2/{target}/{identifier}/attributes`` no 404. Those bodies are validated against the same
   status's schema of the sibling operation (records/query 400, GET object 404).
4. Timestamp *values* are declared ``format: date`` although the spec's own examples and descriptions give
   a nanosecond date-time, which is what Attio sends and the sandbox writes (a timestamp attribute a test
   adds, for the event's deal attributes). :func:`timestamp_values_as_date_time` declares exactly those 15
   ``value`` fields ``format: date-time``; record/entry ``created_at`` fields are plain strings.
5. ``created_by_actor.id`` is marked ``nullable: true``, an OpenAPI 3.0 keyword that 3.1 ignores, so a null
   actor id (Attio's ``system`` actor) would fail. The sandbox only writes as workspace members and API
   tokens, whose ids are strings.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockResponse
from openapi_core.validation.response.exceptions import InvalidData
from openapi_schema_validator import OAS31Validator, oas31_format_checker

from sync.sandbox import AttioSandbox, Workspace

TOKEN = "sandbox-attio-token"

# Attio's documented error shape (every non-2xx answer), for responses the spec does not document.
DOC_ERROR = {
    "type": "object",
    "required": ["status_code", "type", "code", "message"],
    "properties": {
        "status_code": {"type": "integer"},
        "type": {"type": "string"},
        "code": {"type": "string"},
        "message": {"type": "string"},
    },
}


@pytest.fixture(scope="module")
def workspace() -> Workspace:
    return Workspace.generate(seed=21, deals=60)


@pytest.fixture(scope="module")
def attio(workspace: Workspace) -> Iterator[AttioSandbox]:
    with AttioSandbox(workspace, rate_limit=None) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def validate(openapi: OpenAPI, response: requests.Response) -> None:
    openapi.validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))


def spec_schema(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    return spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def validate_schema(schema: dict[str, Any], body: Any) -> None:
    OAS31Validator(schema, format_checker=oas31_format_checker).validate(body)


def success_requests(ws: Workspace) -> list[tuple[str, str, dict[str, Any]]]:
    deal = next(r for r in ws.deal_ids() if len(ws.deal(r).values["stage"]) >= 3)
    person = ws.person_ids()[2]  # scripted: two email addresses and an app user id
    entry = ws.entry_ids()[0]
    attribute_id = ws.stage_attribute.attribute_id
    return [
        ("GET", "/v2/self", {}),
        ("GET", "/v2/workspace_members", {}),
        ("GET", "/v2/objects/deals", {}),
        ("GET", f"/v2/objects/{ws.deals.id}", {}),
        ("GET", "/v2/lists/sales_pipeline", {}),
        ("GET", "/v2/objects/deals/attributes", {}),
        ("GET", "/v2/objects/people/attributes", {}),
        ("GET", "/v2/objects/companies/attributes", {}),
        ("GET", f"/v2/lists/{ws.list_id}/attributes", {}),
        ("GET", "/v2/objects/deals/attributes/stage/statuses?show_archived=true", {}),
        ("GET", f"/v2/objects/deals/attributes/{attribute_id}/statuses", {}),
        ("GET", "/v2/lists/sales_pipeline/attributes/stage/statuses?show_archived=true", {}),
        # Every record of every object: all value types, null currency codes and empty attributes.
        ("POST", "/v2/objects/deals/records/query", {"sorts": [{"direction": "asc", "attribute": "created_at"}]}),
        ("POST", "/v2/objects/deals/records/query",
         {"filter": {"stage": {"active_from": {"$gte": "2020-01-01T00:00:00Z"}}}, "limit": 10, "offset": 5}),
        ("POST", "/v2/objects/people/records/query", {}),
        ("POST", "/v2/objects/companies/records/query", {}),
        ("GET", f"/v2/objects/deals/records/{deal}", {}),
        ("GET", f"/v2/objects/deals/records/{ws.entry(entry).parent_record_id}/entries", {}),
        ("GET", f"/v2/objects/deals/records/{deal}/attributes/stage/values?show_historic=true", {}),
        ("GET", f"/v2/objects/deals/records/{deal}/attributes/stage/values", {}),
        ("GET", f"/v2/objects/deals/records/{deal}/attributes/value/values?show_historic=true", {}),
        ("GET", f"/v2/objects/deals/records/{deal}/attributes/owner/values", {}),
        ("GET", f"/v2/objects/deals/records/{deal}/attributes/associated_people/values", {}),
        ("GET", f"/v2/objects/people/records/{person}/attributes/email_addresses/values?show_historic=true", {}),
        ("GET", f"/v2/objects/people/records/{person}/attributes/name/values", {}),
        ("GET", f"/v2/objects/people/records/{person}/attributes/app_user_id/values", {}),
        ("POST", "/v2/lists/sales_pipeline/entries/query", {"limit": 1000}),
        ("GET", f"/v2/lists/sales_pipeline/entries/{entry}", {}),
        ("GET", f"/v2/lists/sales_pipeline/entries/{entry}/attributes/stage/values?show_historic=true", {}),
    ]


def test_every_success_response_validates_against_the_spec(openapi, attio, http, workspace):
    for method, path, body in success_requests(workspace):
        response = http.request(method, attio.url + path, json=body if method == "POST" else None)
        assert response.status_code == 200, (path, response.text)
        validate(openapi, response)


def test_responses_after_mutations_still_validate(openapi, attio, http, workspace):
    person = workspace.add_person(email="new@acme.example", user_id="app-7", name="New Person")
    record_id = workspace.create_deal("Contract deal", "Lead", people=[person], value=(99.5, None))
    workspace.move_deal(record_id, "Won 🎉")
    workspace.set_person_email(person, "newer@acme.example")
    workspace.move_entry(workspace.entry_ids()[0], "Lost")
    for method, path, body in [
        ("POST", "/v2/objects/deals/records/query", {"filter": {"record_id": {"$in": [record_id]}}}),
        ("GET", f"/v2/objects/deals/records/{record_id}/attributes/stage/values?show_historic=true", None),
        ("GET", f"/v2/objects/people/records/{person}/attributes/email_addresses/values?show_historic=true", None),
        ("POST", "/v2/lists/sales_pipeline/entries/query", {"filter": {"entry_id": workspace.entry_ids()[0]}}),
    ]:
        response = http.request(method, attio.url + path, json=body)
        assert response.status_code == 200
        validate(openapi, response)


@pytest.mark.parametrize("method,path,body,status,code", [
    ("POST", "/v2/objects/unicorns/records/query", {}, 404, "not_found"),
    ("GET", "/v2/objects/unicorns", None, 404, "not_found"),
    ("GET", "/v2/lists/nope", None, 404, "not_found"),
    ("GET", "/v2/objects/deals/attributes/nope/statuses", None, 404, "not_found"),
    ("GET", "/v2/objects/deals/records/00000000-0000-4000-8000-000000000000", None, 404, "not_found"),
    ("GET", "/v2/objects/deals/records/00000000-0000-4000-8000-000000000000/attributes/stage/values", None,
     404, "not_found"),
    ("POST", "/v2/lists/nope/entries/query", {}, 404, "not_found"),
    ("GET", "/v2/lists/sales_pipeline/entries/00000000-0000-4000-8000-000000000000", None, 404, "not_found"),
    ("GET", "/v2/lists/sales_pipeline/entries/00000000-0000-4000-8000-000000000000/attributes/stage/values",
     None, 404, "not_found"),
    ("POST", "/v2/objects/deals/records/query", {"filter": {"nope": 1}}, 400, "filter_error"),
    ("POST", "/v2/objects/deals/records/query", {"filter": {"stage": {"active_from": {"$gte": "soon"}}}},
     400, "filter_error"),
])
def test_documented_error_responses_validate_against_the_spec(openapi, attio, http, method, path, body, status,
                                                              code):
    response = http.request(method, attio.url + path, json=body)
    assert response.status_code == status and response.json()["code"] == code
    validate(openapi, response)


def test_values_validation_error_validates_against_the_spec(openapi, attio, http, workspace):
    deal = workspace.deal_ids()[0]
    response = http.get(f"{attio.url}/v2/objects/deals/records/{deal}/attributes/stage/values?show_historic=maybe")
    assert response.status_code == 400 and response.json()["code"] == "validation_type"
    validate(openapi, response)


def test_undocumented_error_bodies_match_the_sibling_operations_schema(spec_dict, attio, http):
    # Quirk 3: entries/query documents no 400, GET attributes no 404.
    response = http.post(f"{attio.url}/v2/lists/sales_pipeline/entries/query", json={"filter": {"nope": 1}})
    assert response.status_code == 400
    validate_schema(spec_schema(spec_dict, "/v2/objects/{object}/records/query", "post", "400"), response.json())
    response = http.get(f"{attio.url}/v2/objects/unicorns/attributes")
    assert response.status_code == 404
    validate_schema(spec_schema(spec_dict, "/v2/objects/{object}", "get", "404"), response.json())


def test_401_and_429_match_the_shapes_documented_beside_the_spec(openapi, workspace):
    # Quirk 2: the spec documents neither, so a validator finds no response to check them against.
    with AttioSandbox(workspace, rate_limit=1) as attio:
        unauthorized = requests.get(f"{attio.url}/v2/self", headers={"Authorization": "Bearer nope"})
        assert unauthorized.status_code == 401
        with pytest.raises(ResponseNotFound):
            validate(openapi, unauthorized)
        validate_schema(DOC_ERROR, unauthorized.json())
        assert unauthorized.json()["type"] == "auth_error"

        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            limited = next(
                r for r in (session.get(f"{attio.url}/v2/self") for _ in range(10)) if r.status_code == 429
            )
        with pytest.raises(ResponseNotFound):
            validate(openapi, limited)
        validate_schema(DOC_ERROR, limited.json())
        assert (limited.json()["type"], limited.json()["code"]) == ("rate_limit_error", "rate_limit_exceeded")


def test_validation_is_not_vacuous(openapi, attio, http, workspace):
    # A response that breaks the spec must fail, or every test above proves nothing.
    response = http.post(f"{attio.url}/v2/objects/deals/records/query", json={"limit": 3})
    validate(openapi, response)
    body = response.json()
    del body["data"][0]["values"]["stage"][0]["active_until"]
    broken = MockResponse(
        data=json.dumps(body).encode(), status_code=200, content_type=response.headers["Content-Type"]
    )
    with pytest.raises(InvalidData):
        openapi.validate_response(RequestsOpenAPIRequest(response.request), broken)


# One plain value of each type an event can carry (README, "The event"), as the sandbox's writes take it.
EVERY_TYPE: dict[str, tuple[Any, ...]] = {
    "text": ("Webinar",), "number": (12.5,), "rating": (4,), "checkbox": (False,), "date": ("2026-03-31",),
    "timestamp": (datetime(2026, 3, 5, 14, 30, 0, 123456, tzinfo=UTC),), "currency": ((9900, "EUR"),),
    "select": ("EMEA", "Partner"), "status": ("Open",), "domain": ("app.acme.com",),
    "email-address": ("Jane.Doe+crm@Acme.com",), "location": ({"line_1": "1 Main St", "locality": "London",
                                                             "postcode": "N1 9GU", "country_code": "GB"},),
}


def typed_workspace() -> tuple[Workspace, str, str]:
    """A deal and its pipeline entry with a value of every type an event can carry (a multi-select too)."""
    ws = Workspace.empty(clock=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    company = ws.add_company("Acme Inc", "acme.com")
    deal = ws.create_deal("Acme", "Lead", company=company, value=4200)
    entry = ws.add_entry(deal, "Lead")
    for target, item in (("deals", deal), ("sales_pipeline", entry)):
        write = ws.set_deal_values if target == "deals" else ws.set_entry_values
        for kind, values in EVERY_TYPE.items():
            options = [str(v) for v in values] + ["Other"] if kind in ("select", "status") else ()
            ws.add_attribute(f"my_{kind}", kind, target, multiselect=len(values) > 1, options=options)
            write(item, f"my_{kind}", *values)
        ws.add_attribute("partner", "record-reference", target, allowed_objects=["companies"])
        write(item, "partner", company)
        ws.add_attribute("closer", "actor-reference", target)
        write(item, "closer", ws.members[1].member_id)
    return ws, deal, entry


def test_values_of_every_type_an_event_carries_validate_against_the_spec(openapi):
    # Quirk 4: the timestamp value is checked as the date-time the spec describes, not `format: date`.
    ws, deal, entry = typed_workspace()
    kinds = [f"my_{kind}" for kind in EVERY_TYPE] + ["partner", "closer"]
    with AttioSandbox(ws, rate_limit=None) as attio, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {attio.token}"
        paths = [("POST", "/v2/objects/deals/records/query"), ("GET", f"/v2/objects/deals/records/{deal}"),
                 ("POST", "/v2/lists/sales_pipeline/entries/query"),
                 ("GET", f"/v2/lists/sales_pipeline/entries/{entry}"),
                 ("GET", "/v2/objects/deals/attributes"), ("GET", "/v2/lists/sales_pipeline/attributes")]
        paths += [("GET", f"/v2/objects/deals/records/{deal}/attributes/{slug}/values?show_historic=true")
                  for slug in kinds]
        paths += [("GET", f"/v2/lists/sales_pipeline/entries/{entry}/attributes/{slug}/values") for slug in kinds]
        for method, path in paths:
            response = session.request(method, attio.url + path, json={} if method == "POST" else None)
            assert response.status_code == 200, (path, response.text)
            validate(openapi, response)
        response = session.get(f"{attio.url}/v2/objects/deals/records/{deal}")
        record = response.json()["data"]["values"]
        broken = response.json()
        broken["data"]["values"]["my_timestamp"][0]["value"] = "5 March 2026"
        with pytest.raises(InvalidData):  # the format is checked: a timestamp that is no date-time fails
            openapi.validate_response(RequestsOpenAPIRequest(response.request), MockResponse(
                data=json.dumps(broken).encode(), status_code=200, content_type=response.headers["Content-Type"]))
        row = session.get(f"{attio.url}/v2/lists/sales_pipeline/entries/{entry}").json()["data"]["entry_values"]
    for values in (record, row):
        assert {slug: len(values[slug]) for slug in kinds} == {**{slug: 1 for slug in kinds}, "my_select": 2}
        assert [v["option"]["title"] for v in values["my_select"]] == ["EMEA", "Partner"]
        assert values["my_timestamp"][0]["value"] == "2026-03-05T14:30:00.123456000Z"
        assert values["my_currency"][0]["currency_code"] == "EUR"
