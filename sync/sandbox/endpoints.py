"""The Attio REST API v2 endpoints the sync reads, answered from a :class:`Workspace` in the shapes of Attio's
OpenAPI spec, and what a test can observe or steer about them: the query bodies received, the history reads
per record or entry, refused history reads, a list that refuses the ``active_from`` filter."""

from __future__ import annotations

import collections
import threading
from typing import Any, NamedTuple

from sync.sandbox.query import FilterError, ValidationError, run_query
from sync.sandbox.records import Collection, Entry, format_ts, item_json
from sync.sandbox.server import Reply, Request, json_reply
from sync.sandbox.workspace import Workspace


def attio_error(status: int, type_: str, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An error in Attio's shape: ``{"status_code", "type", "code", "message"}``."""
    return json_reply(status, {"status_code": status, "type": type_, "code": code, "message": message}, headers)


def not_found(message: str) -> Reply:
    """Attio's 404."""
    return attio_error(404, "invalid_request_error", "not_found", message)


class Query(NamedTuple):
    """A ``records/query`` or ``entries/query`` request as received: ``target`` is ``objects`` or ``lists``,
    ``identifier`` the slug or id in the path, ``body`` the JSON body."""

    target: str
    identifier: str
    body: dict[str, Any]


class AttioEndpoints:
    """Answers each Attio endpoint (``handle``) over a workspace; the caller holds the workspace lock."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        #: False: ``entries/query`` refuses an ``active_from`` filter with 400 ``filter_error``, as Attio may
        #: (it documents the filter for object attributes only).
        self.list_active_from = True
        self._lock = threading.Lock()
        self._history_faults: dict[str, collections.deque[int]] = {}
        self._delete_on_read: set[str] = set()
        self._stale_reads: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the queries and history reads seen so far."""
        with self._lock:
            self._queries: list[Query] = []
            self._history_reads: collections.Counter[str] = collections.Counter()

    @property
    def queries(self) -> list[Query]:
        """Every query received, in order (those a fault or the rate limit answered first are not here)."""
        with self._lock:
            return list(self._queries)

    @property
    def history_reads(self) -> collections.Counter[str]:
        """Values-endpoint requests per record or entry id, refused ones included."""
        with self._lock:
            return collections.Counter(self._history_reads)

    def fail_history(self, item_id: str, n: int = 1, status: int = 400) -> None:
        """Answer the next ``n`` value reads of one record or entry with ``status`` in Attio's error shape."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._history_faults.setdefault(item_id, collections.deque()).extend([status] * n)

    def stale_history(self, item_id: str, n: int = 1) -> None:
        """Answer the next ``n`` value reads of one record or entry without its newest value: a read behind a
        recent write, as a replica that has not caught up would serve it (the record itself is up to date)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._stale_reads[item_id] = self._stale_reads.get(item_id, 0) + n

    def delete_before_history(self, record_id: str) -> None:
        """Delete a deal (with its entries) when its history is next read: a deal deleted in Attio after a
        query listed it and before the sync read its history, which Attio then answers with 404."""
        with self._lock:
            self._delete_on_read.add(record_id)

    def handle(self, request: Request, kind: str, params: dict[str, str]) -> Reply:
        """Answer one API request of a known kind, Attio's 400s included."""
        try:
            handler = getattr(self, f"_{kind}")
            reply: Reply = handler(request, **params)
            return reply
        except FilterError as error:
            return attio_error(400, "invalid_request_error", "filter_error", str(error))
        except ValidationError as error:
            return attio_error(400, "invalid_request_error", "validation_type", str(error))


    def _collection(self, target: str, identifier: str) -> Collection | Reply:
        found = self.workspace.collection(target, identifier)
        if found is None:
            noun = "Object" if target == "objects" else "List"
            return not_found(f'{noun} with slug/ID "{identifier}" not found.')
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
            return not_found(f'Status attribute with slug/ID "{attribute}" not found.')
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
        if not isinstance(body, dict | None):
            raise ValidationError("Body payload validation error: the body must be an object")
        with self._lock:
            self._queries.append(Query(target, identifier, dict(body or {})))
        if target == "lists" and not self.list_active_from and _mentions((body or {}).get("filter"), "active_from"):
            raise FilterError('Unknown filter operator "active_from".')
        items = run_query(found, body)
        ws = self.workspace
        rendered = (item_json(found, ws.workspace_id, ws.workspace_slug, item) for item in items)
        return Reply(200, b'{"data":[' + b",".join(rendered) + b"]}")

    _records_query = _query
    _entries_query = _query

    def _item(self, request: Request, target: str, identifier: str, item_id: str) -> Reply:
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        item = found.items.get(item_id)
        if item is None:
            noun = "Record" if target == "objects" else "Entry"
            return not_found(f'{noun} with ID "{item_id}" not found.')
        ws = self.workspace
        return Reply(200, b'{"data":' + item_json(found, ws.workspace_id, ws.workspace_slug, item) + b"}")

    _record = _item
    _entry = _item

    def _record_entries(self, request: Request, target: str, identifier: str, item_id: str) -> Reply:
        """The list entries whose parent is this record (`GET .../records/{record_id}/entries`)."""
        found = self._collection(target, identifier)
        if isinstance(found, Reply):
            return found
        if item_id not in found.items:
            return not_found(f'Record with ID "{item_id}" not found.')
        entries = [
            {"list_id": collection.id, "list_api_slug": collection.api_slug, "entry_id": entry.entry_id,
             "created_at": format_ts(entry.created_at)}
            for collection in self.workspace.lists.values()
            for entry in collection.ordered()
            if isinstance(entry, Entry) and entry.parent_record_id == item_id
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
        with self._lock:
            self._history_reads[item_id] += 1
            pending = self._history_faults.get(item_id)
            status = pending.popleft() if pending else None
            delete = item_id in self._delete_on_read
            self._delete_on_read.discard(item_id)
            stale = self._stale_reads.get(item_id, 0) > 0
            if stale:
                self._stale_reads[item_id] -= 1
        if delete and item_id in self.workspace.deals.items:
            self.workspace.delete_deal(item_id)
        if status is not None:
            return attio_error(status, "invalid_request_error", "validation_type",
                               "Simulated refusal of this read (sandbox fault injected by a test).")
        item = found.items.get(item_id)
        if item is None:
            noun = "Record" if target == "objects" else "Entry"
            return not_found(f'{noun} with ID "{item_id}" not found.')
        definition = found.attribute(attribute)
        if definition is None:
            return not_found(f'Attribute with slug/ID "{attribute}" not found.')
        values = item.values.get(definition.api_slug, [])
        if not show_historic:
            values = [v for v in values if v.active_until is None]
        values = sorted(values, key=lambda v: v.active_from)
        if stale:
            values = values[:-1]
        window = values[offset: None if limit is None else offset + limit]
        return json_reply(200, {"data": [v.to_api() for v in window]})

    _record_values = _values
    _entry_values = _values


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


def _mentions(expression: Any, key: str) -> bool:
    """Whether a filter uses ``key`` anywhere in it."""
    if isinstance(expression, dict):
        return any(k == key or _mentions(v, key) for k, v in expression.items())
    if isinstance(expression, list):
        return any(_mentions(part, key) for part in expression)
    return False
