from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_core import Config, OpenAPI

from sync import cli, clock, http
from sync.config import SETTINGS
from sync.sandbox import AttioSandbox, UsermavenCollector, Workspace
from tests.inprocess import InProcess

BASE = "https://api.attio.test"
USERMAVEN_BASE = "https://events.usermaven.test"
EVENTS_URL = USERMAVEN_BASE + "/api/v1/s2s/event"
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
def mocked(monkeypatch: pytest.MonkeyPatch) -> InProcess:
    """urllib3 answered in-process by whatever a test serves (see tests/inprocess.py)."""
    inprocess = InProcess()
    inprocess.install(monkeypatch)
    return inprocess


def uid(name: str) -> str:
    """A stable id for a test's record, entry or person named ``name``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def days(n: float) -> timedelta:
    return timedelta(days=n)


@pytest.fixture
def attio(mocked, monkeypatch: pytest.MonkeyPatch) -> AttioSandbox:
    """An empty Attio workspace (the sandbox's), Attio's clock at NOW, served at BASE in-process.
    This machine's clock agrees with Attio's unless a test says otherwise."""
    sandbox = AttioSandbox(Workspace.empty(clock=NOW), token=SECRETS["ATTIO_API_KEY"], rate_limit=None)
    mocked.serve(BASE, sandbox)
    monkeypatch.setattr(clock, "local_now", sandbox.workspace.now)
    return sandbox


def add_deal(ws: Workspace, record_id: str, name: str, history: list[tuple[str, datetime]],
             people: Iterable[str] = (), company: str | None = None) -> str:
    """A deal worth 4,200 USD owned by the first member, through ``history`` (stage title, active_from)."""
    (stage, created), *moves = history
    ws.create_deal(name, stage, people=people, company=company, value=4200, at=created,
                   owner=ws.members[0].member_id, record_id=record_id)
    for stage, moment in moves:
        ws.move_deal(record_id, stage, moment)
    return record_id


def add_leads(ws: Workspace, prefix: str, count: int, days_back: int) -> list[str]:
    """`count` deals created in "Lead" one day apart, ending `days_back - count + 1` days ago, each with
    one person who has an email (added if missing); returns their ids."""
    if uid("p1") not in ws.people.items:
        ws.add_person("jane@acme.com", record_id=uid("p1"))
    return [
        add_deal(ws, uid(f"{prefix}{n}"), f"{prefix.upper()}{n}", [("Lead", ws.now() - days(days_back - n))],
                 people=[uid("p1")])
        for n in range(count)
    ]


def move_all(ws: Workspace, record_ids: Iterable[str], stage: str) -> None:
    """Ten minutes on, every one of these deals moves to `stage`; the clock then goes ten minutes further."""
    ws.clock += timedelta(minutes=10)
    for record_id in record_ids:
        ws.move_deal(record_id, stage)
    ws.clock += timedelta(minutes=10)


def queries(attio: AttioSandbox, identifier: str = "deals") -> list[dict[str, Any]]:
    """The bodies of the queries the sandbox received for one object or list."""
    return [q.body for q in attio.queries if q.identifier == identifier]


@pytest.fixture
def usermaven(mocked) -> UsermavenCollector:
    """The sandbox's Usermaven collector for the test secrets, served at EVENTS_URL in-process.

    Tests read ``batches`` (one list per accepted request, as sent) and ``events``, and script answers
    with ``answers``: (status, body) answers the next authenticated request, None lets it through.
    """
    collector = UsermavenCollector(api_key=SECRETS["USERMAVEN_API_KEY"],
                                   server_token=SECRETS["USERMAVEN_SERVER_TOKEN"])
    mocked.serve(USERMAVEN_BASE, collector)
    return collector


@pytest.fixture
def run(env, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def workspace(attio) -> Workspace:
    """Three deals with two years of history, one person each (emails), one company; d3 has no person."""
    ws = attio.workspace
    ws.add_person("jane@acme.com", record_id=uid("p1"))
    ws.add_person("bob@beta.io", user_id="app-user-42", record_id=uid("p2"))
    ws.add_company("Acme Inc", record_id=uid("c1"))
    add_deal(ws, uid("d1"), "Acme renewal", [("Lead", NOW - days(700)), ("Qualified", NOW - days(600))],
             people=[uid("p1")], company=uid("c1"))
    add_deal(ws, uid("d2"), "Beta pilot", [("Lead", NOW - days(400))], people=[uid("p2")])
    add_deal(ws, uid("d3"), "Gamma", [("Lead", NOW - days(10))])
    return ws


def resends_due(state_db: str | Path) -> None:
    """Time passes: every event waiting to be sent again (after a send that may have arrived) is due now."""
    import sqlite3

    if not Path(state_db).exists():
        return  # no run yet
    conn = sqlite3.connect(state_db)
    with conn:
        conn.execute("update ledger set retry_at = '2000-01-01T00:00:00.000000Z' where retry_at is not null")
    conn.close()


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


def _patch_every_schema(node: Any, patch: Callable[[dict], bool]) -> int:
    """Apply `patch` to every mapping in the spec, depth first; return how many it changed."""
    if isinstance(node, dict):
        return int(patch(node)) + sum(_patch_every_schema(child, patch) for child in node.values())
    if isinstance(node, list):
        return sum(_patch_every_schema(child, patch) for child in node)
    return 0


def allow_null_in_nullable_enums(node: Any) -> int:
    """Add null to every enum whose schema type allows null (quirk 1); return how many were patched."""

    def patch(schema: dict) -> bool:
        kinds, enum = schema.get("type"), schema.get("enum")
        if isinstance(kinds, list) and "null" in kinds and isinstance(enum, list) and None not in enum:
            enum.append(None)
            return True
        return False

    return _patch_every_schema(node, patch)


def timestamp_values_as_date_time(node: Any) -> int:
    """Declare every timestamp value's ``value`` a date-time, as the spec's own description and examples give it,
    instead of ``format: date`` (quirk 4); return how many were patched."""

    def patch(schema: dict) -> bool:
        properties = schema.get("properties")
        if isinstance(properties, dict) and (properties.get("attribute_type") or {}).get("enum") == ["timestamp"]:
            value = properties.get("value") or {}
            if value.get("format") == "date":
                value["format"] = "date-time"
                return True
        return False

    return _patch_every_schema(node, patch)


@pytest.fixture(scope="session")
def spec_dict() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.fail(f"Attio's OpenAPI spec is missing: {SPEC_PATH} (see tests/spec/README.md)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as file:
        spec = yaml.load(file, Loader=loader)
    assert allow_null_in_nullable_enums(spec) == 40, "the spec changed: review quirk 1"
    assert timestamp_values_as_date_time(spec) == 15, "the spec changed: review quirk 4"
    # The sandbox listens on a free loopback port, not api.attio.com.
    spec["servers"] = [{"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "80"}}}]
    return spec


@pytest.fixture(scope="session")
def openapi(spec_dict: dict[str, Any]) -> OpenAPI:
    # Validating the 1.7 MB spec itself takes seconds and is not what these tests are about.
    return OpenAPI.from_dict(spec_dict, config=Config(spec_validator_cls=None))
