"""Transitions → Usermaven events, and whose events they are: pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sync.models import Deal, Identity, Person, Transition, epoch_ms, format_time, utc_time

SOURCE = "Attio CRM"
REDACTED = "<USERMAVEN_API_KEY>"
# The `event_attributes` every event has; attributes added by ATTIO_EVENT_ATTRIBUTES may not take these keys.
EVENT_ATTRIBUTE_KEYS = (
    "deal_id", "deal_name", "deal_stage", "deal_stage_id", "previous_stage", "previous_stage_id",
    "first_time_in_stage", "seconds_in_previous_stage", "deal_value", "deal_currency", "deal_owner", "deal_url",
    "deal_created_at", "stage_changed_at", "source", "entry_id",
)


@dataclass(frozen=True)
class EventSettings:
    """The parts of every event that come from configuration."""

    event_type: str
    site_url: str
    # USERMAVEN_STAGE_EVENT_TYPES: stage title or status id → event type; other stages get `event_type`.
    stage_event_types: Mapping[str, str] = field(default_factory=dict)

    def event_type_for(self, transition: Transition) -> str:
        """The event type of a transition: its stage's own, by status id or by title, else the default."""
        types = self.stage_event_types
        return types.get(transition.to_stage_id) or types.get(transition.to_stage) or self.event_type


def resolve_identity(people: Sequence[Person]) -> tuple[Identity | None, str | None]:
    """The Usermaven user for a deal, from its associated people in Attio's order.

    The first person that yields an identity wins: their app user id (Case 1, only when the user id
    attribute is configured and set), else their first email (Case 2). Returns (identity, None), or
    (None, why not) when nobody yields one.
    """
    if not people:
        return None, "deal has no associated person"
    for person in people:
        first_email = person.emails[0] if person.emails else None
        if person.user_id:
            return Identity(user_id=person.user_id, email=first_email, case="user_id"), None
        if first_email:
            return Identity(user_id=first_email, email=first_email, case="email"), None
    count = len(people)
    noun = "person has" if count == 1 else f"{count} people have"
    return None, f"the deal's associated {noun} no email and no user id"


def build_event(
    transition: Transition,
    deal: Deal,
    settings: EventSettings,
    identity: Identity | None,
    company_name: str | None = None,
    owner_name: str | None = None,
    attributes: Mapping[str, object] | None = None,
) -> dict:
    """The Usermaven event for one transition, without `api_key` (a secret, added only when sending).

    `user` is absent while the identity is unknown; the event is held until it is known. `attributes` are
    the deal attributes ATTIO_EVENT_ATTRIBUTES adds, already rendered, appended to `event_attributes`.
    Every time in it comes from Attio, so the same transition gives the same event in every run and replay.
    """
    event: dict = {
        "event_type": settings.event_type_for(transition),
        "event_id": transition.event_id,
        "_timestamp": epoch_ms(transition.changed_at),
        "utc_time": utc_time(transition.changed_at),
        "url": settings.site_url,
    }
    if identity is not None:
        event["user"] = identity.as_user()
    if deal.company_id:
        company = {"id": deal.company_id}
        if company_name:
            company["name"] = company_name
        event["company"] = company
    since = transition.from_stage_since
    event["event_attributes"] = {
        "deal_id": deal.record_id,
        "deal_name": deal.name,
        "deal_stage": transition.to_stage,
        "deal_stage_id": transition.to_stage_id,
        "previous_stage": transition.from_stage,
        "previous_stage_id": transition.from_stage_id,
        "first_time_in_stage": transition.first_time_in_stage,
        "seconds_in_previous_stage": int((transition.changed_at - since).total_seconds()) if since else None,
        "deal_value": deal.value,
        "deal_currency": deal.currency,
        "deal_owner": owner_name,
        "deal_url": deal.web_url,
        "deal_created_at": format_time(deal.created_at) if deal.created_at else None,
        "stage_changed_at": format_time(transition.changed_at),
        "source": SOURCE,
    }
    if transition.deal.entry_id:
        event["event_attributes"]["entry_id"] = transition.deal.entry_id
    for key, value in (attributes or {}).items():
        event["event_attributes"].setdefault(key, value)  # the event's own keys win (checked at startup)
    return event


def with_identity(event: dict, identity: Identity) -> dict:
    """The same event, now with its user."""
    return {**event, "user": identity.as_user()}


def for_sending(event: dict, api_key: str) -> dict:
    """The event as Usermaven receives it: `api_key` first, as in the seed guide."""
    return {"api_key": api_key, **event}


def sending_texts(stored: Sequence[str], api_key: str) -> list[str]:
    """Stored events' JSON texts as Usermaven receives them, `api_key` first: for each, the text
    `json.dumps(for_sending(json.loads(text), api_key), ensure_ascii=False)` gives, without decoding the event
    and encoding it again. Each text is the ledger's, which `json.dumps(event, ensure_ascii=False)` wrote."""
    key = '{"api_key": ' + json.dumps(api_key, ensure_ascii=False)
    return [key + ("}" if text[1:] == "}" else ", " + text[1:]) for text in stored]


def for_display(event: dict) -> dict:
    """The event as `--dry-run` prints it: the API key shown as a placeholder, never its value."""
    return {"api_key": REDACTED, **event}
