"""The loopback plumbing both sandbox servers share: a threaded HTTP server on 127.0.0.1, requests and
replies as plain data, latency, and injectable faults (error statuses, timeouts, dropped connections,
malformed bodies)."""

from __future__ import annotations

import collections
import json
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

FAULT_KINDS = ("status", "timeout", "drop", "malformed")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


# ---- generic loopback server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """Random faults drawn per request from a seeded rng (rates are probabilities, summed in this order).

    ``status``: answer with one of ``statuses`` without processing. ``timeout``: process, then wait
    ``timeout_seconds`` before answering (the client should give up first). ``drop``: close the socket
    without an answer. ``malformed``: 200 with a truncated JSON body.
    """

    error_rate: float = 0.0
    statuses: tuple[int, ...] = (500, 502, 503)
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Fault:
    """One fault to inject."""

    kind: str
    status: int = 503
    message: str | None = None


@dataclass
class Request:
    """An incoming HTTP request, parsed."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    client_host: str

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body as JSON (``None`` for an empty body); ``ValueError`` if it is not JSON."""
        return json.loads(self.body) if self.body.strip() else None


@dataclass
class Reply:
    """What to answer: a status and body, or ``drop`` the connection; ``delay`` waits before answering."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply (UTF-8, emoji kept as is)."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Reply(status, body, headers=dict(headers or {}))


class _FaultPlan:
    """Deterministic faults queued by ``fail_next`` first, then random ones from :class:`Faults`."""

    def __init__(self, faults: Faults | None) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed if faults else 0)
        self._queue: collections.deque[Fault] = collections.deque()
        self._targeted: dict[str, collections.deque[Fault]] = {}
        self._lock = threading.Lock()

    def queue(self, n: int, kind: str, status: int, target: str | None = None, message: str | None = None) -> int:
        """Queue ``n`` faults for the next requests (only those of kind ``target`` if given)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            queue = self._queue if target is None else self._targeted.setdefault(target, collections.deque())
            queue.extend(Fault(kind, status, message) for _ in range(n))
            return self._pending()

    def pending(self) -> int:
        """Queued faults not yet drawn."""
        with self._lock:
            return self._pending()

    def _pending(self) -> int:
        return len(self._queue) + sum(len(queue) for queue in self._targeted.values())

    def draw(self, target: str | None = None) -> Fault | None:
        """The fault for the next request (of kind ``target``): queued ones first, then a random one."""
        with self._lock:
            targeted = self._targeted.get(target) if target is not None else None
            if targeted:
                return targeted.popleft()
            if self._queue:
                return self._queue.popleft()
            faults = self.faults
            if faults is None:
                return None
            roll = self._rng.random()
            threshold = 0.0
            for kind, rate in (
                ("status", faults.error_rate),
                ("timeout", faults.timeout_rate),
                ("drop", faults.drop_rate),
                ("malformed", faults.malformed_rate),
            ):
                threshold += rate
                if roll < threshold:
                    status = self._rng.choice(faults.statuses) if kind == "status" else 200
                    return Fault(kind, status)
            return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: LoopbackServer):
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        # Keep-alive connections would otherwise still be served by their threads after stop().
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, delayed ACKs add ~40 ms each.
    disable_nagle_algorithm = True
    server: _HTTPServer
    timeout = 120

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test and benchmark output quiet."""

    def _handle(self) -> None:
        app = self.server.app
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        request = Request(
            self.command, unquote(parts.path), parse_qs(parts.query), self.headers, body, self.client_address[0]
        )
        try:
            reply = app.dispatch(request)
        except Exception as error:  # a sandbox bug must surface as a 500, not a hung client
            reply = json_reply(500, {"status_code": 500, "type": "sandbox_error", "message": repr(error)})
        delay = reply.delay + (app.latency if not request.path.startswith("/_sandbox/") else 0.0)
        if delay > 0:
            app._stopping.wait(delay)
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            # send_response would add a Date of its own: a reply may carry its server's clock instead.
            self.log_request(reply.status)
            self.send_response_only(reply.status)
            self.send_header("Server", self.version_string())
            if "Date" not in reply.headers:
                self.send_header("Date", self.date_time_string())
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class LoopbackServer:
    """A threaded HTTP server on loopback with latency and fault injection; subclasses answer requests."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0, faults: Faults | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self._faults = _FaultPlan(faults)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def faults(self) -> Faults | None:
        """The random fault configuration."""
        return self._faults.faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        self._faults = _FaultPlan(faults)

    @property
    def url(self) -> str | None:
        """``http://127.0.0.1:PORT`` while running, else None."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Start serving in a background thread; return the base URL."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._server = _HTTPServer((self.host, self.port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True,
            name=f"{type(self).__name__}-{self._server.server_address[1]}",
        )
        self._thread.start()
        url = self.url
        assert url is not None
        return url

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def dispatch(self, request: Request) -> Reply:
        """Answer one request."""
        raise NotImplementedError

    def _apply_fault(self, fault: Fault | None, answer: Callable[[], Reply], error: Callable[[int], Reply]) -> Reply:
        """Answer a request through an optional fault."""
        if fault is None:
            return answer()
        if fault.kind == "status":
            return error(fault.status)
        if fault.kind == "drop":
            return Reply(0, drop=True)
        reply = answer()
        if fault.kind == "timeout":
            timeout = self.faults.timeout_seconds if self.faults else Faults().timeout_seconds
            reply.delay += timeout
            return reply
        # malformed: a 200 whose JSON stops halfway, as a proxy cutting the body would leave it.
        body = reply.body or b'{"data":[]}'
        return Reply(200, body[: max(1, len(body) // 2)])


def is_loopback(host: str) -> bool:
    """Whether a client address is on the loopback interface."""
    return host in _LOOPBACK or host.startswith("127.")
