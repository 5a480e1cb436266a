"""Attio response bodies shaped exactly as the OpenAPI spec has them, and a small fake workspace served
through `responses` for the unit tests."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlparse

import responses

BASE = "https://api.attio.test"
WORKSPACE = "14beef7a-99f7-4534-a87e-70b564330a4c"
DEALS_OBJECT = "97052eb9-e65e-443f-a297-f2d9a4a7f795"
STAGE_ATTRIBUTE = "41252299-f8c7-4b5e-99c9-4ff8321d2f96"
MEMBER = "50cf242c-7fa3-4cad-87d0-75b1af71c57b"


def uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def ts(moment: datetime) -> str:
    """Attio's form: UTC, nine fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


STAGES = {title: uid(f"status/{title}") for title in ("Lead", "Qualified", "Demo", "Won 🎉", "Lost")}
PIPELINE_LIST = uid("list/sales_pipeline")
LIST_STAGE_ATTRIBUTE = uid("attr/list-stage")


def actor() -> dict:
    return {"type": "workspace-member", "id": MEMBER}


def status_object(title: str, parent: str = DEALS_OBJECT, attribute_id: str = STAGE_ATTRIBUTE) -> dict:
    return {
        "id": {"workspace_id": WORKSPACE, "object_id": parent, "attribute_id": attribute_id,
               "status_id": STAGES[title] if parent == DEALS_OBJECT else uid(f"list-status/{title}")},
        "title": title,
        "is_archived": False,
        "celebration_enabled": title.startswith("Won"),
        "target_time_in_status": None,
    }


def status_value(title: str, active_from: datetime, active_until: datetime | None = None,
                 parent: str = DEALS_OBJECT, attribute_id: str = STAGE_ATTRIBUTE) -> dict:
    return {
        "active_from": ts(active_from),
        "active_until": ts(active_until) if active_until else None,
        "created_by_actor": actor(),
        "status": status_object(title, parent, attribute_id),
        "attribute_type": "status",
    }


def _value(attribute_type: str, created: datetime, **fields: object) -> dict:
    return {"active_from": ts(created), "active_until": None, "created_by_actor": actor(),
            **fields, "attribute_type": attribute_type}


def record(object_id: str, record_id: str, created: datetime, values: dict) -> dict:
    return {"id": {"workspace_id": WORKSPACE, "object_id": object_id, "record_id": record_id},
            "created_at": ts(created), "web_url": f"https://app.attio.com/acme/{object_id}/{record_id}",
            "values": values}


@dataclass
class FakeDeal:
    record_id: str
    name: str
    created: datetime
    history: list[tuple[str, datetime]]  # (stage title, active_from)
    people: list[str] = field(default_factory=list)
    company: str | None = None
    value: float | None = 4200
    currency: str | None = "USD"
    owner: str | None = MEMBER

    def stage_values(self) -> list[dict]:
        return history_values(self.history)

    def as_record(self) -> dict:
        values: dict = {
            "name": [_value("text", self.created, value=self.name)],
            "stage": [self.stage_values()[-1]],
            "associated_people": [_value("record-reference", self.created, target_object="people",
                                         target_record_id=p) for p in self.people],
        }
        if self.value is not None:
            values["value"] = [_value("currency", self.created, currency_value=self.value,
                                      currency_code=self.currency)]
        if self.owner:
            values["owner"] = [_value("actor-reference", self.created, referenced_actor_type="workspace-member",
                                      referenced_actor_id=self.owner)]
        if self.company:
            values["associated_company"] = [_value("record-reference", self.created, target_object="companies",
                                                   target_record_id=self.company)]
        return record(DEALS_OBJECT, self.record_id, self.created, values)


def history_values(history: list[tuple[str, datetime]], parent: str = DEALS_OBJECT,
                   attribute_id: str = STAGE_ATTRIBUTE) -> list[dict]:
    values = []
    for index, (title, moment) in enumerate(history):
        until = history[index + 1][1] if index + 1 < len(history) else None
        values.append(status_value(title, moment, until, parent, attribute_id))
    return values


@dataclass
class FakeEntry:
    """An entry of the pipeline list, whose own `stage` attribute holds the stage."""

    entry_id: str
    parent_record_id: str
    created: datetime
    history: list[tuple[str, datetime]]

    def stage_values(self) -> list[dict]:
        return history_values(self.history, PIPELINE_LIST, LIST_STAGE_ATTRIBUTE)

    def as_entry(self) -> dict:
        return {"id": {"workspace_id": WORKSPACE, "list_id": PIPELINE_LIST, "entry_id": self.entry_id},
                "parent_record_id": self.parent_record_id, "parent_object": "deals",
                "created_at": ts(self.created), "entry_values": {"stage": self.stage_values()[-1:]}}


@dataclass
class FakePerson:
    record_id: str
    emails: list[str]
    user_id: str | None = None

    def as_record(self) -> dict:
        created = datetime(2023, 1, 1, tzinfo=UTC)
        values: dict = {
            "email_addresses": [_value("email-address", created, original_email_address=e, email_address=e,
                                       email_domain=e.split("@")[1], email_root_domain=e.split("@")[1],
                                       email_local_specifier=e.split("@")[0]) for e in self.emails],
        }
        if self.user_id:
            values["app_user_id"] = [_value("text", created, value=self.user_id)]
        return record(uid("object/people"), self.record_id, created, values)


def attribute(slug: str, type_: str, object_id: str = DEALS_OBJECT) -> dict:
    return {"id": {"workspace_id": WORKSPACE, "object_id": object_id, "attribute_id": uid(f"attr/{slug}")},
            "title": slug.title(), "description": None, "api_slug": slug, "type": type_,
            "is_system_attribute": False, "is_writable": True, "is_required": False, "is_unique": False,
            "is_multiselect": False, "is_default_value_enabled": False, "is_archived": False,
            "default_value": None, "relationship": None, "created_at": ts(datetime(2022, 1, 1, tzinfo=UTC)),
            "config": {"currency": {"default_currency_code": None, "display_type": None},
                       "record_reference": {"allowed_object_ids": None}}}


class FakeAttio:
    """A workspace served through `responses`: each endpoint the sync calls, with Attio's bodies."""

    def __init__(self, mock: responses.RequestsMock, clock: datetime):
        self.mock = mock
        self.clock = clock  # Attio's clock: what its Date header says
        self.deals: dict[str, FakeDeal] = {}
        self.entries: dict[str, FakeEntry] = {}
        self.history_reads: Counter[str] = Counter()  # record or entry id → history requests
        self.history_failures: dict[str, int] = {}  # record or entry id → 400s to answer first
        self.entries_filter_supported = True
        self.deleted_before_history: set[str] = set()  # listed by queries, gone when their history is read
        self.people: dict[str, FakePerson] = {}
        self.companies: dict[str, str] = {}
        self.queries: list[dict] = []
        self.failures: list[tuple[int, dict, dict]] = []  # (status, headers, body) answered before the next query
        self._register()

    def add_deal(self, deal: FakeDeal) -> FakeDeal:
        self.deals[deal.record_id] = deal
        return deal

    def add_leads(self, prefix: str, count: int, days_back: int) -> list[str]:
        """`count` deals created in "Lead" one day apart, ending `days_back - count + 1` days ago, each with
        one person who has an email (added if missing); returns their ids."""
        self.people.setdefault(uid("p1"), FakePerson(uid("p1"), ["jane@acme.com"]))
        ids = []
        for n in range(count):
            created = self.clock - timedelta(days=days_back - n)
            deal = self.add_deal(FakeDeal(uid(f"{prefix}{n}"), f"{prefix.upper()}{n}", created, [("Lead", created)],
                                          people=[uid("p1")]))
            ids.append(deal.record_id)
        return ids

    def move(self, record_id: str, title: str, at: datetime) -> None:
        self.deals[record_id].history.append((title, at))

    def _headers(self) -> dict:
        return {"Date": format_datetime(self.clock, usegmt=True)}

    def _json(self, status: int, body: object) -> tuple[int, dict, str]:
        return status, {**self._headers(), "Content-Type": "application/json"}, json.dumps(body)

    def _register(self) -> None:
        m = self.mock
        m.add_callback("GET", f"{BASE}/v2/self", lambda r: self._json(200, {
            "active": True, "scope": "record_permission:read object_configuration:read", "client_id": "c",
            "token_type": "Bearer", "workspace_id": WORKSPACE, "workspace_name": "Acme",
            "workspace_slug": "acme", "workspace_logo_url": None, "authorized_by_workspace_member_id": MEMBER,
            "exp": None, "iat": 1700000000, "sub": WORKSPACE, "aud": "c", "iss": "attio.com"}))
        m.add_callback("GET", f"{BASE}/v2/objects/deals/attributes", lambda r: self._json(200, {"data": [
            attribute("name", "text"), attribute("stage", "status"), attribute("value", "currency")]}))
        m.add_callback("GET", f"{BASE}/v2/objects/people/attributes", lambda r: self._json(200, {"data": [
            attribute("email_addresses", "email-address"), attribute("app_user_id", "text")]}))
        m.add_callback("POST", re.compile(rf"{BASE}/v2/objects/(\w+)/records/query"), self._query)
        m.add_callback("GET", re.compile(rf"{BASE}/v2/objects/deals/records/([\w-]+)/attributes/stage/values.*"),
                       self._values)
        m.add_callback("GET", re.compile(rf"{BASE}/v2/objects/deals/records/[\w-]+$"), self._record)
        m.add_callback("GET", re.compile(rf"{BASE}/v2/objects/deals/records/[\w-]+/entries(\?.*)?$"),
                       self._record_entries)
        m.add_callback("GET", f"{BASE}/v2/lists/sales_pipeline/attributes", lambda r: self._json(200, {"data": [
            attribute("stage", "status", PIPELINE_LIST), attribute("owner", "actor-reference", PIPELINE_LIST)]}))
        m.add_callback("POST", f"{BASE}/v2/lists/sales_pipeline/entries/query", self._entries_query)
        m.add_callback("GET", re.compile(rf"{BASE}/v2/lists/sales_pipeline/entries/[\w-]+/attributes/stage/values.*"),
                       self._values)
        m.add_callback("GET", f"{BASE}/v2/objects/deals/attributes/stage/statuses", lambda r: self._json(200, {
            "data": [status_object(title) for title in STAGES]}))
        m.add_callback("GET", f"{BASE}/v2/workspace_members", lambda r: self._json(200, {"data": [
            {"id": {"workspace_id": WORKSPACE, "workspace_member_id": MEMBER}, "first_name": "Ada",
             "last_name": "Lovelace", "avatar_url": None, "email_address": "ada@acme.com",
             "created_at": ts(datetime(2022, 1, 1, tzinfo=UTC)), "access_level": "admin"}]}))

    def _query(self, request) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
        if self.failures:
            status, headers, body = self.failures.pop(0)
            return status, {**self._headers(), **headers}, json.dumps(body)
        object_ = urlparse(request.url).path.split("/")[3]
        body = json.loads(request.body)
        self.queries.append({"object": object_, **body})
        rows = {"deals": [d.as_record() for d in self.deals.values()],
                "people": [p.as_record() for p in self.people.values()],
                "companies": [record(uid("object/companies"), cid, datetime(2022, 1, 1, tzinfo=UTC),
                                     {"name": [_value("text", datetime(2022, 1, 1, tzinfo=UTC), value=name)]})
                              for cid, name in self.companies.items()]}[object_]
        filter_ = body.get("filter") or {}
        if "record_id" in filter_:
            wanted = set(filter_["record_id"]["$in"])
            rows = [r for r in rows if r["id"]["record_id"] in wanted]
        if "stage" in filter_:
            since = filter_["stage"]["active_from"]["$gte"]
            rows = [r for r in rows if r["values"]["stage"][0]["active_from"] >= since.replace("Z", "000Z")]
        rows.sort(key=lambda r: (r["created_at"], r["id"]["record_id"]))
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 500))
        return self._json(200, {"data": rows[offset:offset + limit]})

    def _not_found(self, record_id: str) -> tuple[int, dict, str]:
        return self._json(404, {"status_code": 404, "type": "invalid_request_error", "code": "not_found",
                                "message": f'Record with ID "{record_id}" not found.'})

    def _record(self, request) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
        record_id = urlparse(request.url).path.split("/")[5]
        deal = self.deals.get(record_id)
        return self._json(200, {"data": deal.as_record()}) if deal else self._not_found(record_id)

    def _record_entries(self, request) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
        record_id = urlparse(request.url).path.split("/")[5]
        if record_id not in self.deals:
            return self._not_found(record_id)
        return self._json(200, {"data": [
            {"list_id": PIPELINE_LIST, "list_api_slug": "sales_pipeline", "entry_id": e.entry_id,
             "created_at": ts(e.created)} for e in self.entries.values() if e.parent_record_id == record_id]})

    def _entries_query(self, request) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
        body = json.loads(request.body)
        self.queries.append({"object": "sales_pipeline", **body})
        filter_ = body.get("filter") or {}
        if filter_ and not self.entries_filter_supported:
            return self._json(400, {"status_code": 400, "type": "invalid_request_error", "code": "filter_error",
                                    "message": "Unknown filter operator \"active_from\"."})
        rows = [e.as_entry() for e in self.entries.values()]
        if "stage" in filter_:
            since = filter_["stage"]["active_from"]["$gte"].replace("Z", "000Z")
            rows = [r for r in rows if r["entry_values"]["stage"][0]["active_from"] >= since]
        rows.sort(key=lambda r: (r["created_at"], r["id"]["entry_id"]))
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 500))
        return self._json(200, {"data": rows[offset:offset + limit]})

    def _values(self, request) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
        path = urlparse(request.url).path.split("/")
        key = path[5]
        query = parse_qs(urlparse(request.url).query)
        self.history_reads[key] += 1
        if self.history_failures.get(key):
            self.history_failures[key] -= 1
            return self._json(400, {"status_code": 400, "type": "invalid_request_error", "code": "validation_type",
                                    "message": "Simulated refusal."})
        deal = self.entries.get(key) if path[2] == "lists" else self.deals.get(key)
        if deal is None or key in self.deleted_before_history:
            return self._not_found(key)
        values = deal.stage_values()
        if query.get("show_historic") != ["true"]:
            values = values[-1:]
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["500"])[0])
        return self._json(200, {"data": values[offset:offset + limit]})


def days(n: float) -> timedelta:
    return timedelta(days=n)
