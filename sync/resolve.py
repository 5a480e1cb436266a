"""Who and what an event names: associated people, company names and owner names, fetched in batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sync.attio import AttioClient, member_name, person_from_record, reading, record_name
from sync.attributes import Names
from sync.events import resolve_identity
from sync.models import Deal, Identity, Person


class Resolver:
    """Looks up people, companies and workspace members for many deals at once.

    People and companies are kept for the current batch only, so memory stays flat however many deals a
    backfill walks; workspace members are read once per run.
    """

    def __init__(self, client: AttioClient, user_id_attribute: str | None):
        self.client = client
        self.user_id_attribute = user_id_attribute
        self._people: dict[str, Person] = {}
        self._companies: dict[str, str | None] = {}
        self._members: dict[str, str | None] | None = None

    def forget_people(self, person_ids: Iterable[str]) -> None:
        """Drop cached people so that the next lookup reads them again (held events are re-checked)."""
        for person_id in person_ids:
            self._people.pop(person_id, None)

    def load(self, deals: Iterable[Deal]) -> None:
        """Fetch every person and company these deals point at (one query per 200 ids), keeping from the
        previous batch only those these deals need too."""
        deals = list(deals)
        wanted_people = {p for d in deals for p in d.people_ids}
        wanted_companies = {d.company_id for d in deals if d.company_id}
        self._people = {k: v for k, v in self._people.items() if k in wanted_people}
        self._companies = {k: v for k, v in self._companies.items() if k in wanted_companies}
        people = [p for p in dict.fromkeys(p for d in deals for p in d.people_ids) if p not in self._people]
        companies = [c for c in dict.fromkeys(d.company_id for d in deals if d.company_id)
                     if c not in self._companies]
        if people:
            records = self.client.records_by_id("people", people)
            with reading("POST /v2/objects/people/records/query"):
                for record in records:
                    person = person_from_record(record, self.user_id_attribute)
                    self._people[person.record_id] = person
        if companies:
            records = self.client.records_by_id("companies", companies)
            with reading("POST /v2/objects/companies/records/query"):
                for record in records:
                    self._companies[record["id"]["record_id"]] = record_name(record)
            for company_id in companies:
                self._companies.setdefault(company_id, None)

    def identity(self, deal: Deal) -> tuple[Identity | None, str | None]:
        """The deal's Usermaven identity, from the people already loaded (call `load` first)."""
        return resolve_identity([self._people[p] for p in deal.people_ids if p in self._people])

    def company_name(self, deal: Deal) -> str | None:
        return self._companies.get(deal.company_id) if deal.company_id else None

    def owner_name(self, deal: Deal) -> str | None:
        if not deal.owner_id:
            return None
        return self._member_names().get(deal.owner_id)

    def _member_names(self) -> dict[str, str | None]:
        if self._members is None:
            members = self.client.workspace_members()
            with reading("GET /v2/workspace_members"):
                self._members = {m["id"]["workspace_member_id"]: member_name(m) for m in members}
        return self._members

    def names(self, records: Iterable[tuple[str, str]], members: Iterable[str]) -> Names:
        """The names of the records (object slug, record id) and workspace members that a batch's event
        attributes point at: one query per object per 200 records, members read once per run."""
        by_object: dict[str, list[str]] = defaultdict(list)
        for object_, record_id in records:
            by_object[object_].append(record_id)
        found: dict[tuple[str, str], str | None] = {}
        for object_, record_ids in by_object.items():
            answer = self.client.records_by_id(object_, record_ids)
            with reading(f"POST /v2/objects/{object_}/records/query"):
                for record in answer:
                    found[(object_, record["id"]["record_id"])] = record_name(record)
        members = set(members)
        known = self._member_names() if members else {}
        return Names(records=found, members={m: known.get(m) for m in members})
