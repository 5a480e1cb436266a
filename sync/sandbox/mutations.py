"""Writes to a sandbox workspace, as Attio's app or API would make them: stage moves, new deals, people,
companies and list entries, changed emails, user ids and associations, renamed stages, deletions, new
attributes of an object or list and their values on deals and entries.

:class:`WorkspaceMutations` is mixed into :class:`~sync.sandbox.workspace.Workspace`; every write takes the
workspace lock and bumps the item's version, which drops its cached rendering.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sync.sandbox.records import (
    Attribute,
    Collection,
    Entry,
    Item,
    Member,
    Record,
    SelectOption,
    Status,
    Value,
    new_uuid,
)
from sync.sandbox.values import (
    currency_value,
    domain_value,
    email_value,
    owner_value,
    personal_name_value,
    plain_value,
    reference_value,
    typed_value,
)


class WorkspaceMutations:
    """The writes of a workspace. Every ``at`` defaults to the workspace's clock (:meth:`now`)."""

    lock: threading.RLock
    members: list[Member]
    rng: random.Random
    workspace_id: str
    objects: dict[str, Collection]
    lists: dict[str, Collection]

    if TYPE_CHECKING:  # provided by Workspace
        @property
        def deals(self) -> Collection: ...
        @property
        def people(self) -> Collection: ...
        @property
        def companies(self) -> Collection: ...
        @property
        def pipeline(self) -> Collection | None: ...
        @property
        def stage_attribute(self) -> Attribute: ...
        def now(self) -> datetime: ...
        def deal(self, record_id: str) -> Record: ...
        def person(self, record_id: str) -> Record: ...
        def entry(self, entry_id: str) -> Entry: ...


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
        record_id: str | None = None,
    ) -> str:
        """Create a deal in ``stage``; ``value`` is an amount in USD or ``(amount, currency_code)``.

        ``record_id`` (default: a new one) lets a test name its deals.
        """
        with self.lock:
            moment = self._moment(at)
            actor = self._actor()
            status = self.stage_attribute.status(stage)
            if status.is_archived:
                raise ValueError(f"stage {stage!r} is archived")
            record = Record(self._new_id(self.deals, record_id), moment)
            record.values = {slug: [] for slug in self.deals.attributes}
            record.values["name"] = [plain_value("text", moment, actor, value=name)]
            record.values["stage"] = [Value("status", moment, None, actor, status=status)]
            if owner is not None:
                record.values["owner"] = [owner_value(moment, actor, owner)]
            if value is not None:
                amount, code = value if isinstance(value, tuple) else (value, "USD")
                record.values["value"] = [currency_value(moment, actor, amount, code)]
            for person_id in people:
                self.person(person_id)
                record.values["associated_people"].append(reference_value(moment, actor, "people", person_id))
            if company is not None:
                self._company(company)
                record.values["associated_company"] = [reference_value(moment, actor, "companies", company)]
            self.deals.add(record)
            return record.record_id

    def add_entry(
        self, record_id: str, stage: str, at: datetime | None = None, entry_id: str | None = None
    ) -> str:
        """Add a deal to the pipeline list in ``stage``; return the entry id (``entry_id`` if given)."""
        with self.lock:
            pipeline = self.pipeline
            if pipeline is None:
                raise KeyError("the workspace has no pipeline list")
            self.deal(record_id)
            moment = self._moment(at)
            status = pipeline.attributes["stage"].status(stage)
            entry = Entry(self._new_id(pipeline, entry_id), record_id, "deals", moment)
            entry.values = {"stage": [Value("status", moment, None, self._actor(), status=status)]}
            pipeline.add(entry)
            return entry.entry_id

    def add_person(
        self, email: str | None = None, user_id: str | None = None, name: str = "Sandbox Person",
        record_id: str | None = None,
    ) -> str:
        """Create a person (``app_user_id`` set to ``user_id``); return the record id."""
        with self.lock:
            moment = self._moment(None)
            actor = self._actor()
            first, _, last = name.partition(" ")
            record = Record(self._new_id(self.people, record_id), moment)
            record.values = {slug: [] for slug in self.people.attributes}
            record.values["name"] = [personal_name_value(moment, actor, first, last)]
            if email:
                record.values["email_addresses"] = [email_value(moment, actor, email)]
            if user_id:
                record.values["app_user_id"] = [plain_value("text", moment, actor, value=user_id)]
            self.people.add(record)
            return record.record_id

    def add_company(self, name: str, domain: str | None = None, record_id: str | None = None) -> str:
        """Create a company; return the record id."""
        with self.lock:
            moment = self._moment(None)
            actor = self._actor()
            record = Record(self._new_id(self.companies, record_id), moment)
            record.values = {slug: [] for slug in self.companies.attributes}
            record.values["name"] = [plain_value("text", moment, actor, value=name)]
            if domain:
                record.values["domains"] = [domain_value(moment, actor, domain)]
            self.companies.add(record)
            return record.record_id

    def set_person_email(self, record_id: str, email: str | None) -> None:
        """Replace a person's email addresses with ``email`` (None removes them all)."""
        with self.lock:
            person = self.person(record_id)
            moment = self._moment(None)
            new = [email_value(moment, self._actor(), email)] if email else []
            self._replace(person, "email_addresses", new, moment)

    def set_person_user_id(self, record_id: str, user_id: str | None) -> None:
        """Set (or with None clear) a person's ``app_user_id``."""
        with self.lock:
            person = self.person(record_id)
            moment = self._moment(None)
            new = [plain_value("text", moment, self._actor(), value=user_id)] if user_id else []
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
                    deal.values["associated_people"].append(reference_value(moment, actor, "people", person_id))
            deal.version += 1

    def add_attribute(
        self,
        slug: str,
        kind: str,
        target: str = "deals",
        multiselect: bool = False,
        options: Sequence[str] = (),
        allowed_objects: Sequence[str] | None = None,
        title: str | None = None,
    ) -> Attribute:
        """Define a new attribute of an object or list (``target``, by slug) and return it.

        ``options`` are the titles of a select's options or a status attribute's statuses; ``allowed_objects``
        the object slugs a record-reference may point at. Every item of ``target`` gets it, without values.
        """
        with self.lock:
            collection = self.objects.get(target) or self.lists.get(target)
            if collection is None:
                raise KeyError(f"no object or list {target!r}")
            if slug in collection.attributes:
                raise ValueError(f"{target} already has an attribute {slug!r}")
            if options and kind not in ("select", "status"):
                raise ValueError(f"a {kind} attribute has no options")
            attribute = Attribute(
                new_uuid(self.rng), slug, title or slug.replace("_", " ").capitalize(), kind, self._moment(None),
                is_multiselect=multiselect, default_currency_code="USD" if kind == "currency" else None,
                allowed_object_ids=[self.objects[o].id for o in allowed_objects] if allowed_objects else None,
            )
            ids = (self.workspace_id, collection.id, attribute.attribute_id)
            if kind == "select":
                attribute.options = [SelectOption(*ids, new_uuid(self.rng), t) for t in options]
            elif kind == "status":
                attribute.statuses = [Status(*ids, new_uuid(self.rng), t) for t in options]
            collection.attributes[slug] = attribute
            for item in collection.items.values():
                item.values.setdefault(slug, [])
                item.version += 1
            return attribute

    def set_deal_values(self, record_id: str, slug: str, *values: Any, at: datetime | None = None) -> None:
        """Replace the current values of a deal's attribute with ``values`` (none clears it), each given as
        :func:`~sync.sandbox.values.typed_value` takes it; the values replaced become history."""
        with self.lock:
            self._set_values(self.deals, self.deal(record_id), slug, values, at)

    def set_entry_values(self, entry_id: str, slug: str, *values: Any, at: datetime | None = None) -> None:
        """Replace the current values of a pipeline entry's attribute, as :meth:`set_deal_values` does."""
        with self.lock:
            if self.pipeline is None:
                raise KeyError("the workspace has no pipeline list")
            self._set_values(self.pipeline, self.entry(entry_id), slug, values, at)

    def rename_stage(self, stage: str, title: str) -> None:
        """Rename a deal stage (by title or id): its id stays, every value shows the new title."""
        with self.lock:
            self.stage_attribute.status(stage).title = title
            for item in self.deals.items.values():
                item.version += 1

    def delete_deal(self, record_id: str) -> None:
        """Delete a deal with its history and its list entries, as Attio does (no undo)."""
        with self.lock:
            self.deals.remove(record_id)
            if self.pipeline is not None:
                entries = self.pipeline.items.values()
                for entry_id in [e.id for e in entries if isinstance(e, Entry) and e.parent_record_id == record_id]:
                    self.pipeline.remove(entry_id)

    # ---- internals --------------------------------------------------------------------------------------

    def _moment(self, at: datetime | None) -> datetime:
        return self.now() if at is None else at.astimezone(UTC)

    def _new_id(self, collection: Collection, wanted: str | None) -> str:
        if wanted is None:
            return new_uuid(self.rng)
        if wanted in collection.items:
            raise ValueError(f"{collection.api_slug} already has an item {wanted!r}")
        return wanted

    def _company(self, record_id: str) -> Record:
        item = self.companies.items[record_id]
        assert isinstance(item, Record)
        return item

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

    def _replace(self, item: Item, slug: str, new: list[Value], moment: datetime) -> None:
        for current in item.current(slug):
            current.active_until = moment
        item.values.setdefault(slug, []).extend(new)
        item.version += 1

    def _set_values(
        self, collection: Collection, item: Item, slug: str, values: Sequence[Any], at: datetime | None
    ) -> None:
        attribute = collection.attributes.get(slug)
        if attribute is None:
            raise KeyError(f"{collection.api_slug} has no attribute {slug!r}")
        if slug == collection.stage_slug:
            raise ValueError("the stage changes through move_deal or move_entry")
        if len(values) > 1 and not attribute.is_multiselect:
            raise ValueError(f"{slug!r} is not multi-select: it holds one value at a time")
        moment = self._moment(at)
        actor = self._actor()
        new = [typed_value(attribute, raw, moment, actor, self._object_of(attribute, raw)) for raw in values]
        self._replace(item, slug, new, moment)

    def _object_of(self, attribute: Attribute, raw: Any) -> str | None:
        """The slug of the object holding the record a record-reference value points at."""
        if attribute.type != "record-reference":
            return None
        allowed = attribute.allowed_object_ids
        for collection in self.objects.values():
            if raw in collection.items and (allowed is None or collection.id in allowed):
                return collection.api_slug
        raise KeyError(f"no record {raw!r} that {attribute.api_slug!r} may point at")

