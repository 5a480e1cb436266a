"""Retries, Retry-After and the rate limiter."""

from __future__ import annotations

import base64
import threading
import time
from email.utils import format_datetime
from pathlib import Path

import certifi
import pytest
import urllib3
from urllib3.response import HTTPResponse

from sync.http import RateLimiter, RequestStats, make_pool
from tests.conftest import NOW, ledger_rows, uid


def test_attio_429_with_http_date_retry_after_is_retried(attio, workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    # the next two queries are answered 429 with Retry-After: the next second of Attio's clock, an HTTP date
    attio.fail_next(2, status=429, endpoint="records_query")
    code, out, err = run("run")
    assert code == 0
    assert attio.stats["faults"] == 2  # both 429s were answered, and retried
    assert len(usermaven.events) == 1
    run_row = ledger_rows(env)[0]
    assert run_row["state"] == "sent"


def test_retry_waits_until_the_http_date_in_retry_after(monkeypatch):
    stats = RequestStats()
    retry = make_pool("https://api.attio.com", stats).connection_pool_kw["retries"]
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    in_three_seconds = format_datetime_now(3)
    response = HTTPResponse(body=b"", headers={"Retry-After": in_three_seconds}, status=429)
    retry = retry.increment(method="POST", url="/v2/objects/deals/records/query", response=response)
    retry.sleep(response)
    assert len(slept) == 1 and 1.5 < slept[0] <= 3.0
    assert (stats.retries, stats.rate_limited) == (1, 1)


def test_retry_after_far_in_the_future_is_capped(monkeypatch):
    """A local clock ten minutes behind Attio's must not turn one 429 into a ten-minute wait."""
    retry = make_pool("https://api.attio.com", RequestStats()).connection_pool_kw["retries"]
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    response = HTTPResponse(body=b"", headers={"Retry-After": format_datetime_now(600)}, status=429)
    retry = retry.increment(method="POST", url="/v2/objects/deals/records/query", response=response)
    retry.sleep(response)
    assert slept == [60.0]


@pytest.mark.parametrize("skew", [600, -600])
def test_retry_after_is_read_by_the_servers_clock_when_this_machines_is_off(monkeypatch, skew):
    """Attio's clock ten minutes ahead of this machine's (or behind): its 429 says "the next second" of its own
    clock, and its Date says what that clock read. The wait is about a second, not a minute (nor nothing, which
    would send the retry into the same full second)."""
    retry = make_pool("https://api.attio.com", RequestStats()).connection_pool_kw["retries"]
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    headers = {"Date": format_datetime_now(skew), "Retry-After": format_datetime_now(skew + 1)}
    response = HTTPResponse(body=b"", headers=headers, status=429)
    retry = retry.increment(method="POST", url="/v2/objects/deals/records/query", response=response)
    retry.sleep(response)
    assert len(slept) == 1 and 0.9 <= slept[0] <= 1.1


def format_datetime_now(seconds: int) -> str:
    from datetime import UTC, datetime, timedelta

    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


def test_attio_unreachable_after_retries_exits_1_and_commits_nothing(attio, workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    attio.fail_next(7, status=503, endpoint="records_query", message="Service unavailable")
    code, out, err = run("run")
    assert code == 1
    assert "Attio answered 503" in err and "Service unavailable" in err
    assert ledger_rows(env) == []
    # the checkpoint did not move: the next run finds the change
    assert run("run")[0] == 0
    assert len(usermaven.events) == 1


@pytest.mark.parametrize("per_second", [40, 100])
def test_rate_limiter_holds_the_ceiling_across_threads(per_second):
    limiter = RateLimiter(per_second)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(per_second // 4 + 3):
            limiter.wait()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    # A second's worth and 12 more: the 12 wait for the window that began with the first
    assert stamps[-1] - stamps[0] >= limiter.window * 0.99
    # No window of one second holds more than the ceiling (less 50 ms: a thread may wake late on a busy machine;
    # tests/test_rate_limiter.py checks the exact times on a fake clock).
    for i, start in enumerate(stamps):
        assert sum(1 for s in stamps[i:] if s - start < 0.95) <= per_second


def test_truncated_json_from_attio_is_retried(attio, workspace, usermaven, run, env):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    attio.fail_next(2, kind="malformed", endpoint="records_query")  # bodies cut off halfway: not JSON
    code, out, err = run("run")
    assert code == 0
    assert "not JSON" in err and "attempt 1 of 3" in err
    assert len(usermaven.events) == 1
    attio.fail_next(3, kind="malformed", endpoint="records_query")
    workspace.move_deal(uid("d1"), "Lost", NOW.replace(minute=6))
    workspace.clock = NOW.replace(minute=7)
    code, out, err = run("run")
    assert code == 1 and "not JSON" in err and "3 times" in err


PROXY_SETTINGS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                  "no_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in PROXY_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_the_environment_names_the_proxy_and_the_ca_bundle(monkeypatch, no_proxy_settings, tmp_path):
    plain = make_pool("https://api.attio.com", RequestStats())
    assert not isinstance(plain, urllib3.ProxyManager) and plain.connection_pool_kw["ca_certs"] == certifi.where()
    system, corporate = tmp_path / "system.pem", tmp_path / "corporate.pem"
    for bundle in (system, corporate):
        bundle.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("SSL_CERT_FILE", str(system))
    proxied = make_pool("https://api.attio.com", RequestStats())
    assert isinstance(proxied, urllib3.ProxyManager) and proxied.proxy is not None
    assert proxied.proxy.host == "proxy.internal" and not proxied.proxy_headers
    assert proxied.connection_pool_kw["ca_certs"] == str(system)
    # requests' own settings first (a corporate CA given to requests keeps working), a directory as such
    monkeypatch.setenv("CURL_CA_BUNDLE", str(corporate))
    assert make_pool("https://api.attio.com", RequestStats()).connection_pool_kw["ca_certs"] == str(corporate)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))
    assert make_pool("https://api.attio.com", RequestStats()).connection_pool_kw["ca_cert_dir"] == str(tmp_path)
    monkeypatch.setenv("NO_PROXY", ".attio.com")
    assert not isinstance(make_pool("https://api.attio.com", RequestStats()), urllib3.ProxyManager)
    assert isinstance(make_pool("https://events.usermaven.com", RequestStats()), urllib3.ProxyManager)


@pytest.mark.parametrize("content", [None, b"not a certificate"])
def test_a_ca_bundle_that_is_missing_or_holds_no_certificate_is_a_configuration_error(run, env, monkeypatch,
                                                                                      no_proxy_settings, tmp_path,
                                                                                      content):
    """Found by a review: every request failed, retried for half a minute, as if Attio could not be reached."""
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    code, out, err = run("run")
    assert code == 2 and f"REQUESTS_CA_BUNDLE names {bundle}, which is not a readable bundle of CA certificates" in err
    assert not Path(env["SYNC_STATE_DB"]).exists()  # before the state is created, locked or pinged about


@pytest.mark.parametrize("proxy", ["http://alice:secret-pass@[::1", "http://alice:secret-pass@"])
def test_a_malformed_proxy_url_is_a_configuration_error_that_does_not_show_it(run, env, monkeypatch,
                                                                               no_proxy_settings, proxy):
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    code, out, err = run("run")
    assert code == 2 and "the proxy set for https in the environment is not a URL this program can read" in err
    assert "secret-pass" not in err and "internal error" not in err


def test_a_proxy_with_credentials_a_bare_host_or_all_proxy(monkeypatch, no_proxy_settings):
    """Found by a review: urllib3 does not send the credentials of a proxy URL by itself, and takes no
    `host:port`; requests did both."""
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:p%40ss@proxy.internal:3128")
    headers = make_pool("https://api.attio.com", RequestStats()).proxy_headers  # type: ignore[attr-defined]
    assert headers == {"proxy-authorization": "Basic " + base64.b64encode(b"alice:p@ss").decode()}
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")
    bare = make_pool("https://api.attio.com", RequestStats())
    assert isinstance(bare, urllib3.ProxyManager) and bare.proxy is not None and bare.proxy.scheme == "http"
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.internal:3128")
    assert isinstance(make_pool("https://api.attio.com", RequestStats()), urllib3.ProxyManager)


def test_a_socks_proxy_is_a_configuration_error(run, env, monkeypatch, no_proxy_settings, attio, mocked):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    code, out, err = run("run")
    assert code == 2 and "socks5 proxy, which this program cannot use" in err and "Traceback" not in err
    assert mocked.calls == []


def test_a_429_from_attio_slows_the_client_s_limiter(attio, workspace, usermaven, run, env, monkeypatch):
    """The server counted more than it allows in a second: the limiter widens its window, once for the 429s of
    that second (see tests/test_rate_limiter.py for the pace), rather than keep the margin that just failed."""
    from sync.attio import AttioClient

    limiters: list[tuple[RateLimiter, float]] = []
    init = AttioClient.__init__

    def keeping(self: AttioClient, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        limiters.append((self.limiter, self.limiter.window))

    monkeypatch.setattr(AttioClient, "__init__", keeping)
    attio.fail_next(2, status=429, endpoint="records_query")
    assert run("run")[0] == 0
    assert attio.stats["faults"] == 2
    ((limiter, first),) = limiters
    assert limiter.window == pytest.approx(first * 1.02)
