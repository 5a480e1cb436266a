"""The sandbox's servers answering urllib3 in-process: no socket, everything else as on the wire.

Only the connection is replaced. urllib3's pools, retries (`Retry`, Retry-After), timeouts turned into
errors and redirects run as they do over a socket, so tests see the clients' real behaviour. A host that no
test serves is left to the real connection (and fails as an unknown host does).
"""

from __future__ import annotations

import http.client
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from urllib3 import HTTPResponse
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from sync.sandbox.server import Reply, Request


class Dispatcher(Protocol):
    def dispatch(self, request: Request) -> Reply: ...


@dataclass
class Answer:
    """A dispatcher made of a function, for tests that only record what was sent."""

    answer: Callable[[Request], Reply]

    def dispatch(self, request: Request) -> Reply:
        return self.answer(request)


@dataclass
class InProcess:
    """The hosts served in-process, and every request they were sent (method, URL), in order."""

    routes: dict[tuple[str, str, int], Dispatcher] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def serve(self, base: str, server: Dispatcher) -> None:
        """Answer every request to the host of `base` with `server.dispatch`."""
        parts = urlsplit(base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.routes[(parts.scheme, parts.hostname or "", port)] = server

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for pool, connection, scheme in ((HTTPConnectionPool, HTTPConnection, "http"),
                                         (HTTPSConnectionPool, HTTPSConnection, "https")):
            monkeypatch.setattr(pool, "ConnectionCls", _connection_class(connection, scheme, self))


def _connection_class(base: type[HTTPConnection], scheme: str, inprocess: InProcess) -> type[HTTPConnection]:
    class InProcessConnection(base):  # type: ignore[valid-type, misc]
        def __init__(self, host: str, port: int | None = None, **kwargs: Any) -> None:
            self._verified = False
            super().__init__(host, port, **kwargs)
            default = 443 if scheme == "https" else 80
            self._server = inprocess.routes.get((scheme, host, port or default))
            self._sent: Request | None = None
            self._preload = True

        def connect(self) -> None:
            if self._server is None:
                super().connect()

        @property
        def is_closed(self) -> bool:
            return False if self._server is not None else super().is_closed

        @property
        def is_connected(self) -> bool:
            return True if self._server is not None else super().is_connected

        @property
        def is_verified(self) -> bool:  # type: ignore[override]
            return True if self._server is not None else self._verified

        @is_verified.setter
        def is_verified(self, value: bool) -> None:
            self._verified = value

        def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
            if self._server is None:
                return super().request(method, url, body=body, headers=headers, **kwargs)
            parts = urlsplit(url)
            data = body if isinstance(body, bytes) else (body or "").encode()
            self._sent = Request(method, unquote(parts.path), parse_qs(parts.query), dict(headers or {}), data,
                                 "127.0.0.1")
            self._preload = kwargs.get("preload_content", True)
            inprocess.calls.append((method, f"{scheme}://{self.host}{url}"))
            return None

        def getresponse(self) -> Any:
            if self._server is None:
                return super().getresponse()
            assert self._sent is not None
            reply = self._server.dispatch(self._sent)
            if reply.drop:
                raise http.client.RemoteDisconnected("the sandbox dropped the connection")
            if reply.delay:
                raise TimeoutError("the sandbox answered too late")  # urllib3 makes it a ReadTimeoutError
            headers = {"Content-Type": reply.content_type, "Content-Length": str(len(reply.body)),
                       **reply.headers}
            return HTTPResponse(body=io.BytesIO(reply.body), headers=headers, status=reply.status,
                                preload_content=self._preload, request_method=self._sent.method,
                                request_url=self._sent.path, connection=self)

        def close(self) -> None:
            if self._server is None:
                super().close()

    return InProcessConnection


def record_bodies(inprocess: InProcess, base: str) -> list[bytes]:
    """Answer every request to the host of `base` with 200 `{}`, keeping each body, in order."""
    bodies: list[bytes] = []

    def answer(request: Request) -> Reply:
        bodies.append(request.body)
        return Reply(200, b"{}")

    inprocess.serve(base, Answer(answer))
    return bodies
