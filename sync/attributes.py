"""Any deal attribute on the event (ATTIO_EVENT_ATTRIBUTES): which attributes the setting names, and their
current values in a plain form for each Attio attribute type. Pure functions over Attio's shapes."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sync.models import format_time, parse_time

# Attio attribute types this module renders, and how (README, "The event").
RENDERED_TYPES = (
    "text", "number", "currency", "select", "status", "checkbox", "date", "timestamp", "record-reference",
    "actor-reference", "domain", "email-address", "location", "rating",
)
_LOCATION_PARTS = ("line_1", "line_2", "line_3", "line_4", "locality", "region", "postcode", "country_code")


class AttributeProblem(Exception):
    """What the setting names that cannot go on the event, each with what to do about it."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class EventAttribute:
    """A deal attribute sent on every event under its slug: where its values are and how to render them."""

    slug: str
    type: str
    multiselect: bool = False
    on_list: bool = False  # an attribute of the list entry (ATTIO_LIST), not of the deal record

    @property
    def keys(self) -> tuple[str, ...]:
        """The `event_attributes` keys it fills: a currency also gets its code beside it."""
        return (self.slug, f"{self.slug}_currency") if self.type == "currency" else (self.slug,)


@dataclass(frozen=True)
class Names:
    """Names of what values point at: records by (object slug, record id), workspace members by id."""

    records: Mapping[tuple[str, str], str | None] = field(default_factory=dict)
    members: Mapping[str, str | None] = field(default_factory=dict)


def _matches(wanted: str, definition: dict) -> bool:
    return wanted in (definition.get("api_slug"), (definition.get("id") or {}).get("attribute_id"))


def select_attributes(
    wanted: Sequence[str],
    object_attributes: Sequence[dict],
    list_attributes: Sequence[dict] = (),
    reserved: Collection[str] = (),
    object_name: str = "the object",
    list_name: str | None = None,
) -> list[EventAttribute]:
    """The attributes `wanted` names (slugs or ids), from the definitions Attio lists for the object and, with a
    list, for the list. Raises AttributeProblem naming every one that does not exist, is ambiguous, has a
    type this module cannot render, or would overwrite another key of `event_attributes` (`reserved`)."""
    problems: list[str] = []
    chosen: list[EventAttribute] = []
    for name in wanted:
        on_object = [d for d in object_attributes if _matches(name, d)]
        on_list = [d for d in list_attributes if _matches(name, d)]
        if not on_object and not on_list:
            where = f"{object_name}" + (f" or of the list {list_name}" if list_name else "")
            problems.append(f"{name!r} is not an attribute of {where}")
            continue
        if on_object and on_list:
            problems.append(f"{name!r} is an attribute of both {object_name} and the list {list_name}: "
                            "name the one you mean by its attribute id")
            continue
        definition, from_list = (on_list[0], True) if on_list else (on_object[0], False)
        slug, kind = definition.get("api_slug") or name, definition.get("type") or "?"
        if kind not in RENDERED_TYPES:
            problems.append(f"{slug!r} is of type {kind!r}, which cannot be put on the event; the types that "
                            f"can: {', '.join(RENDERED_TYPES)}")
            continue
        attribute = EventAttribute(slug, kind, bool(definition.get("is_multiselect")), from_list)
        taken = {key for other in chosen for key in other.keys} | set(reserved)
        clash = [key for key in attribute.keys if key in taken]
        if clash:
            problems.append(f"{slug!r} would overwrite the event attribute {clash[0]!r}: leave it out")
            continue
        chosen.append(attribute)
    if problems:
        raise AttributeProblem(problems)
    return chosen


def active(values: Iterable[dict]) -> tuple[dict, ...]:
    """The current values of an attribute (Attio's `values` hold only those, but history reads do not)."""
    return tuple(v for v in values if v.get("active_until") is None)


def references(
    attributes: Iterable[EventAttribute], values: Mapping[str, Sequence[dict]]
) -> tuple[set[tuple[str, str]], set[str]]:
    """The records (object slug, record id) and workspace members whose names these values need."""
    records: set[tuple[str, str]] = set()
    members: set[str] = set()
    for attribute in attributes:
        for value in values.get(attribute.slug) or ():
            if attribute.type == "record-reference" and value.get("target_record_id"):
                records.add((value.get("target_object") or "", value["target_record_id"]))
            elif attribute.type == "actor-reference" and value.get("referenced_actor_type") == "workspace-member" \
                    and value.get("referenced_actor_id"):
                members.add(value["referenced_actor_id"])
    return records, members


def _title(item: object) -> str | None:
    # Record values carry the whole option or status; the spec also allows a bare id, which is shown as it is.
    if isinstance(item, dict):
        return item.get("title")
    return str(item) if item else None


def _plain(attribute: EventAttribute, value: dict, names: Names) -> object:
    kind = attribute.type
    if kind in ("text", "number", "rating", "checkbox", "date"):
        return value.get("value")
    if kind == "timestamp":
        return format_time(parse_time(value["value"])) if value.get("value") else None
    if kind == "select":
        return _title(value.get("option"))
    if kind == "status":
        return _title(value.get("status"))
    if kind == "record-reference":
        return names.records.get((value.get("target_object") or "", value.get("target_record_id") or ""))
    if kind == "actor-reference":
        if value.get("referenced_actor_type") != "workspace-member":
            return None  # an API token, the system or an app: no person to name
        return names.members.get(value.get("referenced_actor_id") or "")
    if kind == "domain":
        return value.get("domain")
    if kind == "email-address":
        return value.get("email_address")
    if kind == "location":
        return ", ".join(str(value[p]) for p in _LOCATION_PARTS if value.get(p)) or None
    raise AssertionError(f"unrendered type {kind!r}")  # select_attributes lets no other type through


def render(attribute: EventAttribute, values: Sequence[dict], names: Names) -> dict[str, object]:
    """The `event_attributes` entries of one attribute: its value in plain form under its slug (a list for a
    multi-value attribute, null or [] when empty), and for a currency the code beside it."""
    current = active(values)
    if attribute.type == "currency":
        money = current[-1] if current else {}
        return {attribute.slug: money.get("currency_value"), f"{attribute.slug}_currency": money.get("currency_code")}
    if attribute.multiselect:
        plain = [_plain(attribute, v, names) for v in current]
        return {attribute.slug: [p for p in plain if p is not None]}
    return {attribute.slug: _plain(attribute, current[-1], names) if current else None}


def render_all(
    attributes: Iterable[EventAttribute], values: Mapping[str, Sequence[dict]], names: Names
) -> dict[str, object]:
    """Every configured attribute rendered, in the order of the setting."""
    rendered: dict[str, object] = {}
    for attribute in attributes:
        rendered.update(render(attribute, values.get(attribute.slug) or (), names))
    return rendered
