"""The records of an in-memory Attio workspace, kept in Attio's own shapes: members, statuses, attributes,
values with their history, records, list entries and the collections (objects and lists) that index them.

``to_api`` methods and :func:`item_json` render them as Attio's REST API v2 does; ``values.py`` builds the
values of each attribute type.
"""

from __future__ import annotations

import bisect
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple


def format_ts(moment: datetime) -> str:
    """Render a datetime as Attio does: UTC, nine fractional digits, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp (Attio's nine digits included); naive means UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass
class Member:
    """A workspace member (owner of deals, actor of writes)."""

    member_id: str
    first_name: str
    last_name: str
    email_address: str
    access_level: str
    created_at: datetime

    def to_api(self, workspace_id: str) -> dict[str, Any]:
        """The member as ``GET /v2/workspace_members`` returns it."""
        return {
            "id": {"workspace_id": workspace_id, "workspace_member_id": self.member_id},
            "first_name": self.first_name,
            "last_name": self.last_name,
            "avatar_url": None,
            "email_address": self.email_address,
            "created_at": format_ts(self.created_at),
            "access_level": self.access_level,
        }


@dataclass
class Status:
    """One option of a status attribute. ``object_id`` is the list id for list attributes, as in Attio."""

    workspace_id: str
    object_id: str
    attribute_id: str
    status_id: str
    title: str
    is_archived: bool = False
    celebration_enabled: bool = False

    def to_api(self) -> dict[str, Any]:
        """The status as Attio renders it, with its *current* title."""
        return {
            "id": {
                "workspace_id": self.workspace_id,
                "object_id": self.object_id,
                "attribute_id": self.attribute_id,
                "status_id": self.status_id,
            },
            "title": self.title,
            "is_archived": self.is_archived,
            "celebration_enabled": self.celebration_enabled,
            "target_time_in_status": None,
        }


@dataclass
class SelectOption:
    """One option of a select attribute. ``object_id`` is the list id for list attributes, as in Attio."""

    workspace_id: str
    object_id: str
    attribute_id: str
    option_id: str
    title: str
    is_archived: bool = False

    def to_api(self) -> dict[str, Any]:
        """The option as a select value renders it (``select-option`` in the spec), with its current title."""
        return {
            "id": {
                "workspace_id": self.workspace_id,
                "object_id": self.object_id,
                "attribute_id": self.attribute_id,
                "option_id": self.option_id,
            },
            "title": self.title,
            "is_archived": self.is_archived,
        }


@dataclass
class Attribute:
    """An attribute of an object or list."""

    attribute_id: str
    api_slug: str
    title: str
    type: str
    created_at: datetime
    is_multiselect: bool = False
    is_system: bool = False
    is_required: bool = False
    is_unique: bool = False
    statuses: list[Status] = field(default_factory=list)
    options: list[SelectOption] = field(default_factory=list)
    allowed_object_ids: list[str] | None = None
    default_currency_code: str | None = None

    def status(self, stage: str) -> Status:
        """Find a status by id or current title; raise ``KeyError`` if there is none."""
        for status in self.statuses:
            if stage in (status.status_id, status.title):
                return status
        raise KeyError(f"no status {stage!r} on attribute {self.api_slug!r}")

    def option(self, choice: str) -> SelectOption:
        """Find a select option by id or current title; raise ``KeyError`` if there is none."""
        for option in self.options:
            if choice in (option.option_id, option.title):
                return option
        raise KeyError(f"no option {choice!r} on attribute {self.api_slug!r}")

    def to_api(self, workspace_id: str, parent_id: str) -> dict[str, Any]:
        """The attribute as ``GET /v2/{target}/{identifier}/attributes`` returns it."""
        currency: dict[str, Any] = {"default_currency_code": None, "display_type": None}
        if self.type == "currency":
            currency = {"default_currency_code": self.default_currency_code, "display_type": "symbol"}
        return {
            "id": {"workspace_id": workspace_id, "object_id": parent_id, "attribute_id": self.attribute_id},
            "title": self.title,
            "description": None,
            "api_slug": self.api_slug,
            "type": self.type,
            "is_system_attribute": self.is_system,
            "is_writable": True,
            "is_required": self.is_required,
            "is_unique": self.is_unique,
            "is_multiselect": self.is_multiselect,
            "is_default_value_enabled": False,
            "is_archived": False,
            "default_value": None,
            "relationship": None,
            "created_at": format_ts(self.created_at),
            "config": {
                "currency": currency,
                "record_reference": {"allowed_object_ids": self.allowed_object_ids},
            },
        }


@dataclass
class Value:
    """One written value of an attribute. ``active_until`` None means it is current."""

    attribute_type: str
    active_from: datetime
    active_until: datetime | None
    actor: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    status: Status | None = None
    option: SelectOption | None = None

    def to_api(self) -> dict[str, Any]:
        """The value in Attio's shape for its attribute type."""
        rendered: dict[str, Any] = {
            "active_from": format_ts(self.active_from),
            "active_until": format_ts(self.active_until) if self.active_until else None,
            "created_by_actor": dict(self.actor),
        }
        if self.status is not None:
            rendered["status"] = self.status.to_api()
        elif self.option is not None:
            rendered["option"] = self.option.to_api()
        else:
            rendered.update(self.fields)
        rendered["attribute_type"] = self.attribute_type
        return rendered


class _Valued:
    """What records and entries share: every attribute's values, past ones included."""

    values: dict[str, list[Value]]

    def current(self, slug: str) -> list[Value]:
        """The active values of an attribute."""
        return [v for v in self.values.get(slug, ()) if v.active_until is None]


@dataclass
class Record(_Valued):
    """A record of an object, with the full history of every attribute (oldest first)."""

    record_id: str
    created_at: datetime
    values: dict[str, list[Value]] = field(default_factory=dict)
    version: int = 0
    _cache: tuple[int, bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The record id (uniform with ``Entry.id``)."""
        return self.record_id


@dataclass
class Entry(_Valued):
    """A list entry: its own attribute values and a pointer to its parent record."""

    entry_id: str
    parent_record_id: str
    parent_object: str
    created_at: datetime
    values: dict[str, list[Value]] = field(default_factory=dict)
    version: int = 0
    _cache: tuple[int, bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The entry id (uniform with ``Record.id``)."""
        return self.entry_id


Item = Record | Entry


class Collection:
    """An object (records) or a list (entries), with indexes the query endpoints need.

    ``by_created`` keeps items sorted by (created_at, id), the default query order; ``stage_index`` keeps
    (current stage active_from, id) sorted so "changed since" filters are a bisect, not a scan.
    """

    def __init__(
        self,
        kind: str,
        collection_id: str,
        api_slug: str,
        name: str,
        singular: str,
        created_at: datetime,
        parent_object: str | None = None,
    ) -> None:
        self.kind = kind
        self.id = collection_id
        self.api_slug = api_slug
        self.name = name
        self.singular = singular
        self.created_at = created_at
        self.parent_object = parent_object
        self.attributes: dict[str, Attribute] = {}
        self.items: dict[str, Item] = {}
        self.by_created: list[tuple[datetime, str]] = []
        self.stage_slug: str | None = None
        self.stage_index: list[tuple[datetime, str]] = []

    def attribute(self, identifier: str) -> Attribute | None:
        """Find an attribute by slug or id."""
        if identifier in self.attributes:
            return self.attributes[identifier]
        for attribute in self.attributes.values():
            if attribute.attribute_id == identifier:
                return attribute
        return None

    def _stage_key(self, item: Item) -> tuple[datetime, str] | None:
        if self.stage_slug is None:
            return None
        current = item.current(self.stage_slug)
        return (current[-1].active_from, item.id) if current else None

    def add(self, item: Item) -> None:
        """Insert an item and index it."""
        self.items[item.id] = item
        bisect.insort(self.by_created, (item.created_at, item.id))
        key = self._stage_key(item)
        if key is not None:
            bisect.insort(self.stage_index, key)

    def remove(self, item_id: str) -> Item:
        """Remove an item and its index entries."""
        item = self.items.pop(item_id)
        _discard(self.by_created, (item.created_at, item.id))
        key = self._stage_key(item)
        if key is not None:
            _discard(self.stage_index, key)
        return item

    def reindex_stage(self, item: Item, old_key: tuple[datetime, str] | None) -> None:
        """Move an item in the stage index after its stage changed."""
        if old_key is not None:
            _discard(self.stage_index, old_key)
        key = self._stage_key(item)
        if key is not None:
            bisect.insort(self.stage_index, key)

    def ordered(self) -> Iterator[Item]:
        """Items by (created_at, id)."""
        items = self.items
        return (items[item_id] for _, item_id in self.by_created)


def _discard(index: list[tuple[datetime, str]], key: tuple[datetime, str]) -> None:
    position = bisect.bisect_left(index, key)
    if position < len(index) and index[position] == key:
        del index[position]


class Transition(NamedTuple):
    """A stage change of a deal: ``from_status_id`` is None for the stage a deal was created in."""

    record_id: str
    from_status_id: str | None
    to_status_id: str
    active_from: datetime


class EntryTransition(NamedTuple):
    """A stage change of a list entry."""

    entry_id: str
    from_status_id: str | None
    to_status_id: str
    active_from: datetime


def new_uuid(rng: random.Random) -> str:
    """A version 4 UUID drawn from ``rng`` (ids are deterministic per seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def item_json(collection: Collection, workspace_id: str, workspace_slug: str, item: Item) -> bytes:
    """The item rendered as the query endpoints return it, cached until the item changes."""
    cached = item._cache
    if cached is not None and cached[0] == item.version:
        return cached[1]
    values = {slug: [v.to_api() for v in item.values.get(slug, ()) if v.active_until is None]
              for slug in collection.attributes}
    rendered: dict[str, Any]
    if isinstance(item, Record):
        rendered = {
            "id": {"workspace_id": workspace_id, "object_id": collection.id, "record_id": item.id},
            "created_at": format_ts(item.created_at),
            "web_url": f"https://app.attio.com/{workspace_slug}/{collection.api_slug}/record/{item.id}",
            "values": values,
        }
    else:
        rendered = {
            "id": {"workspace_id": workspace_id, "list_id": collection.id, "entry_id": item.id},
            "parent_record_id": item.parent_record_id,
            "parent_object": item.parent_object,
            "created_at": format_ts(item.created_at),
            "entry_values": values,
        }
    data = json.dumps(rendered, ensure_ascii=False, separators=(",", ":")).encode()
    item._cache = (item.version, data)
    return data

