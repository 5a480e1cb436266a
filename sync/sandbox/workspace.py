"""An in-memory Attio workspace: deals with stage histories, people, companies and a pipeline list.

The data is generated deterministically from a seed (``generator.py``) or built up by a test from an
:meth:`Workspace.empty` one (``mutations.py``), and kept in Attio's own shapes (``records.py``), so the
sandbox server only has to filter, sort and page it. Every read and write goes through one lock because the
server is threaded and tests mutate the workspace while a sync runs.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sync.sandbox.generator import generate_parts
from sync.sandbox.mutations import WorkspaceMutations
from sync.sandbox.records import (
    Attribute,
    Collection,
    Entry,
    EntryTransition,
    Member,
    Record,
    Status,
    Transition,
    Value,
    utcnow,
)

_T = TypeVar("_T", Transition, EntryTransition)


@dataclass
class Workspace(WorkspaceMutations):
    """An Attio workspace in memory. Build one with :meth:`generate` or :meth:`empty`.

    ``clock`` is Attio's clock: None follows the real time; a fixed moment is what the ``Date`` header says
    and when writes without an explicit time happen.
    """

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
    clock: datetime | None = None

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
        return cls(**generate_parts(random.Random(seed), deals, start, end, with_list, stage_changes))

    @classmethod
    def empty(cls, seed: int = 1, with_list: bool = True, clock: datetime | None = None) -> Workspace:
        """A workspace with the generated members, objects, attributes, stages and pipeline list, but no
        records or entries: tests add exactly the deals, people and companies they need."""
        end = (clock or utcnow()).astimezone(UTC)
        parts = generate_parts(random.Random(seed), 0, end - timedelta(days=730), end, with_list, None)
        return cls(**parts, clock=clock)

    def now(self) -> datetime:
        """Attio's clock: ``clock`` if set, else the current time (UTC)."""
        return self.clock if self.clock is not None else utcnow()

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


def _changes(history: Iterable[Value]) -> Iterator[tuple[str | None, str, datetime]]:
    previous: str | None = None
    for value in history:
        assert value.status is not None
        if value.status.status_id != previous:
            yield previous, value.status.status_id, value.active_from
        previous = value.status.status_id


def _window(found: list[_T], since: datetime | None, until: datetime | None) -> list[_T]:
    found = [
        t for t in found
        if (since is None or t.active_from >= since) and (until is None or t.active_from < until)
    ]
    found.sort(key=lambda t: (t.active_from, t[0]))
    return found

