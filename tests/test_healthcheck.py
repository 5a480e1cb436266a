"""SYNC_HEALTHCHECK_URL: start and finish pings as healthchecks.io and Cronitor expect, against a real
loopback server; a monitor that is down, slow or refusing never fails the run."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from sync.healthcheck import Healthcheck, is_cronitor
from sync.redact import Redactor

CHECK = "5f3b2c1a-0d9e-4c1b-9a77-1f2e3d4c5b6a"  # a ping key: as secret as the monitor


class Monitor:
    def __init__(self) -> None:
        self.pings: list[tuple[str, str, dict[str, list[str]], str]] = []  # method, path, query, body
        self.status = 200
        self.delay = 0.0
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                if parts.path.startswith("/moved/"):  # an old address of the monitor: redirected to the new
                    self.send_response(308)
                    self.send_header("Location", self.path.removeprefix("/moved"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                monitor.pings.append((self.command, parts.path, parse_qs(parts.query), body))
                time.sleep(monitor.delay)
                self.send_response(monitor.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor()
    yield m
    m.server.shutdown()
    m.server.server_close()


def test_healthchecks_io_start_then_success(monitor):
    check = Healthcheck(f"{monitor.url}/{CHECK}/", run_id="r1")
    assert check.start() and check.finish(0, "run: 3 event(s) sent")
    assert [(m, p, q) for m, p, q, _ in monitor.pings] == [
        ("GET", f"/{CHECK}/start", {"rid": ["r1"]}), ("POST", f"/{CHECK}/0", {"rid": ["r1"]})]
    assert monitor.pings[1][3] == "run: 3 event(s) sent"


def test_healthchecks_io_failure_carries_the_exit_code(monitor):
    check = Healthcheck(f"{monitor.url}/{CHECK}", run_id="r2")
    assert check.finish(1)
    assert [(m, p) for m, p, _, _ in monitor.pings] == [("GET", f"/{CHECK}/1")]


def test_cronitor_run_complete_and_fail_with_status_code(monitor, monkeypatch):
    monkeypatch.setattr("sync.healthcheck.is_cronitor", lambda url: True)
    check = Healthcheck(f"{monitor.url}/p/KEY/attio-sync", run_id="r3")
    assert check.start() and check.finish(0) and check.finish(75, "locked")
    states = [(p, q) for _, p, q, _ in monitor.pings]
    assert states == [
        ("/p/KEY/attio-sync", {"state": ["run"], "series": ["r3"]}),
        ("/p/KEY/attio-sync", {"state": ["complete"], "status_code": ["0"], "series": ["r3"]}),
        ("/p/KEY/attio-sync", {"state": ["fail"], "status_code": ["75"], "message": ["locked"], "series": ["r3"]}),
    ]


def test_cronitor_is_recognised_by_its_host():
    assert is_cronitor("https://cronitor.link/p/KEY/job") and not is_cronitor("https://hc-ping.com/uuid")


def test_the_message_is_redacted_before_it_leaves(monitor):
    check = Healthcheck(f"{monitor.url}/{CHECK}", run_id="r4", redactor=Redactor(["um_key9f8e7d6c5b"]))
    check.finish(1, "401 for token um_key9f8e7d6c5b")
    assert monitor.pings[0][3] == "401 for token ***"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["refused", "error status", "slow", "malformed url"])
def test_a_failed_ping_is_logged_without_the_url_and_never_raises(monitor, caplog, case):
    url = {"refused": f"http://127.0.0.1:{_closed_port()}/{CHECK}", "malformed url": f"http//nowhere/{CHECK}"}.get(
        case, f"{monitor.url}/{CHECK}")
    monitor.status = 500 if case == "error status" else 200
    monitor.delay = 1.0 if case == "slow" else 0.0
    check = Healthcheck(url, run_id="r5", timeout=0.2)
    caplog.set_level(logging.WARNING, logger="sync.healthcheck")
    began = time.monotonic()
    assert check.start() is False and check.finish(2, "boom") is False
    assert time.monotonic() - began < 5
    assert len(caplog.records) == 2 and all("the run goes on" in r.getMessage() for r in caplog.records)
    assert CHECK not in caplog.text


# -- around real runs of the CLI against the sandbox --


@pytest.fixture
def sandbox(tmp_path):
    from sync.sandbox import AttioSandbox, UsermavenCollector, Workspace
    from tests.test_integration import Setup

    workspace = Workspace.generate(seed=2, deals=30)
    with AttioSandbox(workspace) as attio, UsermavenCollector() as usermaven:
        yield Setup(workspace, attio, usermaven, tmp_path / "state" / "sync.db")


def test_runs_ping_start_and_their_exit_code_and_never_show_the_url(sandbox, monitor):
    s, url = sandbox, f"{monitor.url}/{CHECK}"
    first = s.cli("run", SYNC_HEALTHCHECK_URL=url)
    assert first.returncode == 0, first.stderr
    s.workspace.move_deal(s.workspace.deal_ids()[0], "Won 🎉")
    refused = s.cli("run", "-v", SYNC_HEALTHCHECK_URL=url, USERMAVEN_SERVER_TOKEN="wrong-token")
    assert refused.returncode == 1, refused.stderr
    pings = [(path, query["rid"][0]) for _, path, query, _ in monitor.pings]
    assert [p for p, _ in pings] == [f"/{CHECK}/start", f"/{CHECK}/0", f"/{CHECK}/start", f"/{CHECK}/1"]
    assert pings[0][1] == pings[1][1] != pings[2][1] == pings[3][1]  # one run id per run, a UUID
    assert "check USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN" in monitor.pings[3][3]
    assert "baseline recorded for 30 deals" in monitor.pings[1][3]
    for result in (first, refused):
        assert CHECK not in result.stderr


def test_a_key_in_the_ping_urls_query_never_reaches_a_verbose_log(sandbox, monitor):
    """A ping URL may carry its key in the query (`?auth_key=`): urllib3's request lines under -v show the path and
    the query, so the query's values are secrets too (found by a review)."""
    key = "cronitor-auth-key-98765"
    result = sandbox.cli("run", "-v", SYNC_HEALTHCHECK_URL=f"{monitor.url}/{CHECK}?auth_key={key}")
    assert result.returncode == 0, result.stderr
    assert [(path, query["auth_key"]) for _, path, query, _ in monitor.pings] == [
        (f"/{CHECK}/start", [key]), (f"/{CHECK}/0", [key])]  # the pings carried it, after their path
    assert "GET /***" in result.stderr  # urllib3's line for the start ping is in the log, masked
    assert key not in result.stderr and key not in result.stdout and CHECK not in result.stderr


@pytest.mark.parametrize("written, logged", [
    ("abc%2fdef12", "abc%2Fdef12"),  # urllib3 writes the escapes it finds in capitals
    ("ab%7ecd1234", "ab%7Ecd1234"),
    ("abc%2fdef12", "abc/def12"),  # decoded, in a message of its own
    ("plain-key-5678", "plain-key-5678"),
])
def test_each_value_of_the_ping_urls_query_is_masked_as_written_logged_or_decoded(written, logged):
    from sync.config import load_config

    env = {"ATTIO_API_KEY": "attio-key-123456", "USERMAVEN_API_KEY": "um-key-123456",
           "USERMAVEN_SERVER_TOKEN": "um-token-123456", "USERMAVEN_SITE_URL": "https://acme.example",
           "SYNC_HEALTHCHECK_URL": f"https://hc-ping.example/{CHECK}?create=1&auth_key={written}"}
    redact = Redactor(load_config(env).secrets)
    assert redact(f"GET /{CHECK}/start?create=1&auth_key={logged}&rid=r1") in (
        "GET /***/start?***&rid=r1", "GET /***/start?create=1&auth_key=***&rid=r1")  # the query whole, or its value
    assert redact(f"GET /{CHECK}/start?rid=r1&auth_key={logged}") == "GET /***/start?rid=r1&auth_key=***"
    assert redact(f"the key {logged} was refused") == "the key *** was refused"


def test_a_monitor_that_is_down_does_not_fail_the_run(sandbox):
    result = sandbox.cli("run", SYNC_HEALTHCHECK_URL=f"http://127.0.0.1:{_closed_port()}/{CHECK}")
    assert result.returncode == 0, result.stderr
    assert "healthcheck ping to http://127.0.0.1" in result.stderr and CHECK not in result.stderr


def test_a_run_skipped_for_the_lock_pings_nothing(sandbox, monitor):
    from sync.lock import StateLock

    sandbox.state.parent.mkdir(parents=True)
    with StateLock(sandbox.state):
        result = sandbox.cli("run", SYNC_HEALTHCHECK_URL=f"{monitor.url}/{CHECK}")
    assert result.returncode == 75 and monitor.pings == []


def test_a_malformed_healthcheck_url_is_a_configuration_error_that_does_not_echo_it(sandbox):
    result = sandbox.cli("run", SYNC_HEALTHCHECK_URL=f"hc-ping.com/{CHECK}")
    assert result.returncode == 2 and "SYNC_HEALTHCHECK_URL must be an http(s) URL" in result.stderr
    assert CHECK not in result.stderr


def test_only_the_poll_pings_not_a_backfill_or_replay_by_hand(sandbox, monitor):
    url = f"{monitor.url}/{CHECK}"
    assert sandbox.cli("run", "--backfill", "--since", "2024-01-01", SYNC_HEALTHCHECK_URL=url).returncode == 0
    assert sandbox.cli("replay", sandbox.workspace.deal_ids()[0], SYNC_HEALTHCHECK_URL=url).returncode == 0
    assert sandbox.cli("run", "--dry-run", SYNC_HEALTHCHECK_URL=url).returncode == 0
    assert monitor.pings == []


def test_a_password_in_the_ping_url_never_reaches_the_log(caplog):
    url = f"http://monitor:hcpass123@127.0.0.1:{_closed_port()}/{CHECK}"
    caplog.set_level(logging.WARNING, logger="sync.healthcheck")
    assert Healthcheck(url, run_id="r6", timeout=0.2).start() is False
    assert "hcpass123" not in caplog.text and "monitor:" not in caplog.text and "127.0.0.1" in caplog.text


def test_the_ping_urls_password_is_one_of_the_secrets(monkeypatch):
    from sync.config import load_config

    env = {"ATTIO_API_KEY": "attio-key-123456", "USERMAVEN_API_KEY": "um-key-123456",
           "USERMAVEN_SERVER_TOKEN": "um-token-123456", "USERMAVEN_SITE_URL": "https://acme.example",
           "SYNC_HEALTHCHECK_URL": "https://monitor:hcpass123@hc-ping.example/abc-def"}
    assert "hcpass123" in load_config(env).secrets


def test_a_ping_follows_a_redirect(monitor):
    """Found by a review: with urllib3 and no retries, one redirect counted as too many."""
    check = Healthcheck(f"{monitor.url}/moved/{CHECK}", run_id="r9")
    assert check.start() is True and check.finish(0, "all good") is True
    assert [(m, p) for m, p, _, _ in monitor.pings] == [("GET", f"/{CHECK}/start"), ("POST", f"/{CHECK}/0")]
    assert monitor.pings[1][3] == "all good"
