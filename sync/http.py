"""HTTP plumbing shared by both clients: retries, a rate limiter, request counts, and a gate on the calls in flight."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

CONNECT_TIMEOUT = 10  # seconds; the read timeout is the SYNC_HTTP_TIMEOUT setting
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Answers that say the request was not taken: safe to resend even where a resend would duplicate.
NOT_RECEIVED_STATUSES = (429, 503)
BACKOFF_FACTOR = 0.5  # seconds; doubles each retry (the tests set it to 0)
# urllib3 turns an HTTP-date Retry-After into seconds with the local clock: a clock far behind the server's
# must not make one 429 wait for minutes.
MAX_RETRY_AFTER = 60.0


# Aim this far under the ceiling: evenly spaced requests at exactly the ceiling fill every second of the
# server's count, and any network jitter would carry one into the next second and earn a 429.
HEADROOM = 0.98


class RateLimiter:
    """Spaces requests evenly so that no more than `per_second` start in any second, across threads."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / (per_second * HEADROOM)
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@dataclass
class RequestStats:
    """What a client did: attempts made (retries included), retries, and 429s received."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, retries: int = 0, rate_limited: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.rate_limited += rate_limited


def _retry_class(stats: RequestStats, limiter: RateLimiter | None) -> type[Retry]:
    """A urllib3 Retry that counts each retry and passes it through the rate limiter.

    urllib3 copies a Retry for every attempt with type(self)(...), so per-client state lives on a
    subclass made for that client.
    """

    class CountingRetry(Retry):
        def increment(self, method: str | None = None, url: str | None = None,
                      response: BaseHTTPResponse | None = None, error: Exception | None = None,
                      _pool: ConnectionPool | None = None, _stacktrace: TracebackType | None = None) -> Self:
            new = super().increment(method, url, response, error, _pool, _stacktrace)
            stats.add(requests=1, retries=1, rate_limited=int(getattr(response, "status", 0) == 429))
            return new

        def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
            seconds = super().get_retry_after(response)
            return None if seconds is None else min(seconds, MAX_RETRY_AFTER)

        def sleep(self, response: BaseHTTPResponse | None = None) -> None:
            super().sleep(response)
            if limiter is not None:
                limiter.wait()

    return CountingRetry


def make_session(
    stats: RequestStats,
    limiter: RateLimiter | None = None,
    retries: int = 6,
    pool_size: int = 16,
    statuses: tuple[int, ...] = RETRY_STATUSES,
    resend_if_maybe_received: bool = True,
) -> requests.Session:
    """A Session whose adapter retries 429 (honouring Retry-After, HTTP date or seconds), the `statuses`
    and connection errors with exponential backoff.

    Every verb is retried: Attio's POST queries are reads. With `resend_if_maybe_received=False` (Usermaven,
    where a resend may count twice) only what the server cannot have taken is retried: connection failures
    and the `statuses`; a read timeout, a connection lost mid-answer or a redirect is not.
    """
    retry = _retry_class(stats, limiter)(
        total=retries,
        connect=retries,
        read=None if resend_if_maybe_received else False,
        other=None if resend_if_maybe_received else False,
        redirect=None if resend_if_maybe_received else False,
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=30,
        status_forcelist=statuses,
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def settle_environment(session: requests.Session, url: str) -> requests.Session:
    """Read the proxy and CA bundle settings from the environment once, for the one host this session talks to.

    requests otherwise reads them (and stats ~/.netrc and the CA bundle) on every request: about a
    millisecond of CPU each, more than the rest of a small request costs.
    """
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    # Plain http has no certificates to check: a CA bundle path would cost requests a stat per request.
    session.verify = settings["verify"] if url.startswith("https:") else True
    session.cert = settings["cert"]
    session.trust_env = False
    return session


class InFlight:
    """Starts submitted calls on a pool, no more than `target()` at once (re-read as calls finish), the
    rest waiting in order. A thread that finishes a call takes the next waiting one itself, so the pool's
    threads number the most calls ever run at once (`target()`), not its ceiling: the pool adds a thread
    whenever none is idle, and a thread handing work on would never be idle."""

    def __init__(self, pool: ThreadPoolExecutor, target: Callable[[], int]):
        self.pool = pool
        self.target = target
        self._waiting: deque[tuple[Callable[..., Any], tuple[Any, ...], Future]] = deque()
        self._active = 0
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            self._waiting.append((fn, args, future))
        self._pump()
        return future

    def close(self) -> None:
        """Start nothing more; calls not started yet are cancelled."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, deque()
        for _, _, future in waiting:
            future.cancel()

    def _pump(self) -> None:
        while True:
            with self._lock:
                if self._closed or not self._waiting or self._active >= self.target():
                    return
                call = self._waiting.popleft()
                self._active += 1
            self.pool.submit(self._run, call)

    def _run(self, call: tuple[Callable[..., Any], tuple[Any, ...], Future] | None) -> None:
        while call is not None:
            fn, args, future = call
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:
                        future.set_exception(exc)
            finally:
                with self._lock:
                    if not self._closed and self._waiting and self._active <= self.target():
                        call = self._waiting.popleft()
                    else:
                        call = None
                        self._active -= 1
            self._pump()  # the target may have grown meanwhile
