from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import responses
import yaml
from openapi_core import Config, OpenAPI

from sync import cli, http
from sync.config import SETTINGS
from tests.attio_shapes import BASE, FakeAttio, FakeDeal, FakePerson, days, uid

EVENTS_URL = "https://events.usermaven.test/api/v1/s2s/event"
SECRETS = {
    "ATTIO_API_KEY": "attio_secret_a1b2c3d4e5",
    "USERMAVEN_API_KEY": "um_key9f8e7d6c5b",
    "USERMAVEN_SERVER_TOKEN": "st_token4a5b6c7d8e",
}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "BACKOFF_FACTOR", 0)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict[str, str]:
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    values = {
        **SECRETS,
        "ATTIO_BASE_URL": BASE,
        "USERMAVEN_EVENTS_URL": EVENTS_URL,
        "USERMAVEN_SITE_URL": "https://acme.example",
        "SYNC_STATE_DB": str(tmp_path / "state" / "sync.db"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def attio(mocked) -> FakeAttio:
    return FakeAttio(mocked, clock=NOW)


class Collector:
    """Usermaven's s2s endpoint through `responses`: checks the token, records each batch."""

    def __init__(self, mock: responses.RequestsMock):
        self.batches: list[list[dict]] = []
        self.answers: list[tuple[int, dict] | None] = []  # queued answers, one per request; None = accept
        mock.add_callback("POST", EVENTS_URL, self._receive)

    @property
    def events(self) -> list[dict]:
        return [event for batch in self.batches for event in batch]

    def _receive(self, request):  # type: ignore[no-untyped-def]
        token = parse_qs(urlparse(request.url).query).get("token", [""])[0]
        if token != f"{SECRETS['USERMAVEN_API_KEY']}.{SECRETS['USERMAVEN_SERVER_TOKEN']}":
            return 401, {}, json.dumps({"message": "unknown token", "error": ""})
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            status, body = answer
            return status, {}, json.dumps(body)
        self.batches.append(json.loads(request.body))
        return 200, {}, json.dumps({"status": "ok"})


@pytest.fixture
def usermaven(mocked) -> Collector:
    return Collector(mocked)


@pytest.fixture
def run(env, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def workspace(attio):
    """Three deals with two years of history, one person each (emails), one company."""
    attio.people[uid("p1")] = FakePerson(uid("p1"), ["jane@acme.com"])
    attio.people[uid("p2")] = FakePerson(uid("p2"), ["bob@beta.io"], user_id="app-user-42")
    attio.companies[uid("c1")] = "Acme Inc"
    attio.add_deal(FakeDeal(uid("d1"), "Acme renewal", NOW - days(700),
                            [("Lead", NOW - days(700)), ("Qualified", NOW - days(600))],
                            people=[uid("p1")], company=uid("c1")))
    attio.add_deal(FakeDeal(uid("d2"), "Beta pilot", NOW - days(400), [("Lead", NOW - days(400))],
                            people=[uid("p2")]))
    attio.add_deal(FakeDeal(uid("d3"), "Gamma", NOW - days(10), [("Lead", NOW - days(10))], people=[]))
    return attio


def ledger_rows(env) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("select * from ledger order by changed_at, event_id")]
    finally:
        conn.close()


# ---- Attio's OpenAPI spec, shared by the contract and integration tests ----

# Vendored, unchanged: where it comes from and when is in tests/spec/README.md.
SPEC_PATH = Path(__file__).resolve().parent / "spec" / "attio-openapi.yaml"


def allow_null_in_nullable_enums(node: Any) -> int:
    """Add null to every enum whose schema type allows null (quirk 1); return how many were patched."""
    patched = 0
    if isinstance(node, dict):
        kinds, enum = node.get("type"), node.get("enum")
        if isinstance(kinds, list) and "null" in kinds and isinstance(enum, list) and None not in enum:
            enum.append(None)
            patched += 1
        for child in node.values():
            patched += allow_null_in_nullable_enums(child)
    elif isinstance(node, list):
        for child in node:
            patched += allow_null_in_nullable_enums(child)
    return patched


@pytest.fixture(scope="session")
def spec_dict() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.fail(f"Attio's OpenAPI spec is missing: {SPEC_PATH} (see tests/spec/README.md)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as file:
        spec = yaml.load(file, Loader=loader)
    assert allow_null_in_nullable_enums(spec) == 40, "the spec changed: review quirk 1"
    # The sandbox listens on a free loopback port, not api.attio.com.
    spec["servers"] = [{"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "80"}}}]
    return spec


@pytest.fixture(scope="session")
def openapi(spec_dict: dict[str, Any]) -> OpenAPI:
    # Validating the 1.7 MB spec itself takes seconds and is not what these tests are about.
    return OpenAPI.from_dict(spec_dict, config=Config(spec_validator_cls=None))
