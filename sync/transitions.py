"""Stage histories → transitions, and which of them are new: pure functions."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sync.models import DealRef, StageValue, Transition, format_time

# Namespace of every event id this project makes; changing it would resend everything.
EVENT_NAMESPACE = uuid.UUID("6f1c1d3e-5b0a-4c57-9a55-0d1c5e7a9b21")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes
_VARIANT = "89ab89ab89ab89ab"  # RFC 4122 variant: the top two bits of the 17th hex digit are 10


def event_id(deal: DealRef, value: StageValue) -> str:
    """The stable id of the transition into `value`: the same in every run, backfill and replay.

    Built from Attio's own ids (object or list, record or entry, attribute, status) and the time the
    value became active, so it does not depend on how the attribute or stage is named.
    """
    name = ":".join(
        ["attio-stage", value.parent_id, deal.key, value.attribute_id, value.status_id,
         format_time(value.active_from)]
    )
    return uuid5_text(name)


def uuid5_text(name: str) -> str:
    """`str(uuid.uuid5(EVENT_NAMESPACE, name))`, without building a UUID object (a hot path in backfills)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:32]}"


def _order(value: StageValue) -> tuple:
    # Values written at the same instant: the one that ended comes before the one that followed it, and the
    # current value (active_until null) last; the status id breaks what is left, so Attio's order never counts.
    return (value.active_from, value.active_until is None, value.active_until or value.active_from,
            value.status_id)


def in_order(history: Iterable[StageValue]) -> list[StageValue]:
    """A deal's stage values oldest first, deterministically: ties on `active_from` by `active_until`."""
    return sorted(history, key=_order)


def latest(history: Iterable[StageValue]) -> StageValue | None:
    """The value a deal is in now (the last of `in_order`), or None for an empty history."""
    ordered = in_order(history)
    return ordered[-1] if ordered else None


def transitions_from_history(deal: DealRef, history: Sequence[StageValue]) -> list[Transition]:
    """Every stage change in a deal's history, oldest first.

    The first value is the deal's first stage (`from_stage` None). A value that repeats the stage
    before it is a write, not a change, and gives no transition. Values with the same `active_from` are
    ordered by `in_order`, not by where Attio listed them. Each transition knows whether the deal had been
    in its stage before and since when it was in the stage it left: pass the full history, and select from
    the result.
    """
    result: list[Transition] = []
    previous: StageValue | None = None
    visited: set[str] = set()
    for value in in_order(history):
        if previous is not None and value.status_id == previous.status_id:
            continue
        result.append(
            Transition(
                event_id=event_id(deal, value),
                deal=deal,
                from_stage_id=previous.status_id if previous else None,
                from_stage=previous.title if previous else None,
                to_stage_id=value.status_id,
                to_stage=value.title,
                changed_at=value.active_from,
                first_time_in_stage=value.status_id not in visited,
                from_stage_since=previous.active_from if previous else None,
            )
        )
        visited.add(value.status_id)
        previous = value
    return result


def after(transitions: Iterable[Transition], moment: datetime | None, inclusive: bool = False) -> list[Transition]:
    """The transitions after `moment` (all of them when it is None)."""
    if moment is None:
        return list(transitions)
    if inclusive:
        return [t for t in transitions if t.changed_at >= moment]
    return [t for t in transitions if t.changed_at > moment]


def in_range(transitions: Iterable[Transition], since: datetime | None, until: datetime | None) -> list[Transition]:
    """The transitions whose time is in [since, until)."""
    return [
        t for t in transitions
        if (since is None or t.changed_at >= since) and (until is None or t.changed_at < until)
    ]


def behind(current: StageValue, history: Sequence[StageValue]) -> bool:
    """True when a history read ends before the current stage a query returned for the same deal: the read
    saw an older state of the deal, and its last value is not the deal's stage now."""
    newest = latest(history)
    return newest is None or newest.active_from < current.active_from
