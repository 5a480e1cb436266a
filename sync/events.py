"""Transitions → Usermaven events, and whose events they are: pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sync.models import Deal, Identity, Person, Transition, epoch_ms, format_time

SOURCE = "Attio CRM"
REDACTED = "<USERMAVEN_API_KEY>"


@dataclass(frozen=True)
class EventSettings:
    """The parts of every event that come from configuration."""

    event_type: str
    site_url: str


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
) -> dict:
    """The Usermaven event for one transition, without `api_key` (a secret, added only when sending).

    `user` is absent while the identity is unknown; the event is held until it is known.
    """
    event: dict = {
        "event_type": settings.event_type,
        "event_id": transition.event_id,
        "_timestamp": epoch_ms(transition.changed_at),
        "url": settings.site_url,
    }
    if identity is not None:
        event["user"] = identity.as_user()
    if deal.company_id:
        company = {"id": deal.company_id}
        if company_name:
            company["name"] = company_name
        event["company"] = company
    event["event_attributes"] = {
        "deal_id": deal.record_id,
        "deal_name": deal.name,
        "deal_stage": transition.to_stage,
        "previous_stage": transition.from_stage,
        "deal_value": deal.value,
        "deal_currency": deal.currency,
        "deal_owner": owner_name,
        "deal_url": deal.web_url,
        "stage_changed_at": format_time(transition.changed_at),
        "source": SOURCE,
    }
    if transition.deal.entry_id:
        event["event_attributes"]["entry_id"] = transition.deal.entry_id
    return event


def with_identity(event: dict, identity: Identity) -> dict:
    """The same event, now with its user."""
    return {**event, "user": identity.as_user()}


def for_sending(event: dict, api_key: str) -> dict:
    """The event as Usermaven receives it: `api_key` first, as in the seed guide."""
    return {"api_key": api_key, **event}


def for_display(event: dict) -> dict:
    """The event as `--dry-run` prints it: the API key shown as a placeholder, never its value."""
    return {"api_key": REDACTED, **event}
