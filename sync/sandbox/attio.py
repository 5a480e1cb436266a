"""A loopback HTTP server that answers like Attio's REST API v2 over a :class:`Workspace`.

It serves the read endpoints the sync uses, in the shapes of Attio's OpenAPI spec, with Attio's rate limit
(a fixed one-second window answered by 429 and an HTTP-date ``Retry-After``) and injectable faults.
Admin endpoints under ``/_sandbox/`` let a test or benchmark in another process move deals and inject faults.
"""

from __future__ import annotations

import collections
import email.utils
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from sync.sandbox.endpoints import AttioEndpoints, Query, attio_error, not_found
from sync.sandbox.records import format_ts, parse_ts
from sync.sandbox.server import Faults, LoopbackServer, Reply, Request, is_loopback, json_reply
from sync.sandbox.workspace import Workspace

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
        self.endpoints = AttioEndpoints(workspace)
        self.token = token
        self.rate_limit = rate_limit
        self._stats_lock = threading.Lock()
        self._window = (0, 0)
        self.reset_stats()

    def __enter__(self) -> AttioSandbox:
        self.start()
        return self

    def fail_next(
        self, n: int = 1, kind: str = "status", status: int = 503, endpoint: str | None = None,
        message: str | None = None,
    ) -> int:
        """Inject exactly ``n`` faults into the next ``n`` API requests; return how many are pending.

        ``kind``: ``status`` (answer ``status``; 429 comes with Attio's body and an HTTP-date ``Retry-After``),
        ``timeout`` (answer after ``faults.timeout_seconds``, 30 s unless configured), ``drop`` (close the
        socket) or ``malformed`` (200, truncated JSON). ``endpoint`` (one of :data:`ENDPOINT_KINDS`, e.g.
        ``records_query``) limits the faults to requests of that endpoint. A status fault is answered as a
        gateway would (HTML for 502 and above) unless ``message`` is given: then Attio itself answers, in its
        error shape with that message.
        """
        if endpoint is not None and endpoint not in ENDPOINT_KINDS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINT_KINDS}")
        return self._faults.queue(n, kind, status, endpoint, message)

    def fail_history(self, item_id: str, n: int = 1, status: int = 400) -> None:
        """Refuse the next ``n`` value (history) reads of one record or entry with ``status``."""
        self.endpoints.fail_history(item_id, n, status)

    def stale_history(self, item_id: str, n: int = 1) -> None:
        """Answer the next ``n`` value reads of one record or entry without its newest value (a read behind a
        recent write), while queries and the record show it."""
        self.endpoints.stale_history(item_id, n)

    def delete_before_history(self, record_id: str) -> None:
        """Delete a deal when its history is next read (listed by a query, gone when read: 404)."""
        self.endpoints.delete_before_history(record_id)

    @property
    def list_active_from(self) -> bool:
        """False: ``entries/query`` refuses the ``active_from`` filter (400 ``filter_error``)."""
        return self.endpoints.list_active_from

    @list_active_from.setter
    def list_active_from(self, supported: bool) -> None:
        self.endpoints.list_active_from = supported

    @property
    def queries(self) -> list[Query]:
        """Every ``records/query`` and ``entries/query`` request answered, with its body."""
        return self.endpoints.queries

    @property
    def history_reads(self) -> collections.Counter[str]:
        """Value (history) reads per record or entry id."""
        return self.endpoints.history_reads

    # ---- stats ------------------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._stats_lock:
            self._requests = 0
            self._by_kind: collections.Counter[str] = collections.Counter()
            self._queries: collections.Counter[str] = collections.Counter()
            self._rate_limited = 0
            self._faults_injected = 0
            self._unauthorized = 0
        self.endpoints.reset()

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``requests``, ``by_kind`` (endpoint kind -> count), ``queries`` (records and entries
        queries by object or list slug, as in the path), ``rate_limited``, ``faults``, ``unauthorized``. Admin
        requests are not counted."""
        with self._stats_lock:
            return {
                "requests": self._requests,
                "by_kind": dict(self._by_kind),
                "queries": dict(self._queries),
                "rate_limited": self._rate_limited,
                "faults": self._faults_injected,
                "unauthorized": self._unauthorized,
            }

    # ---- request pipeline ---------------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Reply:
        """Answer one request: admin, or rate limit -> faults -> auth -> endpoint; API answers carry Attio's
        clock in ``Date``."""
        if request.path.startswith("/_sandbox/"):
            return self._admin(request)
        reply = self._dispatch_api(request)
        reply.headers.setdefault("Date", email.utils.format_datetime(self.workspace.now(), usegmt=True))
        return reply

    def _dispatch_api(self, request: Request) -> Reply:
        kind, params = "not_found", {}
        for method, route_kind, pattern in _ROUTES:
            match = pattern.match(request.path)
            if match and method == request.method:
                kind, params = route_kind, match.groupdict()
                break
        with self._stats_lock:
            self._requests += 1
            self._by_kind[kind] += 1
            if kind in ("records_query", "entries_query"):
                self._queries[params["identifier"]] += 1
        limited = self._rate_limited_reply()
        if limited is not None:
            return limited
        fault = self._faults.draw(kind)
        if fault is not None:
            with self._stats_lock:
                self._faults_injected += 1
        message = fault.message if fault else None
        return self._apply_fault(
            fault, lambda: self._answer(request, kind, params), lambda status: self._fault_reply(status, message)
        )

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
        return self._too_many_requests()

    def _too_many_requests(self) -> Reply:
        # Retry-After is the next second of Attio's clock, as an HTTP date.
        moment = self.workspace.clock.timestamp() if self.workspace.clock else time.time()
        retry_after = email.utils.formatdate(int(moment) + 1, usegmt=True)
        return attio_error(
            429, "rate_limit_error", "rate_limit_exceeded",
            "Rate limit exceeded, please try again later.", {"Retry-After": retry_after},
        )

    def _fault_reply(self, status: int, message: str | None = None) -> Reply:
        if status == 429:
            return self._too_many_requests()
        if message is not None:
            return attio_error(status, "api_error", "unavailable" if status == 503 else "internal_error", message)
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
            return not_found(f"No route for {request.method} {request.path}")
        with self.workspace.lock:
            return self.endpoints.handle(request, kind, params)

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
                                         int(body.get("status", 503)), body.get("endpoint"), body.get("message"))
                return json_reply(200, {"pending": pending})
            if route == ("POST", "/_sandbox/fail_history"):
                self.fail_history(_required(body, "id"), int(body.get("n", 1)), int(body.get("status", 400)))
                return json_reply(200, {})
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
