"""A loopback HTTP server that accepts events like Usermaven's server-to-server event API.

``POST /api/v1/s2s/event?token=API_KEY.SERVER_TOKEN`` with one event or an array of events. A request is
all-or-nothing: if any event is invalid, nothing from it is recorded, as Jitsu (Usermaven's base) rejects
the whole body. Admin endpoints under ``/_sandbox/`` serve the recorded events to another process and
script its answers.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, TypeAlias

from sync.sandbox.server import Faults, LoopbackServer, Reply, Request, is_loopback, json_reply

EVENTS_PATH = "/api/v1/s2s/event"
# Jitsu's default per-event size limit.
MAX_EVENT_BYTES = 51_200

# A scripted answer to one authenticated events request: (status, JSON body), or None to process it.
Answer: TypeAlias = tuple[int, Any] | None


def _error(status: int, message: str) -> Reply:
    """An error in Jitsu's shape."""
    return json_reply(status, {"message": message, "error": ""})


class UsermavenCollector(LoopbackServer):
    """Records every event accepted on ``/api/v1/s2s/event``, in memory and optionally as JSON lines.

    ``batches`` holds the events of each accepted request, as sent (a lone event object is a batch of one);
    it is the live record, so a test may clear it. ``answers`` scripts what Usermaven says to the next
    authenticated requests, oldest first (assign or append; the collector pops): ``(status, body)`` answers
    that and records nothing, ``None`` lets the request through. A wrong token is refused before an answer
    is taken; ``fail_next`` faults come first.
    """

    def __init__(
        self,
        api_key: str = "sandbox-um-key",
        server_token: str = "sandbox-um-server-token",
        jsonl_path: str | Path | None = None,
        error_rate: float = 0.0,
        faults: Faults | None = None,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if faults is None and error_rate:
            faults = Faults(error_rate=error_rate)
        super().__init__(host, port, latency, faults)
        self.api_key = api_key
        self.server_token = server_token
        self.jsonl_path = Path(jsonl_path) if jsonl_path is not None else None
        self._lock = threading.Lock()
        self.batches: list[list[dict[str, Any]]] = []
        self.answers: list[Answer] = []
        self._requests = 0
        self._rejected = 0
        self._faults_injected = 0

    def __enter__(self) -> UsermavenCollector:
        self.start()
        return self

    def start(self) -> str:
        """Start serving; return the full events URL (``http://127.0.0.1:PORT/api/v1/s2s/event``)."""
        return super().start() + EVENTS_PATH

    @property
    def events_url(self) -> str | None:
        """The full events URL while running."""
        return self.url + EVENTS_PATH if self.url else None

    @property
    def token(self) -> str:
        """The ``token`` query parameter the collector accepts."""
        return f"{self.api_key}.{self.server_token}"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted event, in arrival order (a copy)."""
        with self._lock:
            return [event for batch in self.batches for event in batch]

    def unique_events(self) -> list[dict[str, Any]]:
        """Events collapsed by ``event_id`` as Usermaven's storage does eventually: the last one wins,
        kept at the position of the first. Events without an ``event_id`` are all kept."""
        collapsed: dict[Any, dict[str, Any]] = {}
        for position, event in enumerate(self.events):
            key = event.get("event_id") or ("no-event-id", position)
            collapsed[key] = event
        return list(collapsed.values())

    @property
    def requests(self) -> int:
        """Requests received on the events endpoint (faulted and rejected ones included)."""
        with self._lock:
            return self._requests

    @property
    def stats(self) -> dict[str, int]:
        """``requests``, ``events`` accepted, ``rejected`` requests (4xx), injected ``faults`` (scripted
        ``answers`` included)."""
        with self._lock:
            return {
                "requests": self._requests,
                "events": sum(len(batch) for batch in self.batches),
                "rejected": self._rejected,
                "faults": self._faults_injected,
            }

    def clear(self) -> None:
        """Forget recorded events, counters and scripted answers (the JSONL file is left alone)."""
        with self._lock:
            self.batches.clear()
            self.answers = []
            self._requests = self._rejected = self._faults_injected = 0

    def fail_next(self, n: int = 1, status: int = 500, kind: str = "status") -> int:
        """Make the next ``n`` event requests fail: ``kind="status"`` answers ``status`` (e.g. 500, 401,
        400) without recording, ``"drop"`` closes the connection, ``"timeout"`` records then answers late."""
        return self._faults.queue(n, kind, status)

    # ---- requests ---------------------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Reply:
        """Answer one request."""
        if request.path.startswith("/_sandbox/"):
            return self._admin(request)
        if request.path != EVENTS_PATH:
            return _error(404, "not found")
        with self._lock:
            self._requests += 1
        fault = self._faults.draw()
        if fault is not None:
            with self._lock:
                self._faults_injected += 1
        return self._apply_fault(fault, lambda: self._accept(request), self._fault_reply)

    @staticmethod
    def _fault_reply(status: int) -> Reply:
        messages = {401: "wrong token", 400: "failed to parse request body"}
        return _error(status, messages.get(status, "internal server error"))

    def _accept(self, request: Request) -> Reply:
        refused = self._authenticate(request)
        if refused is not None:
            return self._reject(refused)
        scripted = self._scripted_answer()
        if scripted is not None:
            return scripted
        events = self._validate(request)
        if isinstance(events, Reply):
            return self._reject(events)
        self._record(events)
        return json_reply(200, {"status": "ok"})

    def _reject(self, reply: Reply) -> Reply:
        with self._lock:
            self._rejected += 1
        return reply

    def _authenticate(self, request: Request) -> Reply | None:
        if request.method != "POST":
            return _error(405, "method not allowed")
        if request.param("token") != self.token:
            return _error(401, "The token isn't a server token or doesn't exist")
        return None

    def _scripted_answer(self) -> Reply | None:
        with self._lock:
            answer = self.answers.pop(0) if self.answers else None
            if answer is not None:
                self._faults_injected += 1
        return json_reply(*answer) if answer is not None else None

    def _validate(self, request: Request) -> Reply | list[dict[str, Any]]:
        try:
            payload = json.loads(request.body)
        except ValueError:
            return _error(400, "Failed to parse body: invalid JSON")
        events = payload if isinstance(payload, list) else [payload]
        for event in events:
            if not isinstance(event, dict):
                return _error(400, "Failed to parse body: an event must be a JSON object")
            if not isinstance(event.get("event_type"), str) or not event["event_type"]:
                return _error(400, "Event has no event_type")
            if "api_key" in event and event["api_key"] != self.api_key:
                return _error(400, "api_key in the event doesn't match the token's API key")
            size = len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())
            if size > MAX_EVENT_BYTES:
                return _error(400, f"Event size {size} bytes exceeds the limit of {MAX_EVENT_BYTES} bytes")
        return events

    def _record(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.batches.append(events)
            if self.jsonl_path is not None:
                with self.jsonl_path.open("a", encoding="utf-8") as file:
                    for event in events:
                        file.write(json.dumps(event, ensure_ascii=False) + "\n")

    def _admin(self, request: Request) -> Reply:
        if not is_loopback(request.client_host):
            return json_reply(403, {"error": "admin endpoints answer loopback clients only"})
        route = (request.method, request.path)
        if route == ("GET", "/_sandbox/events"):
            return json_reply(200, self.events)
        if route == ("GET", "/_sandbox/batches"):
            with self._lock:
                return json_reply(200, self.batches)
        if route == ("GET", "/_sandbox/unique_events"):
            return json_reply(200, self.unique_events())
        if route == ("GET", "/_sandbox/stats"):
            return json_reply(200, self.stats)
        if route == ("POST", "/_sandbox/reset"):
            self.clear()
            return json_reply(200, self.stats)
        if route == ("POST", "/_sandbox/fail_next"):
            try:
                body = request.json() or {}
                pending = self.fail_next(
                    int(body.get("n", 1)), int(body.get("status", 500)), body.get("kind", "status")
                )
            except (TypeError, ValueError) as error:
                return json_reply(400, {"error": str(error)})
            return json_reply(200, {"pending": pending})
        if route == ("POST", "/_sandbox/answers"):
            try:
                answers = [_answer(item) for item in (request.json() or {}).get("answers", [])]
            except (AttributeError, TypeError, ValueError) as error:
                return json_reply(400, {"error": str(error)})
            with self._lock:
                self.answers.extend(answers)
                return json_reply(200, {"pending": len(self.answers)})
        return json_reply(404, {"error": f"no admin route {request.method} {request.path}"})


def _answer(item: Any) -> Answer:
    """One scripted answer from JSON: ``null`` or ``[status, body]``."""
    if item is None:
        return None
    status, body = item
    return int(status), body
