"""Who and what an event names: associated people, company names and owner names, fetched in batches."""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from sync.attio import AttioClient, member_name, person_from_record, reading, record_name
from sync.attributes import Names
from sync.events import resolve_identity
from sync.models import Deal, Identity, Person

K = TypeVar("K")
V = TypeVar("V")

# People and companies kept between batches, least recently used evicted first: a poll of up to a couple of
# thousand deals looks each up once, and a backfill's memory stays flat however many deals it walks.
CACHE_SIZE = 2_000
# Nor are the people and companies of the last this many loads evicted, however many they are: a backfill looks
# up the batches it reads ahead (up to three at 100 requests a second) before the events of the batch before
# them are built, and must not push that batch's people out before it uses them.
LOADS_KEPT = 8


@dataclass(frozen=True)
class Lookups:
    """What `Resolver.load` found for some deals: their people, company names and owner names, kept apart from
    the resolver's cache so that another thread's lookups cannot evict them while the events are built."""

    people: Mapping[str, Person]
    companies: Mapping[str, str | None]
    members: Mapping[str, str | None]

    def identity(self, deal: Deal) -> tuple[Identity | None, str | None]:
        """The deal's Usermaven identity, from its associated people."""
        return resolve_identity([self.people[p] for p in deal.people_ids if p in self.people])

    def company_name(self, deal: Deal) -> str | None:
        return self.companies.get(deal.company_id) if deal.company_id else None

    def owner_name(self, deal: Deal) -> str | None:
        return self.members.get(deal.owner_id) if deal.owner_id else None


class Resolver:
    """Looks up people, companies and workspace members for many deals at once.

    People and companies are kept in a bounded cache for the run (each looked up once per run unless
    evicted or forgotten); workspace members are read once per run. Threads may share a resolver: one
    looks up the deals of a batch to come while another builds the events of the batch before.
    """

    def __init__(self, client: AttioClient, user_id_attribute: str | None, cache_size: int | None = None):
        self.client = client
        self.user_id_attribute = user_id_attribute
        self.cache_size = cache_size or CACHE_SIZE
        self._people: OrderedDict[str, Person | None] = OrderedDict()  # None: Attio did not return them
        self._companies: OrderedDict[str, str | None] = OrderedDict()
        self._members: dict[str, str | None] | None = None
        self._recent: deque[tuple[int, int]] = deque(maxlen=LOADS_KEPT)  # people, companies of the last loads
        # Held while the caches are read, changed or filled: a lookup another thread began for the same people
        # is waited for, not made twice.
        self._lock = threading.RLock()

    def forget_people(self, person_ids: Iterable[str]) -> None:
        """Drop cached people so that the next lookup reads them again (held events are re-checked)."""
        with self._lock:
            for person_id in person_ids:
                self._people.pop(person_id, None)

    def load(self, deals: Iterable[Deal], owners: bool = False) -> Lookups:
        """Fetch every person and company these deals point at that is not cached (one query per 200 ids;
        people and companies at the same time, so a batch waits for one round trip, not two), and with
        `owners` the workspace members' names if a deal has an owner; return what the deals need."""
        deals = list(deals)
        with self._lock:
            self._load(deals)
            members = self._member_names() if owners and any(d.owner_id for d in deals) else {}
            people = {p: self._people.get(p) for d in deals for p in d.people_ids}
            return Lookups(
                people={p: person for p, person in people.items() if person is not None},
                companies={d.company_id: self._companies.get(d.company_id) for d in deals if d.company_id},
                members=members)

    def _load(self, deals: list[Deal]) -> None:
        wanted_people = list(dict.fromkeys(p for d in deals for p in d.people_ids))
        wanted_companies = list(dict.fromkeys(d.company_id for d in deals if d.company_id))
        people = _missing(self._people, wanted_people)
        companies = _missing(self._companies, wanted_companies)
        jobs: list[Callable[[], None]] = []
        if people:
            jobs.append(lambda: self._fetch_people(people))
        if companies:
            jobs.append(lambda: self._fetch_companies(companies))
        if len(jobs) == 2:
            with ThreadPoolExecutor(2, thread_name_prefix="resolve") as pool:
                for future in [pool.submit(job) for job in jobs]:
                    future.result()
        elif jobs:
            jobs[0]()
        # Make room after the fetch, never evicting what this load or the last ones needed (the most recently
        # used entries are theirs).
        self._recent.append((len(wanted_people), len(wanted_companies)))
        _trim(self._people, self.cache_size, sum(people for people, _ in self._recent))
        _trim(self._companies, self.cache_size, sum(companies for _, companies in self._recent))

    def _fetch_people(self, ids: list[str]) -> None:
        found: dict[str, Person | None] = dict.fromkeys(ids)
        records = self.client.records_by_id("people", ids)
        with reading("POST /v2/objects/people/records/query"):
            for record in records:
                person = person_from_record(record, self.user_id_attribute)
                found[person.record_id] = person
        self._people.update(found)

    def _fetch_companies(self, ids: list[str]) -> None:
        found: dict[str, str | None] = dict.fromkeys(ids)
        records = self.client.records_by_id("companies", ids)
        with reading("POST /v2/objects/companies/records/query"):
            for record in records:
                found[record["id"]["record_id"]] = record_name(record)
        self._companies.update(found)

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
        with self._lock:
            known = self._member_names() if members else {}
        return Names(records=found, members={m: known.get(m) for m in members})


def _missing(cache: OrderedDict[K, V], keys: Iterable[K]) -> list[K]:
    """The keys not in the cache; those that are move to the recent end."""
    missing = []
    for key in keys:
        if key in cache:
            cache.move_to_end(key)
        else:
            missing.append(key)
    return missing


def _trim(cache: OrderedDict[K, V], size: int, keep: int) -> None:
    """Evict the least recently used entries beyond `size` (never the `keep` most recent)."""
    while len(cache) > max(size, keep):
        cache.popitem(last=False)
