"""HTTP plumbing shared by both clients: retries, a rate limiter, request counts, and a gate on the calls in flight."""

from __future__ import annotations

import math
import os
import ssl
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import certifi
import urllib3
from urllib3.connectionpool import ConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from sync.clock import http_date
from sync.errors import ConfigError

CONNECT_TIMEOUT = 10  # seconds; the read timeout is the SYNC_HTTP_TIMEOUT setting
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Answers that say the request was not taken: safe to resend even where a resend would duplicate.
NOT_RECEIVED_STATUSES = (429, 503)
BACKOFF_FACTOR = 0.5  # seconds; doubles each retry (the tests set it to 0)
# urllib3 turns an HTTP-date Retry-After into seconds with the local clock: a clock far behind the server's
# must not make one 429 wait for minutes. Where the answer has a Date and this machine's clock is more than
# CLOCK_SLACK from it, the wait is read by the server's clock instead (Retry-After less Date).
MAX_RETRY_AFTER = 60.0
CLOCK_SLACK = 2.0


# Aim this far under the ceiling: requests that fill a second of the server's count exactly would earn a 429
# whenever network jitter carried one into the next second. A window of 1/HEADROOM seconds leaves 20 ms of it.
HEADROOM = 0.98
# Two requests start at least this fraction of the average interval apart: what a pause left unused in the
# window is made up at twice the rate at most, not in one burst.
MIN_SPACING = 0.5
# A 429 says the margin above was not enough (requests delayed on their way more than it, or another client
# of the workspace spending the same budget): the window widens by this factor, up to MAX_WIDENING times its
# first width (about 89 requests a second at ATTIO_MAX_RPS 100), and narrows back by the same factor after each
# RECOVER_AFTER windows' worth of requests without one. The 429s of one window count once: a second the server
# found over its limit refuses every request past it, several of those in flight at once.
WIDEN_ON_429 = 1.02
MAX_WIDENING = 1.10
RECOVER_AFTER = 10


class _Promise:
    """A start time given to a waiting request; an urgent request may take it and leave a later one."""

    def __init__(self, slot: float):
        self.slot = slot
        self.moved = threading.Event()


class RateLimiter:
    """No more than `per_second` requests start in any second, across threads: at most `count` requests
    (`per_second`, rounded down, at least 1) in any window of `window` seconds (`count` at HEADROOM of the
    rate, and never under 1/HEADROOM).

    A request starts as soon as the last window allows it, so time in which no request went out (the
    setup's round trips before the first page, the main thread committing while the reading threads wait
    for the GIL) is made up within the window instead of lost, as it would be with fixed even spacing.

    An urgent request (one the run waits for, such as the lookups of the batch about to be committed) takes
    the earliest start time given to a request still waiting, which gets the next free one instead: it waits
    for one slot, not behind every history read already queued. The start times given out stay the same.
    After a 429, `slow_down` widens the window for a while (see WIDEN_ON_429).
    `clock` and `sleep` are for tests (by default a waiting request sleeps on its promise, so that it wakes
    when an urgent one takes it).
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None):
        self.count = max(1, math.floor(per_second))
        self.window = max(self.count / (per_second * HEADROOM), 1 / HEADROOM)
        self.spacing = self.window / self.count * MIN_SPACING
        self._first = self.window
        self._since_429 = 0  # starts given out since the last 429 (or the last step back)
        self._widened_at: float | None = None
        self._clock = clock
        self._sleep = sleep
        self._slots: deque[float] = deque(maxlen=self.count)  # the last `count` start times given out
        self._waiting: deque[_Promise] = deque()  # start times given to requests still waiting, earliest first
        self._started: deque[float] = deque(maxlen=self.count)  # when the last `count` requests really started
        self._lock = threading.Lock()

    def wait(self, urgent: bool = False) -> None:
        with self._lock:
            now = self._clock()
            slot = now
            if self._slots:
                slot = max(slot, self._slots[-1] + self.spacing)
            if len(self._slots) == self.count:
                slot = max(slot, self._slots[0] + self.window)
            self._slots.append(slot)
            self._recover()
            promise = _Promise(slot)
            if urgent and self._waiting and self._waiting[0].slot < slot:
                earlier = self._waiting.popleft()
                earlier.slot, promise.slot = slot, earlier.slot
                self._waiting.append(earlier)
                earlier.moved.set()
            elif not urgent and promise.slot > now:
                self._waiting.append(promise)
        if promise.slot > now and not urgent:
            self._sleep_until(promise)
        elif promise.slot > now:
            (self._sleep or time.sleep)(promise.slot - now)
        self._hold_back_if_late()

    def slow_down(self) -> None:
        """Attio answered 429: widen the window by WIDEN_ON_429, up to MAX_WIDENING of its first width, unless it
        was widened less than a window ago (the same overfull second). Start times already given out stay."""
        with self._lock:
            now = self._clock()
            self._since_429 = 0
            if self._widened_at is not None and now - self._widened_at < self.window:
                return
            self._widened_at = now
            self._set_window(min(self.window * WIDEN_ON_429, self._first * MAX_WIDENING))

    def _recover(self) -> None:
        """RECOVER_AFTER windows' worth of starts without a 429: narrow the window back a step (under the lock)."""
        self._since_429 += 1
        if self.window > self._first and self._since_429 >= RECOVER_AFTER * self.count:
            self._set_window(max(self._first, self.window / WIDEN_ON_429))
            self._since_429 = 0

    def _set_window(self, window: float) -> None:
        self.window = window
        self.spacing = window / self.count * MIN_SPACING

    def _hold_back_if_late(self) -> None:
        """Start now, unless requests that woke late (a thread waiting for the GIL while another parses a page)
        would put more than `count` starts in the last window: then wait until they would not."""
        while True:
            with self._lock:
                now = self._clock()
                if len(self._started) < self.count or now >= self._started[0] + self.window:
                    self._started.append(now)
                    return
                wait = self._started[0] + self.window - now
            (self._sleep or time.sleep)(wait)

    def _sleep_until(self, promise: _Promise) -> None:
        while True:
            with self._lock:
                remaining = promise.slot - self._clock()
                if remaining <= 0:
                    self._waiting.remove(promise)
                    return
                promise.moved.clear()
            if self._sleep is None:
                promise.moved.wait(remaining)
            else:
                self._sleep(remaining)


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
            limited = getattr(response, "status", 0) == 429
            stats.add(requests=1, retries=1, rate_limited=int(limited))
            if limited and limiter is not None:
                limiter.slow_down()
            return new

        def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
            seconds = super().get_retry_after(response)
            if seconds is None:
                return None
            by_server = server_wait(response, time.time())
            return min(seconds if by_server is None else by_server, MAX_RETRY_AFTER)

        def sleep(self, response: BaseHTTPResponse | None = None) -> None:
            super().sleep(response)
            if limiter is not None:
                limiter.wait()

    return CountingRetry


def server_wait(response: BaseHTTPResponse, now: float) -> float | None:
    """When this machine's clock (`now`) is more than CLOCK_SLACK off the answer's Date, the wait an HTTP-date
    Retry-After means by the server's clock: Retry-After less Date, in seconds (never negative). None otherwise
    (a Retry-After in seconds needs no clock; with the clocks together, this machine's is the finer)."""
    after = http_date(response.headers.get("Retry-After"))
    date = http_date(response.headers.get("Date"))
    if after is None or date is None or abs(now - date.timestamp()) <= CLOCK_SLACK:
        return None
    return max(0.0, (after - date).total_seconds())


def make_pool(
    url: str,
    stats: RequestStats,
    limiter: RateLimiter | None = None,
    retries: int = 6,
    pool_size: int = 16,
    statuses: tuple[int, ...] = RETRY_STATUSES,
    resend_if_maybe_received: bool = True,
) -> urllib3.PoolManager:
    """A urllib3 pool for the host of `url` whose requests retry 429 (honouring Retry-After, HTTP date or
    seconds), the `statuses` and connection errors with exponential backoff.

    Every verb is retried: Attio's POST queries are reads. With `resend_if_maybe_received=False` (Usermaven,
    where a resend may count twice) only what the server cannot have taken is retried: connection failures
    and the `statuses`; a read timeout, a connection lost mid-answer or a redirect is not (and a redirect is
    answered, not followed).

    urllib3 itself, not requests on top of it: requests' layers (sessions, hooks, cookies, its adapter's
    response wrapping) cost more CPU per request than urllib3 and http.client together, and a backfill makes
    one request per deal. The environment is read once: HTTPS_PROXY/HTTP_PROXY and NO_PROXY, and a CA bundle
    in SSL_CERT_FILE or REQUESTS_CA_BUNDLE (else certifi's, as requests would use).
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
    settings: dict[str, Any] = {"num_pools": 2, "maxsize": pool_size, "retries": retry}
    if url.startswith("https:"):
        bundle = ca_bundle()
        settings["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    proxy = environment_proxy(url)
    if proxy is None:
        return urllib3.PoolManager(**settings)
    auth = urlsplit(proxy)
    if auth.username is not None:  # user:password@ in the proxy URL: urllib3 sends it only if told
        credentials = f"{unquote(auth.username)}:{unquote(auth.password or '')}"
        settings["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=credentials)
    return urllib3.ProxyManager(proxy, **settings)


def ca_bundle() -> str:
    """The CA bundle (a file or a directory) to check servers' certificates with: REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE as requests reads them, then SSL_CERT_FILE, else certifi's."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name):
            _check_bundle(name, os.environ[name])
            return os.environ[name]
    return certifi.where()


def _check_bundle(name: str, path: str) -> None:
    """ConfigError unless `path` holds certificates: a missing or unreadable bundle would otherwise fail every
    request, retried, as if the server could not be reached."""
    try:
        if os.path.isdir(path):
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError([f"{name} names {path}, which is not a readable bundle of CA certificates ({exc}): point "
                           "it at a PEM file of certificates, or unset it"]) from None


def reason(exc: Exception) -> str:
    """What made a request fail, for a message: the last failure itself when urllib3 gave up retrying."""
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
    return f"{type(cause).__name__}: {cause}"


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY or HTTP_PROXY, else ALL_PROXY, unless NO_PROXY
    covers its host), as requests reads it; `host:port` is taken as an http proxy. ConfigError for a proxy
    this client cannot speak to (SOCKS)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    scheme = proxy.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ConfigError([f"the proxy set for {parts.scheme} in the environment is a {scheme} proxy, which this "
                          "program cannot use: set HTTPS_PROXY to an http(s) proxy, or NO_PROXY to the hosts to "
                          "reach directly"])
    try:
        if not urllib3.util.parse_url(proxy).host:  # a malformed or missing host or port: here, not mid-run
            raise urllib3.exceptions.LocationParseError(proxy)
    except urllib3.exceptions.LocationParseError:
        raise ConfigError([f"the proxy set for {parts.scheme} in the environment is not a URL this program can read "
                           "(its value is not shown: it may hold a password): write it as http://host:port"]) from None
    return proxy


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
