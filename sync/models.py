"""Plain data the pure core works on: stage values, deals, people, transitions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache

from dateutil.parser import isoparse

# Attio's own form (UTC with a `Z`, up to nine fractional digits): the standard library reads it as dateutil
# does, many times faster (a backfill parses two per stage value). Other forms are dateutil's to read.
_ATTIO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")


def parse_time(text: str) -> datetime:
    """Parse an Attio timestamp (UTC, up to nine fractional digits) into an aware datetime.

    A naive value is taken as UTC. Precision beyond microseconds is dropped.
    """
    if _ATTIO_TIME.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # out of range for the standard library (hour 24, say): dateutil decides
    value = isoparse(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@lru_cache(maxsize=4096)
def format_time(value: datetime) -> str:
    """Render a datetime as ISO 8601 UTC with microseconds and a `Z`: the one form stored and sent.

    Cached (bounded): one transition's moment is written four times (its event id, two event fields, its
    ledger row), a deal's creation once per transition. Equal instants give the same text, whatever their
    time zone, as the text is UTC."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # strftime's %Y does not pad: keep its form for these
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # isoformat is the same text as the strftime above (and faster, on a hot path): YYYY-MM-DDTHH:MM:SS.ffffff
    return value.isoformat(timespec="microseconds")[:26] + "Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch, as Usermaven's `_timestamp` wants."""
    if value.tzinfo is None:
        value = value.astimezone(UTC)  # naive: local time, as astimezone reads it
    delta = value - _EPOCH  # aware datetimes subtract as instants, whatever their zones
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def utc_time(value: datetime) -> str:
    """The instant `epoch_ms` gives, as RFC 3339 UTC with a `Z`, in the form Usermaven's JavaScript SDK sends
    `utc_time` (six fractional digits; the last three are zero, as the milliseconds are all `_timestamp` has)."""
    # format_time's text with the microseconds floored to the millisecond: its last three digits zeroed.
    return format_time(value)[:-4] + "000Z"


@dataclass(frozen=True)
class StageValue:
    """One value of the stage attribute: a stage a deal entered at `active_from`."""

    status_id: str
    title: str
    active_from: datetime
    attribute_id: str
    parent_id: str  # object id, or list id for list entries
    active_until: datetime | None = None  # None: the current value


@dataclass(frozen=True)
class DealRef:
    """Where a deal's stage lives: a record of the object, or an entry of a pipeline list."""

    record_id: str
    entry_id: str | None = None

    @property
    def key(self) -> str:
        return self.entry_id or self.record_id


@dataclass(frozen=True)
class Deal:
    """What an event says about a deal, read from its Attio record."""

    record_id: str
    name: str | None = None
    value: float | int | None = None
    currency: str | None = None
    owner_id: str | None = None
    people_ids: tuple[str, ...] = ()
    company_id: str | None = None
    web_url: str | None = None
    created_at: datetime | None = None
    # The active values of the attributes ATTIO_EVENT_ATTRIBUTES names, by slug, as Attio gives them
    # (rendered for the event once record and member names are known).
    attributes: dict[str, tuple[dict, ...]] = field(default_factory=dict, repr=False, hash=False)


@dataclass(frozen=True)
class Person:
    """An associated person: emails in Attio's order and the app's user id when configured."""

    record_id: str
    emails: tuple[str, ...] = ()
    user_id: str | None = None


@dataclass(frozen=True)
class Identity:
    """The Usermaven user an event belongs to (seed guide Case 1: app user id; Case 2: email)."""

    user_id: str
    email: str | None
    case: str  # "user_id" or "email"

    def as_user(self) -> dict[str, str]:
        user = {"id": self.user_id}
        if self.email:
            user["email"] = self.email
        return user


@dataclass(frozen=True)
class Transition:
    """A deal entering a stage: from `from_stage` (None for the deal's first stage) to `to_stage`."""

    event_id: str
    deal: DealRef
    from_stage_id: str | None
    from_stage: str | None
    to_stage_id: str
    to_stage: str
    changed_at: datetime
    first_time_in_stage: bool  # the deal had never been in `to_stage` before, in its whole history
    from_stage_since: datetime | None  # when the deal entered `from_stage`


@dataclass
class Current:
    """A deal as a records or entries query returns it: where it is and the stage it is in now."""

    ref: DealRef
    stage: StageValue | None
    record: dict = field(default_factory=dict, repr=False)


@dataclass
class Counts:
    """What a step did, in numbers: steps return (or yield, batch by batch) these, and commands add them up."""

    deals_read: int = 0
    transitions: int = 0  # new in the ledger
    replayed: int = 0  # already in the ledger, queued again by `replay`
    held: int = 0
    released: int = 0
    sent: int = 0
    failed: int = 0
    printed: int = 0
    unread: int = 0  # deals whose history could not be used: in the retry set, read again next run

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})
