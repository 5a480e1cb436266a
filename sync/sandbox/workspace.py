"""An in-memory Attio workspace: deals with stage histories, people, companies and a pipeline list.

The data is generated deterministically from a seed and kept in Attio's own shapes, so the sandbox server
only has to filter, sort and page it. Every read and write goes through one lock because the server is
threaded and tests mutate the workspace while a sync runs.
"""

from __future__ import annotations

import bisect
import json
import random
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

PIPELINE = ("Lead", "Qualified", "Demo", "Proposal", "Negotiation")
WON = "Won 🎉"
LOST = "Lost"
ARCHIVED_TITLE = "Discovery"
RENAMED_FROM = "Contract"
RENAMED_TO = "Negotiation"
STATUS_TITLES = (*PIPELINE, WON, LOST)

# Number of stage values per deal (1..7): most deals move a few times, some never move.
_HISTORY_LENGTHS = (1, 2, 3, 4, 5, 6, 7)
_HISTORY_WEIGHTS = (15, 20, 20, 17, 13, 9, 6)

_FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger",
    "Radia", "Tim", "Hedy", "John", "Katherine", "Donald", "Sophie", "Guido", "Anita", "Bjarne",
)
_LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
    "Dijkstra", "Perlman", "Berners-Lee", "Lamarr", "McCarthy", "Johnson", "Knuth", "Wilson", "van Rossum",
    "Borg", "Stroustrup",
)
_COMPANY_WORDS = (
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent", "Tyrell",
    "Cyberdyne", "Aperture", "Wonka", "Gringotts", "Oscorp", "Massive", "Pied", "Piper", "Blue", "Sun",
)
_COMPANY_SUFFIXES = ("Labs", "Industries", "Systems", "Analytics", "Cloud", "Works", "Group", "AI")
_PERSONAL_DOMAINS = ("gmail.com", "outlook.com", "proton.me", "fastmail.com")


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
    allowed_object_ids: list[str] | None = None
    default_currency_code: str | None = None

    def status(self, stage: str) -> Status:
        """Find a status by id or current title; raise ``KeyError`` if there is none."""
        for status in self.statuses:
            if stage in (status.status_id, status.title):
                return status
        raise KeyError(f"no status {stage!r} on attribute {self.api_slug!r}")

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

    def to_api(self) -> dict[str, Any]:
        """The value in Attio's shape for its attribute type."""
        rendered: dict[str, Any] = {
            "active_from": format_ts(self.active_from),
            "active_until": format_ts(self.active_until) if self.active_until else None,
            "created_by_actor": dict(self.actor),
        }
        if self.status is not None:
            rendered["status"] = self.status.to_api()
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


@dataclass
class Workspace:
    """An Attio workspace in memory. Build one with :meth:`generate`."""

    workspace_id: str
    workspace_name: str
    workspace_slug: str
    token_id: str
    members: list[Member]
    objects: dict[str, Collection]
    lists: dict[str, Collection]
    archived_stage: str
    renamed_stage: tuple[str, str, str]
    archived_at: datetime
    start: datetime
    end: datetime
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    # ---- generation -------------------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        seed: int = 1,
        deals: int = 300,
        start: datetime | None = None,
        end: datetime | None = None,
        with_list: bool = True,
        stage_changes: tuple[int, int] | None = None,
    ) -> Workspace:
        """Generate a workspace with ``deals`` deals whose histories span ``start``..``end``.

        The default span is the two years ending one hour before now (UTC). The same seed and span give
        the same workspace; ids depend on the seed only. ``stage_changes=(low, high)`` gives every generated
        deal between ``low`` and ``high`` moves after its first stage (a won or lost deal is re-opened to
        get there), for benchmarks that need a known amount of history.
        """
        if end is None:
            end = utcnow() - timedelta(hours=1)
        if start is None:
            start = end - timedelta(days=730)
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if start >= end:
            raise ValueError("start must be before end")
        return _Generator(random.Random(seed), deals, start, end, with_list, stage_changes).build()

    # ---- lookups ----------------------------------------------------------------------------------------

    @property
    def deals(self) -> Collection:
        """The ``deals`` object."""
        return self.objects["deals"]

    @property
    def people(self) -> Collection:
        """The ``people`` object."""
        return self.objects["people"]

    @property
    def companies(self) -> Collection:
        """The ``companies`` object."""
        return self.objects["companies"]

    @property
    def pipeline(self) -> Collection | None:
        """The ``sales_pipeline`` list, if generated."""
        return self.lists.get("sales_pipeline")

    @property
    def list_id(self) -> str | None:
        """The id of the ``sales_pipeline`` list, if generated."""
        return self.pipeline.id if self.pipeline else None

    @property
    def stage_attribute(self) -> Attribute:
        """The deals' ``stage`` status attribute."""
        return self.deals.attributes["stage"]

    @property
    def statuses(self) -> list[Status]:
        """The deal stages, archived one included, in pipeline order."""
        return list(self.stage_attribute.statuses)

    def status_id(self, stage: str) -> str:
        """The id of a deal stage given by title or id."""
        return self.stage_attribute.status(stage).status_id

    def collection(self, target: str, identifier: str) -> Collection | None:
        """Find an object (``target="objects"``) or list (``"lists"``) by slug or id."""
        pool = self.objects if target == "objects" else self.lists if target == "lists" else {}
        if identifier in pool:
            return pool[identifier]
        return next((c for c in pool.values() if c.id == identifier), None)

    def deal(self, record_id: str) -> Record:
        """A deal record; ``KeyError`` if unknown."""
        return self._record("deals", record_id)

    def person(self, record_id: str) -> Record:
        """A person record; ``KeyError`` if unknown."""
        return self._record("people", record_id)

    def entry(self, entry_id: str) -> Entry:
        """A pipeline entry; ``KeyError`` if unknown."""
        if self.pipeline is None:
            raise KeyError(entry_id)
        item = self.pipeline.items[entry_id]
        assert isinstance(item, Entry)
        return item

    def _record(self, slug: str, record_id: str) -> Record:
        item = self.objects[slug].items[record_id]
        assert isinstance(item, Record)
        return item

    def deal_ids(self) -> list[str]:
        """Deal ids by creation time."""
        with self.lock:
            return [item_id for _, item_id in self.deals.by_created]

    def person_ids(self) -> list[str]:
        """Person ids by creation time."""
        with self.lock:
            return [item_id for _, item_id in self.people.by_created]

    def company_ids(self) -> list[str]:
        """Company ids by creation time."""
        with self.lock:
            return [item_id for _, item_id in self.companies.by_created]

    def entry_ids(self, record_id: str | None = None) -> list[str]:
        """Pipeline entry ids by creation time, optionally only those of one deal."""
        with self.lock:
            if self.pipeline is None:
                return []
            return [
                e.id for e in self.pipeline.ordered()
                if record_id is None or (isinstance(e, Entry) and e.parent_record_id == record_id)
            ]

    def stage_history(self, record_id: str) -> list[dict[str, Any]]:
        """Every stage value of a deal, oldest first, as the values endpoint renders them."""
        with self.lock:
            return [v.to_api() for v in self.deal(record_id).values["stage"]]

    def entry_history(self, entry_id: str) -> list[dict[str, Any]]:
        """Every stage value of a pipeline entry, oldest first."""
        with self.lock:
            return [v.to_api() for v in self.entry(entry_id).values["stage"]]

    def expected_transitions(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Transition]:
        """Every deal stage change with ``since <= active_from < until``, ordered by time then record.

        Consecutive values with the same status are not a change; a deal's first value is (None -> stage).
        """
        with self.lock:
            found = [
                Transition(r.id, before, after, at)
                for r in self.deals.items.values()
                for before, after, at in _changes(r.values.get("stage", ()))
            ]
        return _window(found, since, until)

    def expected_entry_transitions(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[EntryTransition]:
        """Every pipeline entry stage change with ``since <= active_from < until``."""
        with self.lock:
            items = self.pipeline.items.values() if self.pipeline else ()
            found = [
                EntryTransition(e.id, before, after, at)
                for e in items
                for before, after, at in _changes(e.values.get("stage", ()))
            ]
        return _window(found, since, until)

    def to_json_summary(self) -> dict[str, Any]:
        """Counts and ids useful to a benchmark running the server in another process."""
        with self.lock:
            return {
                "workspace_id": self.workspace_id,
                "deals": len(self.deals.items),
                "people": len(self.people.items),
                "companies": len(self.companies.items),
                "entries": len(self.pipeline.items) if self.pipeline else 0,
                "list_id": self.list_id,
            }

    # ---- mutations --------------------------------------------------------------------------------------

    def move_deal(self, record_id: str, stage: str, at: datetime | None = None) -> dict[str, Any]:
        """Write a new stage value on a deal (stage by title or id); return it rendered.

        ``at`` defaults to now, nudged to be strictly after the previous value as Attio's clock would be.
        Writing the current stage again still writes a value: whether Attio does so is unverified.
        """
        with self.lock:
            return self._move(self.deals, self.deal(record_id), stage, at)

    def move_entry(self, entry_id: str, stage: str, at: datetime | None = None) -> dict[str, Any]:
        """Write a new stage value on a pipeline entry; return it rendered."""
        with self.lock:
            assert self.pipeline is not None
            return self._move(self.pipeline, self.entry(entry_id), stage, at)

    def create_deal(
        self,
        name: str,
        stage: str,
        people: Iterable[str] = (),
        company: str | None = None,
        value: float | tuple[float, str | None] | None = None,
        at: datetime | None = None,
        owner: str | None = None,
    ) -> str:
        """Create a deal in ``stage``; ``value`` is an amount in USD or ``(amount, currency_code)``."""
        with self.lock:
            moment = self._moment(at)
            actor = self._actor()
            status = self.stage_attribute.status(stage)
            if status.is_archived:
                raise ValueError(f"stage {stage!r} is archived")
            record = Record(_uuid(self.rng), moment)
            record.values = {slug: [] for slug in self.deals.attributes}
            record.values["name"] = [_value("text", moment, actor, value=name)]
            record.values["stage"] = [Value("status", moment, None, actor, status=status)]
            if owner is not None:
                record.values["owner"] = [_owner(moment, actor, owner)]
            if value is not None:
                amount, code = value if isinstance(value, tuple) else (value, "USD")
                record.values["value"] = [_currency(moment, actor, amount, code)]
            for person_id in people:
                self._record("people", person_id)
                record.values["associated_people"].append(_reference(moment, actor, "people", person_id))
            if company is not None:
                self._record("companies", company)
                record.values["associated_company"] = [_reference(moment, actor, "companies", company)]
            self.deals.add(record)
            return record.record_id

    def add_entry(self, record_id: str, stage: str, at: datetime | None = None) -> str:
        """Add a deal to the pipeline list in ``stage``; return the entry id."""
        with self.lock:
            pipeline = self.pipeline
            if pipeline is None:
                raise KeyError("the workspace has no pipeline list")
            self.deal(record_id)
            moment = self._moment(at)
            status = pipeline.attributes["stage"].status(stage)
            entry = Entry(_uuid(self.rng), record_id, "deals", moment)
            entry.values = {"stage": [Value("status", moment, None, self._actor(), status=status)]}
            pipeline.add(entry)
            return entry.entry_id

    def add_person(
        self, email: str | None = None, user_id: str | None = None, name: str = "Sandbox Person"
    ) -> str:
        """Create a person; return the record id."""
        with self.lock:
            moment = self._moment(None)
            actor = self._actor()
            first, _, last = name.partition(" ")
            record = Record(_uuid(self.rng), moment)
            record.values = {slug: [] for slug in self.people.attributes}
            record.values["name"] = [_personal_name(moment, actor, first, last)]
            if email:
                record.values["email_addresses"] = [_email(moment, actor, email)]
            if user_id:
                record.values["app_user_id"] = [_value("text", moment, actor, value=user_id)]
            self.people.add(record)
            return record.record_id

    def add_company(self, name: str, domain: str | None = None) -> str:
        """Create a company; return the record id."""
        with self.lock:
            moment = self._moment(None)
            actor = self._actor()
            record = Record(_uuid(self.rng), moment)
            record.values = {slug: [] for slug in self.companies.attributes}
            record.values["name"] = [_value("text", moment, actor, value=name)]
            if domain:
                domains = [_value("domain", moment, actor, domain=domain, root_domain=domain)]
                record.values["domains"] = domains
            self.companies.add(record)
            return record.record_id

    def set_person_email(self, record_id: str, email: str | None) -> None:
        """Replace a person's email addresses with ``email`` (None removes them all)."""
        with self.lock:
            person = self.person(record_id)
            moment = self._moment(None)
            new = [_email(moment, self._actor(), email)] if email else []
            self._replace(person, "email_addresses", new, moment)

    def set_person_user_id(self, record_id: str, user_id: str | None) -> None:
        """Set (or with None clear) a person's ``app_user_id``."""
        with self.lock:
            person = self.person(record_id)
            moment = self._moment(None)
            new = [_value("text", moment, self._actor(), value=user_id)] if user_id else []
            self._replace(person, "app_user_id", new, moment)

    def set_deal_people(self, record_id: str, people: Iterable[str]) -> None:
        """Set a deal's associated people, keeping the values of people that stay."""
        with self.lock:
            deal = self.deal(record_id)
            wanted = list(dict.fromkeys(people))
            for person_id in wanted:
                self.person(person_id)
            moment = self._moment(None)
            actor = self._actor()
            kept = set()
            for current in deal.current("associated_people"):
                if current.fields["target_record_id"] in wanted:
                    kept.add(current.fields["target_record_id"])
                else:
                    current.active_until = moment
            for person_id in wanted:
                if person_id not in kept:
                    deal.values["associated_people"].append(_reference(moment, actor, "people", person_id))
            deal.version += 1

    def delete_deal(self, record_id: str) -> None:
        """Delete a deal with its history and its list entries, as Attio does (no undo)."""
        with self.lock:
            self.deals.remove(record_id)
            if self.pipeline is not None:
                entries = self.pipeline.items.values()
                for entry_id in [e.id for e in entries if e.parent_record_id == record_id]:
                    self.pipeline.remove(entry_id)

    # ---- internals --------------------------------------------------------------------------------------

    def _moment(self, at: datetime | None) -> datetime:
        return utcnow() if at is None else at.astimezone(UTC)

    def _actor(self) -> dict[str, Any]:
        return {"type": "workspace-member", "id": self.members[0].member_id}

    def _move(self, collection: Collection, item: Item, stage: str, at: datetime | None) -> dict[str, Any]:
        status = collection.attributes["stage"].status(stage)
        if status.is_archived:
            raise ValueError(f"stage {stage!r} is archived and cannot be set")
        history = item.values["stage"]
        previous = history[-1] if history else None
        moment = self._moment(at)
        if previous is not None and moment <= previous.active_from:
            if at is not None:
                raise ValueError(f"{at.isoformat()} is not after the current stage's active_from")
            moment = previous.active_from + timedelta(microseconds=1)
        old_key = collection._stage_key(item)
        if previous is not None:
            previous.active_until = moment
        value = Value("status", moment, None, self._actor(), status=status)
        history.append(value)
        item.version += 1
        collection.reindex_stage(item, old_key)
        return value.to_api()

    def _replace(self, record: Record, slug: str, new: list[Value], moment: datetime) -> None:
        for current in record.current(slug):
            current.active_until = moment
        record.values.setdefault(slug, []).extend(new)
        record.version += 1


def _changes(history: Iterable[Value]) -> Iterator[tuple[str | None, str, datetime]]:
    previous: str | None = None
    for value in history:
        assert value.status is not None
        if value.status.status_id != previous:
            yield previous, value.status.status_id, value.active_from
        previous = value.status.status_id


def _window(found: list, since: datetime | None, until: datetime | None) -> list:
    found = [
        t for t in found
        if (since is None or t.active_from >= since) and (until is None or t.active_from < until)
    ]
    found.sort(key=lambda t: (t.active_from, t[0]))
    return found


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _value(attribute_type: str, moment: datetime, actor: dict[str, Any], **fields: Any) -> Value:
    return Value(attribute_type, moment, None, actor, fields)


def _owner(moment: datetime, actor: dict[str, Any], member_id: str) -> Value:
    return _value(
        "actor-reference", moment, actor,
        referenced_actor_type="workspace-member", referenced_actor_id=member_id,
    )


def _currency(moment: datetime, actor: dict[str, Any], amount: float, code: str | None) -> Value:
    return _value("currency", moment, actor, currency_value=amount, currency_code=code)


def _reference(moment: datetime, actor: dict[str, Any], target_object: str, record_id: str) -> Value:
    return _value("record-reference", moment, actor, target_object=target_object, target_record_id=record_id)


def _personal_name(moment: datetime, actor: dict[str, Any], first: str, last: str) -> Value:
    full = f"{first} {last}".strip()
    return _value("personal-name", moment, actor, first_name=first, last_name=last, full_name=full)


def _email(moment: datetime, actor: dict[str, Any], email: str) -> Value:
    local, _, domain = email.partition("@")
    root = ".".join(domain.split(".")[-2:]) if domain else ""
    return _value(
        "email-address",
        moment,
        actor,
        original_email_address=email,
        email_address=email.lower(),
        email_domain=domain.lower(),
        email_root_domain=root.lower(),
        email_local_specifier=local.split("+")[0].lower(),
    )


def item_json(collection: Collection, workspace: Workspace, item: Item) -> bytes:
    """The item rendered as the query endpoints return it, cached until the item changes."""
    cached = item._cache
    if cached is not None and cached[0] == item.version:
        return cached[1]
    values = {slug: [v.to_api() for v in item.values.get(slug, ()) if v.active_until is None]
              for slug in collection.attributes}
    rendered: dict[str, Any]
    if isinstance(item, Record):
        rendered = {
            "id": {"workspace_id": workspace.workspace_id, "object_id": collection.id, "record_id": item.id},
            "created_at": format_ts(item.created_at),
            "web_url": f"https://app.attio.com/{workspace.workspace_slug}/{collection.api_slug}/record/{item.id}",
            "values": values,
        }
    else:
        rendered = {
            "id": {"workspace_id": workspace.workspace_id, "list_id": collection.id, "entry_id": item.id},
            "parent_record_id": item.parent_record_id,
            "parent_object": item.parent_object,
            "created_at": format_ts(item.created_at),
            "entry_values": values,
        }
    data = json.dumps(rendered, ensure_ascii=False, separators=(",", ":")).encode()
    item._cache = (item.version, data)
    return data


class _Generator:
    """Builds a workspace; one instance per :meth:`Workspace.generate` call."""

    def __init__(
        self, rng: random.Random, deals: int, start: datetime, end: datetime, with_list: bool,
        stage_changes: tuple[int, int] | None = None,
    ) -> None:
        self.rng = rng
        self.stage_changes = stage_changes
        self.deal_count = deals
        self.start = start
        self.end = end
        self.span = (end - start).total_seconds()
        self.with_list = with_list
        # Statuses archived after this moment can only appear in older histories.
        self.archived_at = start + timedelta(seconds=self.span * 0.35)

    def uid(self) -> str:
        return _uuid(self.rng)

    def at(self, fraction: float) -> datetime:
        return self.start + timedelta(seconds=self.span * fraction)

    def build(self) -> Workspace:
        rng = self.rng
        self.workspace_id = self.uid()
        setup = self.start - timedelta(days=30)
        self.members = [
            Member(self.uid(), first, last, f"{first.lower()}@sandbox-crm.example", level, setup)
            for first, last, level in (
                ("Ada", "Lovelace", "admin"),
                ("Grace", "Hopper", "member"),
                ("Alan", "Turing", "member"),
                ("Margaret", "Hamilton", "member"),
                ("Dennis", "Ritchie", "suspended"),
            )
        ]
        self.token_id = self.uid()
        self.objects = {
            "people": Collection("object", self.uid(), "people", "People", "Person", setup),
            "companies": Collection("object", self.uid(), "companies", "Companies", "Company", setup),
            "deals": Collection("object", self.uid(), "deals", "Deals", "Deal", setup),
        }
        self._define_attributes(setup)
        self.lists: dict[str, Collection] = {}
        if self.with_list:
            pipeline = Collection(
                "list", self.uid(), "sales_pipeline", "Sales pipeline", "Entry", setup, parent_object="deals"
            )
            stage = Attribute(self.uid(), "stage", "Stage", "status", setup, is_required=True)
            stage.statuses = self._statuses(pipeline.id, stage.attribute_id)
            pipeline.attributes["stage"] = stage
            pipeline.stage_slug = "stage"
            self.lists["sales_pipeline"] = pipeline

        deal_stage = self.objects["deals"].attributes["stage"]
        renamed = deal_stage.status(RENAMED_TO)
        archived = deal_stage.status(ARCHIVED_TITLE)

        companies = self._companies(max(3, self.deal_count // 3))
        people = self._people(max(4, int(self.deal_count * 0.8)), companies)
        self._deals(people, companies)
        if self.with_list:
            self._entries()

        return Workspace(
            workspace_id=self.workspace_id,
            workspace_name="Sandbox CRM",
            workspace_slug="sandbox-crm",
            token_id=self.token_id,
            members=self.members,
            objects=self.objects,
            lists=self.lists,
            archived_stage=archived.status_id,
            renamed_stage=(renamed.status_id, RENAMED_FROM, RENAMED_TO),
            archived_at=self.archived_at,
            start=self.start,
            end=self.end,
            rng=random.Random(rng.getrandbits(64)),
        )

    def _statuses(self, parent_id: str, attribute_id: str) -> list[Status]:
        statuses = []
        for title in ("Lead", ARCHIVED_TITLE, *PIPELINE[1:], WON, LOST):
            statuses.append(
                Status(
                    self.workspace_id, parent_id, attribute_id, self.uid(), title,
                    is_archived=title == ARCHIVED_TITLE, celebration_enabled=title == WON,
                )
            )
        return statuses

    def _define_attributes(self, setup: datetime) -> None:
        people, companies, deals = (self.objects[s] for s in ("people", "companies", "deals"))

        def add(collection: Collection, slug: str, title: str, kind: str, **options: Any) -> Attribute:
            attribute = Attribute(self.uid(), slug, title, kind, setup, **options)
            collection.attributes[slug] = attribute
            return attribute

        add(people, "name", "Name", "personal-name", is_system=True)
        add(people, "email_addresses", "Email addresses", "email-address",
            is_system=True, is_multiselect=True, is_unique=True)
        add(people, "app_user_id", "App user ID", "text", is_unique=True)
        add(companies, "name", "Name", "text", is_system=True)
        add(companies, "domains", "Domains", "domain", is_system=True, is_multiselect=True, is_unique=True)
        add(deals, "name", "Deal name", "text", is_system=True, is_required=True)
        stage = add(deals, "stage", "Deal stage", "status", is_system=True, is_required=True)
        stage.statuses = self._statuses(deals.id, stage.attribute_id)
        deals.stage_slug = "stage"
        add(deals, "owner", "Deal owner", "actor-reference", is_system=True)
        add(deals, "value", "Deal value", "currency", is_system=True, default_currency_code="USD")
        add(deals, "associated_people", "Associated people", "record-reference", is_system=True,
            is_multiselect=True, allowed_object_ids=[people.id])
        add(deals, "associated_company", "Associated company", "record-reference", is_system=True,
            allowed_object_ids=[companies.id])

    def _actor(self) -> dict[str, Any]:
        # Imports and integrations write through API tokens; people write through the app.
        if self.rng.random() < 0.07:
            return {"type": "api-token", "id": self.token_id}
        return {"type": "workspace-member", "id": self.rng.choice(self.members[:4]).member_id}

    def _companies(self, count: int) -> list[Record]:
        collection = self.objects["companies"]
        companies = []
        for i in range(count):
            moment = self.at(self.rng.random() * 0.9)
            word = self.rng.choice(_COMPANY_WORDS)
            name = f"{word} {self.rng.choice(_COMPANY_SUFFIXES)}"
            domain = f"{word.lower()}{i}.example"
            actor = self._actor()
            record = Record(self.uid(), moment)
            record.values = {
                "name": [_value("text", moment, actor, value=name)],
                "domains": [_value("domain", moment, actor, domain=domain, root_domain=domain)],
            }
            collection.add(record)
            companies.append(record)
        return companies

    def _people(self, count: int, companies: list[Record]) -> list[Record]:
        rng = self.rng
        collection = self.objects["people"]
        people = []
        for i in range(count):
            moment = self.at(rng.random() * 0.9)
            actor = self._actor()
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            company = rng.choice(companies)
            work = company.values["domains"][0].fields["domain"]
            local = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
            # The first people are scripted so every kind of person exists even in small workspaces.
            emails = [0, 1, 2, 1][i] if i < 4 else rng.choices((0, 1, 2), (10, 75, 15))[0]
            has_user_id = [False, True, True, False][i] if i < 4 else rng.random() < 0.4
            addresses = [f"{local}{i}@{work}", f"{local}{i}@{rng.choice(_PERSONAL_DOMAINS)}"][:emails]
            user_id = f"usr_{rng.getrandbits(40):010x}"
            record = Record(self.uid(), moment)
            record.values = {
                "name": [_personal_name(moment, actor, first, last)],
                "email_addresses": [_email(moment, actor, address) for address in addresses],
                "app_user_id": [_value("text", moment, actor, value=user_id)] if has_user_id else [],
            }
            collection.add(record)
            people.append(record)
        return people

    def _path(self, length: int, reopen: bool = False) -> list[str]:
        """A random walk through the pipeline: forward moves, skips, steps back, lost, reopened, won.

        With ``reopen`` a won or lost deal is re-opened until the walk has ``length`` stages."""
        rng = self.rng
        path = [rng.choices(("Lead", "Qualified", "Demo"), (80, 15, 5))[0]]
        while len(path) < length:
            current = path[-1]
            if current == WON and not reopen:
                break
            if current in (WON, LOST):
                if reopen or rng.random() < 0.5:
                    path.append(rng.choice(PIPELINE[:4]))
                    continue
                break
            i = PIPELINE.index(current)
            roll = rng.random()
            if roll < 0.45 and i + 1 < len(PIPELINE):
                step = PIPELINE[i + 1]
            elif roll < 0.60 and i + 2 < len(PIPELINE):
                step = PIPELINE[i + 2]
            elif roll < 0.72 and i > 0:
                step = PIPELINE[i - 1]
            elif roll < 0.85:
                step = LOST
            elif i >= 2:
                step = WON
            else:
                step = PIPELINE[i + 1]
            path.append(step)
        return path

    def _times(
        self, created: datetime, count: int, mean_gap_days: float, limit: datetime | None = None
    ) -> list[datetime]:
        """``count`` strictly increasing moments from ``created``, all before ``limit`` (the span's end)."""
        gaps = [max(60.0, self.rng.expovariate(1 / (mean_gap_days * 86400))) for _ in range(count - 1)]
        room = ((limit or self.end) - created).total_seconds() * 0.98
        total = sum(gaps)
        if total > room:
            gaps = [g * room / total for g in gaps]
        moments = [created]
        for gap in gaps:
            moments.append(max(moments[-1] + timedelta(seconds=gap), moments[-1] + timedelta(microseconds=1)))
        return moments

    # Scripted first deals so every pattern exists in any workspace of 8 deals or more.
    _SCRIPTS: tuple[tuple[float, tuple[str, ...]], ...] = (
        (0.10, ("Lead", "Qualified", "Demo", "Proposal", RENAMED_TO, WON)),
        (0.20, ("Lead", "Demo", "Qualified", "Demo", LOST)),
        (0.30, ("Lead", "Qualified", "Lead", "Qualified")),
        (0.40, ("Lead", "Qualified", LOST, "Qualified", "Proposal")),
        (0.50, ("Lead",)),
        (0.05, ("Lead", ARCHIVED_TITLE, "Qualified", "Demo")),
        (0.60, ("Qualified", WON)),
        (0.70, ("Lead", LOST)),
    )

    def _deals(self, people: list[Record], companies: list[Record]) -> None:
        rng = self.rng
        deals = self.objects["deals"]
        stage = deals.attributes["stage"]
        self.deal_order: list[Record] = []
        for i in range(self.deal_count):
            if i < len(self._SCRIPTS):
                fraction, script = self._SCRIPTS[i]
                created = self.at(fraction + rng.random() * 0.01)
                path = list(script)
                # The archived stage's value must end before the stage was archived.
                limit = self.archived_at if ARCHIVED_TITLE in path else None
                times = self._times(created, len(path), 2.0 if limit else 12.0, limit)
            else:
                created = self.at(rng.random())
                if self.stage_changes:
                    path = self._path(1 + rng.randint(*self.stage_changes), reopen=True)
                else:
                    path = self._path(rng.choices(_HISTORY_LENGTHS, _HISTORY_WEIGHTS)[0])
                times = self._times(created, len(path), 9.0)
                if (
                    len(path) >= 3 and path[0] == "Lead" and path[1] in ("Qualified", "Demo")
                    and times[2] < self.archived_at and rng.random() < 0.4
                ):
                    path[1] = ARCHIVED_TITLE
            record = Record(self.uid(), created)
            self.deal_order.append(record)
            history = []
            for title, moment in zip(path, times, strict=True):
                if history:
                    history[-1].active_until = moment
                history.append(Value("status", moment, None, self._actor(), status=stage.status(title)))
            actor = history[0].actor
            record.values = {slug: [] for slug in deals.attributes}
            record.values["stage"] = history
            record.values["name"] = [_value("text", created, actor, value=self._deal_name(i, companies))]
            self._deal_attributes(i, record, created, actor, people, companies)
            deals.add(record)

    def _deal_name(self, i: int, companies: list[Record]) -> str:
        company = self.rng.choice(companies).values["name"][0].fields["value"]
        kind = self.rng.choice(("expansion", "new business", "renewal", "pilot", "upgrade"))
        return f"{company} {kind} #{i + 1}"

    def _deal_attributes(
        self, i: int, record: Record, created: datetime, actor: dict[str, Any],
        people: list[Record], companies: list[Record],
    ) -> None:
        rng = self.rng
        # Scripted variety for the first deals: several people, none, no value, null/EUR/GBP currency,
        # no company, no owner.
        n_people = {0: 3, 1: 0}.get(i, rng.choices((0, 1, 2, 3, 4), (15, 55, 18, 8, 4))[0])
        has_value = i != 2 and (i < 8 or rng.random() < 0.8)
        code = {3: None, 4: "EUR", 5: "GBP"}.get(
            i, "USD" if i < 8 else rng.choices(("USD", "EUR", "GBP", None), (70, 12, 10, 8))[0]
        )
        has_company = i != 6 and (i < 8 or rng.random() < 0.85)
        has_owner = i != 7 and (i < 8 or rng.random() < 0.85)
        if i == 0:
            chosen = people[:3]
        elif i < 8:
            chosen = people[3:3 + n_people]
        else:
            chosen = rng.sample(people, n_people)
        record.values["associated_people"] = [_reference(created, actor, "people", p.id) for p in chosen]
        if has_value:
            amount: float = rng.randrange(5, 2000) * 100
            if rng.random() < 0.15:
                amount += rng.randrange(1, 100) / 100
            record.values["value"] = [_currency(created, actor, amount, code)]
        if has_company:
            company = rng.choice(companies)
            record.values["associated_company"] = [_reference(created, actor, "companies", company.id)]
        if has_owner:
            record.values["owner"] = [_owner(created, actor, rng.choice(self.members).member_id)]

    def _entries(self) -> None:
        rng = self.rng
        pipeline = self.lists["sales_pipeline"]
        stage = pipeline.attributes["stage"]
        for i, deal in enumerate(self.deal_order):
            entries = 1 if rng.random() < 0.6 else 0
            # The first deal always has two entries: one record on two entries must be handled.
            if rng.random() < 0.03 or i == 0:
                entries = 2
            for _ in range(entries):
                room = (self.end - deal.created_at).total_seconds()
                created = deal.created_at + timedelta(seconds=rng.random() * min(room * 0.1, 2 * 86400))
                path = self._path(rng.choices(_HISTORY_LENGTHS[:5], _HISTORY_WEIGHTS[:5])[0])
                times = self._times(created, len(path), 7.0)
                entry = Entry(self.uid(), deal.id, "deals", created)
                history: list[Value] = []
                for title, moment in zip(path, times, strict=True):
                    if history:
                        history[-1].active_until = moment
                    history.append(Value("status", moment, None, self._actor(), status=stage.status(title)))
                entry.values = {"stage": history}
                pipeline.add(entry)
