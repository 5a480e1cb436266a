"""A loopback HTTP server that answers like Attio's REST API v2 over a :class:`Workspace`.

It serves the read endpoints the sync uses, in the shapes of Attio's OpenAPI spec, with Attio's rate limit
(a fixed one-second window answered by 429 and an HTTP-date ``Retry-After``) and injectable faults.
Admin endpoints under ``/_sandbox/`` let a test or benchmark in another process move deals and inject faults.
"""

from __future__ import annotations

import bisect
import collections
import email.utils
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sync.sandbox.server import Faults, LoopbackServer, Reply, Request, is_loopback, json_reply
from sync.sandbox.workspace import Collection, Entry, Item, Workspace, format_ts, item_json, parse_ts

# ---- Attio query language -------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter or sort Attio would reject with 400 ``filter_error``."""


class ValidationError(ValueError):
    """A body or parameter Attio would reject with 400 ``validation_type``."""


Predicate = Callable[[Item], bool]

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le,
}

# The field a shorthand filter (``{"name": "Acme"}``) and sorts compare, per attribute type.
_PRIMARY = {
    "text": "value",
    "number": "value",
    "status": "status",
    "personal-name": "full_name",
    "email-address": "email_address",
    "domain": "domain",
    "record-reference": "target_record_id",
    "currency": "currency_value",
    "actor-reference": "referenced_actor_id",
}
_PROPERTIES = {
    "status": {"status", "title", "status_id"},
    "personal-name": {"first_name", "last_name", "full_name"},
    "email-address": {"email_address", "original_email_address", "email_domain", "email_root_domain"},
    "domain": {"domain", "root_domain"},
    "record-reference": {"target_record_id", "target_object"},
    "currency": {"currency_value", "currency_code"},
    "actor-reference": {"referenced_actor_id", "referenced_actor_type"},
    "text": {"value"},
    "number": {"value"},
}


def _extract(slug: str, prop: str) -> Callable[[Item], list[Any]]:
    """The values of ``prop`` over an item's active values of ``slug`` (statuses match title or id)."""
    if prop in ("status", "title", "status_id"):
        def statuses(item: Item) -> list[Any]:
            found: list[Any] = []
            for value in item.current(slug):
                if value.status is not None:
                    if prop != "status_id":
                        found.append(value.status.title)
                    if prop != "title":
                        found.append(value.status.status_id)
            return found
        return statuses
    return lambda item: [v.fields.get(prop) for v in item.current(slug)]


def _operator_predicate(extract: Callable[[Item], list[Any]], ops: dict[str, Any], slug: str) -> Predicate:
    checks: list[Predicate] = []
    for op, operand in ops.items():
        if op == "$eq":
            checks.append(lambda item, t=operand: any(v == t for v in extract(item)))
        elif op == "$in":
            if not isinstance(operand, list):
                raise FilterError(f'"$in" on "{slug}" expects an array')
            targets = list(operand)
            checks.append(lambda item, t=targets: any(v in t for v in extract(item)))
        elif op in ("$contains", "$starts_with", "$ends_with"):
            if not isinstance(operand, str):
                raise FilterError(f'"{op}" on "{slug}" expects a string')
            method = {"$contains": str.__contains__, "$starts_with": str.startswith,
                      "$ends_with": str.endswith}[op]
            needle = operand.lower()
            checks.append(lambda item, m=method, n=needle: any(
                isinstance(v, str) and m(v.lower(), n) for v in extract(item)))
        elif op == "$not_empty":
            if not isinstance(operand, bool):
                raise FilterError(f'"$not_empty" on "{slug}" expects a boolean')
            checks.append(lambda item, want=operand: bool(extract(item)) == want)
        elif op in _COMPARISONS:
            if not isinstance(operand, int | float) or isinstance(operand, bool):
                raise FilterError(f'"{op}" on "{slug}" expects a number')
            compare = _COMPARISONS[op]
            checks.append(lambda item, c=compare, t=operand: any(
                isinstance(v, int | float) and c(v, t) for v in extract(item)))
        else:
            raise FilterError(f'Unknown filter operator "{op}" on "{slug}"')
    return _all(checks)


def _timestamp_bounds(slug: str, condition: Any) -> list[tuple[str, datetime]]:
    if not isinstance(condition, dict) or not condition:
        raise FilterError(f'"active_from" on "{slug}" expects an object of comparison operators')
    bounds = []
    for op, operand in condition.items():
        if op not in _COMPARISONS and op != "$eq":
            raise FilterError(f'Unknown operator "{op}" for "active_from" on "{slug}"')
        if not isinstance(operand, str):
            raise FilterError(f'"active_from" {op} on "{slug}" expects a timestamp string')
        try:
            bounds.append((op, parse_ts(operand)))
        except ValueError:
            raise FilterError(f'Invalid timestamp "{operand}" for "active_from" on "{slug}"') from None
    return bounds


def _active_from_predicate(slug: str, condition: Any) -> Predicate:
    bounds = _timestamp_bounds(slug, condition)

    def check(item: Item) -> bool:
        return any(
            all((operator.eq if op == "$eq" else _COMPARISONS[op])(value.active_from, at) for op, at in bounds)
            for value in item.current(slug)
        )
    return check


def _attribute_predicate(collection: Collection, key: str, condition: Any) -> Predicate:
    attribute = collection.attribute(key)
    if attribute is None:
        raise FilterError(f'Unknown attribute slug or ID "{key}" on {collection.kind} "{collection.api_slug}"')
    slug, kind = attribute.api_slug, attribute.type
    primary = _PRIMARY.get(kind)
    if not isinstance(condition, dict):
        if primary is None:
            raise FilterError(f'Attribute "{slug}" of type "{kind}" has no shorthand filter')
        return _operator_predicate(_extract(slug, primary), {"$eq": condition}, slug)
    checks: list[Predicate] = []
    operators = {k: v for k, v in condition.items() if k.startswith("$")}
    if operators:
        if primary is None:
            raise FilterError(f'Attribute "{slug}" of type "{kind}" cannot be filtered with operators')
        checks.append(_operator_predicate(_extract(slug, primary), operators, slug))
    for prop, sub in condition.items():
        if prop.startswith("$"):
            continue
        if prop == "active_from":
            checks.append(_active_from_predicate(slug, sub))
        elif prop in _PROPERTIES.get(kind, ()):
            ops = sub if isinstance(sub, dict) else {"$eq": sub}
            checks.append(_operator_predicate(_extract(slug, prop), ops, slug))
        else:
            raise FilterError(f'Unknown property "{prop}" for attribute "{slug}" of type "{kind}"')
    return _all(checks)


def _all(checks: list[Predicate]) -> Predicate:
    if len(checks) == 1:
        return checks[0]
    return lambda item: all(check(item) for check in checks)


def compile_filter(collection: Collection, expression: Any) -> Predicate:
    """Turn an Attio filter into a predicate over the collection's items; ``FilterError`` if invalid."""
    if not isinstance(expression, dict):
        raise FilterError("The filter must be an object")
    id_key = "record_id" if collection.kind == "object" else "entry_id"
    checks: list[Predicate] = []
    for key, condition in expression.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f'"{key}" expects a non-empty array of filters')
            parts = [compile_filter(collection, part) for part in condition]
            if key == "$and":
                checks.append(lambda item, p=parts: all(part(item) for part in p))
            else:
                checks.append(lambda item, p=parts: any(part(item) for part in p))
        elif key == "$not":
            inner = compile_filter(collection, condition)
            checks.append(lambda item, i=inner: not i(item))
        elif key.startswith("$"):
            raise FilterError(f'Unknown filter operator "{key}"')
        elif key == id_key or (collection.kind == "list" and key == "parent_record_id"):
            getter = (lambda item: [item.id]) if key == id_key else (
                lambda item: [item.parent_record_id] if isinstance(item, Entry) else [])
            ops = condition if isinstance(condition, dict) else {"$eq": condition}
            for op in ops:
                if op not in ("$eq", "$in"):
                    raise FilterError(f'Operator "{op}" is not supported on "{key}"')
            checks.append(_operator_predicate(getter, ops, key))
        else:
            checks.append(_attribute_predicate(collection, key, condition))
    return _all(checks) if checks else (lambda item: True)


def _candidates(collection: Collection, expression: dict[str, Any]) -> tuple[set[str] | None, bool]:
    """Ids that can match, from the indexes (None when no index applies), and whether they match exactly,
    i.e. the whole filter was answered by the indexes and the predicate need not run."""
    best: set[str] | None = None
    exact = True
    id_key = "record_id" if collection.kind == "object" else "entry_id"
    for key, condition in expression.items():
        found: set[str] | None = None
        part_exact = False
        if key == "$and" and isinstance(condition, list):
            part_exact = True
            for part in condition:
                sub, sub_exact = _candidates(collection, part) if isinstance(part, dict) else (None, False)
                if sub is not None:
                    found = sub if found is None else found & sub
                part_exact = part_exact and sub_exact
        elif key == id_key:
            if isinstance(condition, str):
                found, part_exact = {condition}, True
            elif isinstance(condition, dict) and set(condition) == {"$in"} and isinstance(condition["$in"], list):
                found, part_exact = {i for i in condition["$in"] if isinstance(i, str)}, True
        elif key == collection.stage_slug and isinstance(condition, dict) and set(condition) == {"active_from"}:
            found = _stage_range(collection, _timestamp_bounds(key, condition["active_from"]))
            part_exact = True
        if found is not None:
            best = found if best is None else best & found
        exact = exact and part_exact
    return best, exact and best is not None


def _stage_range(collection: Collection, bounds: list[tuple[str, datetime]]) -> set[str]:
    index = collection.stage_index
    low, high = 0, len(index)
    for op, at in bounds:
        # Keys are (active_from, id): bisecting on (at,) lands before every id at that instant.
        if op == "$gt":
            low = max(low, _bisect_after(index, at))
        elif op in ("$gte", "$eq"):
            low = max(low, _bisect_before(index, at))
        if op == "$lt":
            high = min(high, _bisect_before(index, at))
        elif op in ("$lte", "$eq"):
            high = min(high, _bisect_after(index, at))
    return {item_id for _, item_id in index[low:high]}


def _bisect_before(index: list[tuple[datetime, str]], at: datetime) -> int:
    return bisect.bisect_left(index, (at,))


def _bisect_after(index: list[tuple[datetime, str]], at: datetime) -> int:
    return bisect.bisect_left(index, (at, "\U0010ffff"))


def _sort_key(collection: Collection, spec: Any) -> tuple[Callable[[Item], Any], bool]:
    if not isinstance(spec, dict):
        raise FilterError("Each sort must be an object")
    direction = spec.get("direction")
    if direction not in ("asc", "desc"):
        raise FilterError('A sort "direction" must be "asc" or "desc"')
    name = spec.get("attribute")
    if not isinstance(name, str):
        raise FilterError('A sort needs an "attribute" (sorting by "path" is not supported by the sandbox)')
    descending = direction == "desc"
    if name == "created_at":
        return (lambda item: item.created_at), descending
    if name in ("record_id", "entry_id"):
        return (lambda item: item.id), descending
    attribute = collection.attribute(name)
    if attribute is None:
        raise FilterError(f'Unknown sort attribute "{name}"')
    slug, field_name = attribute.api_slug, spec.get("field")
    if attribute.type == "status":
        if field_name == "active_from":
            def by_time(item: Item) -> Any:
                current = item.current(slug)
                return (False, current[-1].active_from) if current else (True, None)
            return by_time, descending
        order = {s.status_id: i for i, s in enumerate(attribute.statuses)}

        def by_status(item: Item) -> Any:
            current = item.current(slug)
            position = order.get(current[-1].status.status_id) if current and current[-1].status else None
            return (position is None, position)
        return by_status, descending
    prop = field_name or _PRIMARY.get(attribute.type)
    if prop is None:
        raise FilterError(f'Attribute "{name}" cannot be sorted')

    def by_value(item: Item) -> Any:
        current = item.current(slug)
        value = current[0].fields.get(prop) if current else None
        return (value is None, value)
    return by_value, descending


def _paging(body: dict[str, Any]) -> tuple[int, int]:
    limit, offset = body.get("limit", 500), body.get("offset", 0)
    for name, number in (("limit", limit), ("offset", offset)):
        if isinstance(number, bool) or not isinstance(number, int | float) or number != int(number) or number < 0:
            raise ValidationError(f'Body payload validation error: "{name}" must be a non-negative integer')
    return int(limit), int(offset)


def run_query(collection: Collection, body: Any) -> list[Item]:
    """Filter, sort and page a collection as ``records/query`` and ``entries/query`` do.

    Default order (and ``created_at`` asc) is (created_at, id); any sort ties break on the id, ascending.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValidationError("Body payload validation error: the body must be an object")
    limit, offset = _paging(body)
    expression = body.get("filter") or {}
    predicate = compile_filter(collection, expression)
    candidates, exact = _candidates(collection, expression)
    check = None if exact else predicate
    sorts = body.get("sorts") or []
    if not isinstance(sorts, list):
        raise FilterError('"sorts" must be an array')
    keys = [_sort_key(collection, spec) for spec in sorts]
    items = collection.items
    if candidates is not None and len(candidates) < len(items) // 8:
        source: Iterable[Item] = sorted(
            (items[i] for i in candidates if i in items), key=lambda item: (item.created_at, item.id)
        )
        candidates = None
    else:
        source = collection.ordered()
    default_order = all(
        spec.get("attribute") == "created_at" and spec.get("direction") == "asc" for spec in sorts
    )
    # In the default order a page can stop early: that keeps deep full scans over 10k deals cheap.
    wanted = offset + limit if default_order else None
    matched: list[Item] = []
    for item in source:
        if candidates is not None and item.id not in candidates:
            continue
        if check is not None and not check(item):
            continue
        matched.append(item)
        if wanted is not None and len(matched) >= wanted:
            break
    if not default_order:
        matched.sort(key=lambda item: item.id)
        for key, descending in reversed(keys):
            matched.sort(key=key, reverse=descending)
    return matched[offset: offset + limit]


# ---- the Attio sandbox ----------------------------------------------------------------------------------------

_ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (method, kind, re.compile(pattern))
    for method, kind, pattern in (
        ("GET", "self", r"^/v2/self$"),
        ("GET", "workspace_members", r"^/v2/workspace_members$"),
        ("GET", "object", r"^/v2/(?P<target>objects)/(?P<identifier>[^/]+)$"),
        ("GET", "list", r"^/v2/(?P<target>lists)/(?P<identifier>[^/]+)$"),
        ("GET", "attributes", r"^/v2/(?P<target>objects|lists)/(?P<identifier>[^/]+)/attributes$"),
        ("GET", "statuses",
         r"^/v2/(?P<target>objects|lists)/(?P<identifier>[^/]+)/attributes/(?P<attribute>[^/]+)/statuses$"),
        ("POST", "records_query", r"^/v2/(?P<target>objects)/(?P<identifier>[^/]+)/records/query$"),
        ("GET", "record", r"^/v2/(?P<target>objects)/(?P<identifier>[^/]+)/records/(?P<item_id>[^/]+)$"),
        ("GET", "record_entries",
         r"^/v2/(?P<target>objects)/(?P<identifier>[^/]+)/records/(?P<item_id>[^/]+)/entries$"),
        ("GET", "record_values",
         r"^/v2/(?P<target>objects)/(?P<identifier>[^/]+)/records/(?P<item_id>[^/]+)"
         r"/attributes/(?P<attribute>[^/]+)/values$"),
        ("POST", "entries_query", r"^/v2/(?P<target>lists)/(?P<identifier>[^/]+)/entries/query$"),
        ("GET", "entry", r"^/v2/(?P<target>lists)/(?P<identifier>[^/]+)/entries/(?P<item_id>[^/]+)$"),
        ("GET", "entry_values",
         r"^/v2/(?P<target>lists)/(?P<identifier>[^/]+)/entries/(?P<item_id>[^/]+)"
         r"/attributes/(?P<attribute>[^/]+)/values$"),
    )
)
ENDPOINT_KINDS = tuple(kind for _, kind, _ in _ROUTES) + ("not_found",)


def attio_error(status: int, type_: str, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An error in Attio's shape: ``{"status_code", "type", "code", "message"}``."""
    return json_reply(status, {"status_code": status, "type": type_, "code": code, "message": message}, headers)


def _not_found(message: str) -> Reply:
    return attio_error(404, "invalid_request_error", "not_found", message)


class AttioSandbox(LoopbackServer):
    """Attio's REST API v2 (the read endpoints the sync uses) over a :class:`Workspace`, on loopback."""

    def __init__(
        self,
        workspace: Workspace,
        token: str = "sandbox-attio-token",
        rate_limit: int | None = 100,
        latency: float = 0.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port, latency, faults)
        self.workspace = workspace
        self.token = token
        self.rate_limit = rate_limit
        self._stats_lock = threading.Lock()
        self._window = (0, 0)
        self.reset_stats()

    def __enter__(self) -> AttioSandbox:
        self.start()
        return self

    def fail_next(self, n: int = 1, kind: str = "status", status: int = 503) -> int:
        """Inject exactly ``n`` faults into the next ``n`` API requests; return how many are pending.

        ``kind``: ``status`` (answer ``status``), ``timeout`` (answer after ``faults.timeout_seconds``,
        30 s unless configured), ``drop`` (close the socket) or ``malformed`` (200, truncated JSON).
        """
        return self._faults.queue(n, kind, status)

    # ---- stats ------------------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._stats_lock:
            self._requests = 0
            self._by_kind: collections.Counter[str] = collections.Counter()
            self._rate_limited = 0
            self._faults_injected = 0
            self._unauthorized = 0

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``requests``, ``by_kind`` (endpoint kind -> count), ``rate_limited``, ``faults``,
        ``unauthorized``. Admin requests are not counted."""
        with self._stats_lock:
            return {
                "requests": self._requests,
                "by_kind": dict(self._by_kind),
                "rate_limited": self._rate_limited,
                "faults": self._faults_injected,
                "unauthorized": self._unauthorized,
            }

    # ---- request pipeline ---------------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Reply:
        """Answer one request: admin, or rate limit -> faults -> auth -> endpoint."""
        if request.path.startswith("/_sandbox/"):
            return self._admin(request)
        kind, params = "not_found", {}
        for method, route_kind, pattern in _ROUTES:
            match = pattern.match(request.path)
            if match and method == request.method:
                kind, params = route_kind, match.groupdict()
                break
        with self._stats_lock:
            self._requests += 1
            self._by_kind[kind] += 1
        limited = self._rate_limited_reply()
        if limited is not None:
            return limited
        fault = self._faults.draw()
        if fault is not None:
            with self._stats_lock:
                self._faults_injected += 1
        return self._apply_fault(fault, lambda: self._answer(request, kind, params), self._fault_reply)

    def _rate_limited_reply(self) -> Reply | None:
        if self.rate_limit is None:
            return None
        second = int(time.time())
        with self._stats_lock:
            window, count = self._window
            count = count + 1 if window == second else 1
            self._window = (second, count)
            if count <= self.rate_limit:
                return None
            self._rate_limited += 1
        retry_after = email.utils.formatdate(second + 1, usegmt=True)
        return attio_error(
            429, "rate_limit_error", "rate_limit_exceeded",
            "Rate limit exceeded, please try again later.", {"Retry-After": retry_after},
        )

    @staticmethod
    def _fault_reply(status: int) -> Reply:
        if status >= 502:
            # Gateways answer with HTML, not Attio's JSON: clients must not trust error bodies.
            page = f"<html><body><h1>{status} Service Unavailable</h1></body></html>".encode()
            return Reply(status, page, content_type="text/html")
        return attio_error(status, "api_error", "internal_server_error", "An unexpected error occurred.")

    def _answer(self, request: Request, kind: str, params: dict[str, str]) -> Reply:
        authorization = request.headers.get("Authorization") or ""
        if authorization != f"Bearer {self.token}":
            with self._stats_lock:
                self._unauthorized += 1
            # Attio's 401 body is not in the spec; this mirrors its 403 (auth_error) shape.
            return attio_error(401, "auth_error", "invalid_token", "The access token provided is invalid.")
        if kind == "not_found":
            return _not_found(f"No route for {request.method} {request.path}")
        with self.workspace.lock:
            try:
                return getattr(self, f"_{kind}")(request, **params)
            except FilterError as error:
                return attio_error(400, "invalid_request_error", "filter_error", str(error))
            except ValidationError as error:
                return attio_error(400, "invalid_request_error", "validation_type", str(error))

    # ---- endpoints ----------------------------------------------------------------------------------------

    def _collection(self, target: str, identifier: str) -> Collection | Reply:
        found = self.workspace.collection(target, identifier)
        if found is None:
            noun = "Object" if target == "objects" else "List"
            return _not_found(f'{noun} with slug/ID "{identifier}" not found.')
        return found

    def _self(self, request: Request) -> Reply:
        ws = self.workspace
        return json_reply(200, {
            "active": True,
            "scope": "record_permission:read object_configuration:read list_entry:read "
                     "list_configuration:read user_management:read",
            "client_id": ws.token_id,
            "token_type": "Bearer",
            "exp": None,
            "iat": int(ws.start.timestamp()),
            "sub": ws.token_id,
            "aud": ws.token_id,
            "iss": "attio.com",
            "authorized_by_workspace_member_id": ws.members[0].member_id,
            "workspace_id": ws.workspace_id,
            "workspace_name": ws.workspace_name,
            "workspace_slug": ws.workspace_slug,
            "workspace_logo_url": None,
        })

    def _workspace_members(self, request: Request) -> Reply:
        ws = self.workspace
        return json_reply(200, {"data": [m.to_api(ws.workspace_id) for m in ws.members]})

    def _object(self, request: Request, target: str, identifier: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        return json_reply(200, {"data": {
            "id": {"workspace_id": self.workspace.workspace_id, "object_id": found.id},
            "api_slug": found.api_slug,
            "singular_noun": found.singular,
            "plural_noun": found.name,
            "created_at": format_ts(found.created_at),
        }})

    def _list(self, request: Request, target: str, identifier: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        ws = self.workspace
        return json_reply(200, {"data": {
            "id": {"workspace_id": ws.workspace_id, "list_id": found.id},
            "api_slug": found.api_slug,
            "name": found.name,
            "parent_object": [found.parent_object or "deals"],
            "workspace_access": "read-and-write",
            "workspace_member_access": [],
            "created_by_actor": {"type": "workspace-member", "id": ws.members[0].member_id},
            "created_at": format_ts(found.created_at),
        }})

    def _attributes(self, request: Request, target: str, identifier: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        limit, offset = _query_paging(request)
        ws = self.workspace
        data = [a.to_api(ws.workspace_id, found.id) for a in found.attributes.values()]
        return json_reply(200, {"data": data[offset: None if limit is None else offset + limit]})

    def _statuses(self, request: Request, target: str, identifier: str, attribute: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        definition = found.attribute(attribute)
        if definition is None or definition.type != "status":
            return _not_found(f'Status attribute with slug/ID "{attribute}" not found.')
        show_archived = _query_bool(request, "show_archived")
        statuses = [s.to_api() for s in definition.statuses if show_archived or not s.is_archived]
        return json_reply(200, {"data": statuses})

    def _query(self, request: Request, target: str, identifier: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        try:
            body = request.json()
        except ValueError:
            raise ValidationError("Body payload validation error: the body is not valid JSON") from None
        items = run_query(found, body)
        ws = self.workspace
        return Reply(200, b'{"data":[' + b",".join(item_json(found, ws, item) for item in items) + b"]}")

    _records_query = _query
    _entries_query = _query

    def _item(self, request: Request, target: str, identifier: str, item_id: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        item = found.items.get(item_id)
        if item is None:
            noun = "Record" if target == "objects" else "Entry"
            return _not_found(f'{noun} with ID "{item_id}" not found.')
        return Reply(200, b'{"data":' + item_json(found, self.workspace, item) + b"}")

    _record = _item
    _entry = _item

    def _record_entries(self, request: Request, target: str, identifier: str, item_id: str) -> Reply:
        """The list entries whose parent is this record (`GET .../records/{record_id}/entries`)."""
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        if item_id not in found.items:
            return _not_found(f'Record with ID "{item_id}" not found.')
        entries = [
            {"list_id": collection.id, "list_api_slug": collection.api_slug, "entry_id": entry.entry_id,
             "created_at": format_ts(entry.created_at)}
            for collection in self.workspace.lists.values()
            for entry in collection.ordered()
            if entry.parent_record_id == item_id
        ]
        limit, offset = _query_paging(request)
        page = entries[offset:] if limit is None else entries[offset:offset + limit]
        return json_reply(200, {"data": page})

    def _values(self, request: Request, target: str, identifier: str, item_id: str, attribute: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        show_historic = _query_bool(request, "show_historic")
        limit, offset = _query_paging(request)
        item = found.items.get(item_id)
        if item is None:
            noun = "Record" if target == "objects" else "Entry"
            return _not_found(f'{noun} with ID "{item_id}" not found.')
        definition = found.attribute(attribute)
        if definition is None:
            return _not_found(f'Attribute with slug/ID "{attribute}" not found.')
        values = item.values.get(definition.api_slug, [])
        if not show_historic:
            values = [v for v in values if v.active_until is None]
        values = sorted(values, key=lambda v: v.active_from)
        window = values[offset: None if limit is None else offset + limit]
        return json_reply(200, {"data": [v.to_api() for v in window]})

    _record_values = _values
    _entry_values = _values

    # ---- admin ------------------------------------------------------------------------------------------

    def _admin(self, request: Request) -> Reply:
        if not is_loopback(request.client_host):
            return json_reply(403, {"error": "admin endpoints answer loopback clients only"})
        try:
            body = request.json() or {}
        except ValueError:
            return json_reply(400, {"error": "invalid JSON"})
        ws = self.workspace
        route = (request.method, request.path)
        try:
            if route == ("GET", "/_sandbox/stats"):
                return json_reply(200, self.stats)
            if route == ("POST", "/_sandbox/reset_stats"):
                self.reset_stats()
                return json_reply(200, self.stats)
            if route == ("GET", "/_sandbox/workspace"):
                return json_reply(200, ws.to_json_summary())
            if route == ("POST", "/_sandbox/move"):
                at = parse_ts(body["at"]) if body.get("at") else None
                stage = _required(body, "stage")
                if "entry_id" in body:
                    return json_reply(200, {"data": ws.move_entry(body["entry_id"], stage, at)})
                return json_reply(200, {"data": ws.move_deal(_required(body, "record_id"), stage, at)})
            if route == ("POST", "/_sandbox/create_deal"):
                value = body.get("value")
                if value is not None and "currency_code" in body:
                    value = (value, body["currency_code"])
                record_id = ws.create_deal(
                    _required(body, "name"), _required(body, "stage"), people=body.get("people", ()),
                    company=body.get("company"), value=value, owner=body.get("owner"),
                )
                return json_reply(200, {"record_id": record_id})
            if route == ("POST", "/_sandbox/fail_next"):
                pending = self.fail_next(int(body.get("n", 1)), body.get("kind", "status"),
                                         int(body.get("status", 503)))
                return json_reply(200, {"pending": pending})
            if route == ("GET", "/_sandbox/transitions"):
                since, until = request.param("since"), request.param("until")
                found = ws.expected_transitions(
                    parse_ts(since) if since else None, parse_ts(until) if until else None
                )
                return json_reply(200, {"data": [_transition_json(t) for t in found]})
        except KeyError as error:
            return json_reply(404, {"error": f"not found: {error}"})
        except (TypeError, ValueError) as error:
            return json_reply(400, {"error": str(error)})
        return json_reply(404, {"error": f"no admin route {request.method} {request.path}"})


def _required(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise ValueError(f'missing "{name}"')
    return body[name]


def _transition_json(transition: Iterable[Any]) -> dict[str, Any]:
    record_id, before, after, at = transition
    return {"record_id": record_id, "from_status_id": before, "to_status_id": after, "active_from": format_ts(at)}


def _query_bool(request: Request, name: str) -> bool:
    raw = request.param(name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise ValidationError(f'Query parameter "{name}" must be "true" or "false"')
    return raw.lower() == "true"


def _query_paging(request: Request) -> tuple[int | None, int]:
    numbers: list[int | None] = []
    for name in ("limit", "offset"):
        raw = request.param(name)
        if raw is None:
            numbers.append(None)
            continue
        if not raw.isdigit():
            raise ValidationError(f'Query parameter "{name}" must be a non-negative integer')
        numbers.append(int(raw))
    return numbers[0], numbers[1] or 0


__all__ = [
    "AttioSandbox",
    "Faults",
    "FilterError",
    "LoopbackServer",
    "Reply",
    "Request",
    "compile_filter",
    "is_loopback",
    "json_reply",
    "run_query",
]
