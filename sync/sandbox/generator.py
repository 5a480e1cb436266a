"""The deterministic generator of a sandbox workspace: members, objects and a pipeline list with their
attributes and statuses, then companies, people and deals with two years of realistic stage histories."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sync.sandbox.records import (
    Attribute,
    Collection,
    Entry,
    Member,
    Record,
    Status,
    Value,
    new_uuid,
)
from sync.sandbox.values import (
    currency_value,
    email_value,
    owner_value,
    personal_name_value,
    plain_value,
    reference_value,
)

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


def generate_parts(
    rng: random.Random, deals: int, start: datetime, end: datetime, with_list: bool,
    stage_changes: tuple[int, int] | None,
) -> dict[str, Any]:
    """The fields of a generated :class:`~sync.sandbox.workspace.Workspace` (no records when ``deals`` is 0)."""
    return _Generator(rng, deals, start, end, with_list, stage_changes).build()


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
        return new_uuid(self.rng)

    def at(self, fraction: float) -> datetime:
        return self.start + timedelta(seconds=self.span * fraction)

    def build(self) -> dict[str, Any]:
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

        if self.deal_count:
            companies = self._companies(max(3, self.deal_count // 3))
            people = self._people(max(4, int(self.deal_count * 0.8)), companies)
            self._deals(people, companies)
            if self.with_list:
                self._entries()

        return dict(
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
                "name": [plain_value("text", moment, actor, value=name)],
                "domains": [plain_value("domain", moment, actor, domain=domain, root_domain=domain)],
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
                "name": [personal_name_value(moment, actor, first, last)],
                "email_addresses": [email_value(moment, actor, address) for address in addresses],
                "app_user_id": [plain_value("text", moment, actor, value=user_id)] if has_user_id else [],
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
            history: list[Value] = []
            for title, moment in zip(path, times, strict=True):
                if history:
                    history[-1].active_until = moment
                history.append(Value("status", moment, None, self._actor(), status=stage.status(title)))
            actor = history[0].actor
            record.values = {slug: [] for slug in deals.attributes}
            record.values["stage"] = history
            record.values["name"] = [plain_value("text", created, actor, value=self._deal_name(i, companies))]
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
        record.values["associated_people"] = [reference_value(created, actor, "people", p.id) for p in chosen]
        if has_value:
            amount: float = rng.randrange(5, 2000) * 100
            if rng.random() < 0.15:
                amount += rng.randrange(1, 100) / 100
            record.values["value"] = [currency_value(created, actor, amount, code)]
        if has_company:
            company = rng.choice(companies)
            record.values["associated_company"] = [reference_value(created, actor, "companies", company.id)]
        if has_owner:
            record.values["owner"] = [owner_value(created, actor, rng.choice(self.members).member_id)]

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
