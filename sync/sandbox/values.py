"""The values of each attribute type, built as Attio writes them and rendered (``Value.to_api``) in the shapes
of its OpenAPI spec (``output-value``): the constructors the generator and the writes use, and
:func:`typed_value`, which turns a plain Python value into the value of a given attribute."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sync.sandbox.records import Attribute, Value, format_ts

LOCATION_PARTS = (
    "line_1", "line_2", "line_3", "line_4", "locality", "region", "postcode", "country_code", "latitude", "longitude",
)
# Types whose value is a bare ``value`` field, with the Python types it may be given as.
_SCALARS: dict[str, tuple[type, ...]] = {"text": (str,), "number": (int, float), "rating": (int,), "checkbox": (bool,)}


def plain_value(attribute_type: str, moment: datetime, actor: dict[str, Any], **fields: Any) -> Value:
    """A current value of any type whose fields are given as they render."""
    return Value(attribute_type, moment, None, actor, fields)


def owner_value(moment: datetime, actor: dict[str, Any], member_id: str) -> Value:
    """An ``actor-reference`` value naming a workspace member."""
    return plain_value(
        "actor-reference", moment, actor,
        referenced_actor_type="workspace-member", referenced_actor_id=member_id,
    )


def currency_value(moment: datetime, actor: dict[str, Any], amount: float, code: str | None) -> Value:
    """A ``currency`` value (``code`` None: no currency)."""
    return plain_value("currency", moment, actor, currency_value=amount, currency_code=code)


def reference_value(moment: datetime, actor: dict[str, Any], target_object: str, record_id: str) -> Value:
    """A ``record-reference`` value pointing at a record of ``target_object``."""
    return plain_value("record-reference", moment, actor, target_object=target_object, target_record_id=record_id)


def personal_name_value(moment: datetime, actor: dict[str, Any], first: str, last: str) -> Value:
    """A ``personal-name`` value."""
    full = f"{first} {last}".strip()
    return plain_value("personal-name", moment, actor, first_name=first, last_name=last, full_name=full)


def _root(domain: str) -> str:
    return ".".join(domain.split(".")[-2:]) if domain else ""


def email_value(moment: datetime, actor: dict[str, Any], email: str) -> Value:
    """An ``email-address`` value, normalised as Attio does (lower case, domains split out)."""
    local, _, domain = email.partition("@")
    return plain_value(
        "email-address",
        moment,
        actor,
        original_email_address=email,
        email_address=email.lower(),
        email_domain=domain.lower(),
        email_root_domain=_root(domain).lower(),
        email_local_specifier=local.split("+")[0].lower(),
    )


def domain_value(moment: datetime, actor: dict[str, Any], domain: str) -> Value:
    """A ``domain`` value with its root domain split out."""
    return plain_value("domain", moment, actor, domain=domain.lower(), root_domain=_root(domain).lower())


def location_value(moment: datetime, actor: dict[str, Any], parts: Mapping[str, str | None]) -> Value:
    """A ``location`` value: every part is present, null when not given."""
    unknown = set(parts) - set(LOCATION_PARTS)
    if unknown:
        raise ValueError(f"not parts of a location: {', '.join(sorted(unknown))}")
    return plain_value("location", moment, actor, **{part: parts.get(part) for part in LOCATION_PARTS})


def typed_value(
    attribute: Attribute, raw: Any, moment: datetime, actor: dict[str, Any], target_object: str | None = None
) -> Value:
    """The value of ``attribute`` that ``raw`` stands for, in the shape of the attribute's type.

    ``raw`` is: a str, number, int or bool (text, number, rating, checkbox); a ``date`` or ``YYYY-MM-DD``
    (date); an aware ``datetime`` (timestamp); an amount or ``(amount, currency code)`` (currency); an option
    or status title or id (select, status); a record id of ``target_object`` (record-reference); a workspace
    member id (actor-reference); a domain or an email address; a mapping of location parts (location).
    """
    kind = attribute.type
    if kind in _SCALARS:
        if not isinstance(raw, _SCALARS[kind]) or (kind != "checkbox" and isinstance(raw, bool)):
            raise TypeError(f"a {kind} value cannot be {raw!r}")
        return plain_value(kind, moment, actor, value=raw)
    if kind == "date":
        return plain_value(kind, moment, actor, value=date.fromisoformat(str(raw)).isoformat())
    if kind == "timestamp":
        if not isinstance(raw, datetime) or raw.tzinfo is None:
            raise TypeError("a timestamp value is an aware datetime")
        return plain_value(kind, moment, actor, value=format_ts(raw))
    if kind == "currency":
        amount, code = raw if isinstance(raw, tuple) else (raw, attribute.default_currency_code)
        return currency_value(moment, actor, amount, code)
    if kind == "select":
        return Value(kind, moment, None, actor, option=attribute.option(raw))
    if kind == "status":
        return Value(kind, moment, None, actor, status=attribute.status(raw))
    if kind == "record-reference":
        if target_object is None:
            raise ValueError("a record-reference value needs the object of the record it points at")
        return reference_value(moment, actor, target_object, raw)
    if kind == "actor-reference":
        return owner_value(moment, actor, raw)
    if kind == "domain":
        return domain_value(moment, actor, raw)
    if kind == "email-address":
        return email_value(moment, actor, raw)
    if kind == "location":
        return location_value(moment, actor, raw)
    raise ValueError(f"the sandbox writes no {kind!r} values")
