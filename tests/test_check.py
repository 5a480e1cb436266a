"""`check`: one report before the first run, each failure saying what to fix; and the canary test event."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from sync.sandbox import AttioSandbox, UsermavenCollector, Workspace
from sync.sandbox.server import Reply
from tests.test_integration import Setup


@pytest.fixture
def sandbox(tmp_path):
    workspace = Workspace.generate(seed=4, deals=25)
    with AttioSandbox(workspace) as attio, UsermavenCollector() as usermaven:
        yield Setup(workspace, attio, usermaven, tmp_path / "state" / "sync.db")


def _token_scopes(attio: AttioSandbox, scope: str | None = None, active: bool = True) -> None:
    """Let the sandbox's /v2/self answer for a token with other scopes, or an inactive one."""
    answer = attio.dispatch

    def dispatch(request):  # type: ignore[no-untyped-def]
        reply = answer(request)
        if request.path == "/v2/self":
            body = json.loads(reply.body)
            body = {**body, "scope": scope if scope is not None else body["scope"]} if active else {"active": False}
            return Reply(reply.status, json.dumps(body).encode(), headers=reply.headers)
        return reply

    attio.dispatch = dispatch  # type: ignore[method-assign]


def test_check_reports_token_workspace_scopes_attribute_stages_and_state(sandbox):
    s = sandbox
    result = s.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ok    Attio token" in out and repr(s.workspace.workspace_name) in out
    for scope in ("record_permission:read", "object_configuration:read", "user_management:read"):
        assert f"ok    scope {scope}" in out
    assert "list_entry:read" not in out  # not needed without a list
    assert "ok    stage attribute" in out and "deals.stage is a status attribute" in out
    for status in s.workspace.statuses:
        line = f"  {status.status_id}  {status.title}" + ("  (archived)" if status.is_archived else "")
        assert line in out.splitlines()
    assert re.search(r"ok    user id attribute +people.app_user_id exists", out)
    assert "will be created by the first run" in out and out.rstrip().endswith("checks passed.")
    assert not s.state.exists() and not s.state.parent.exists()  # check creates nothing


def test_each_failure_says_what_to_fix_and_exits_2(sandbox, tmp_path):
    s = sandbox
    _token_scopes(s.attio, scope="record_permission:read")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = s.cli("check", ATTIO_STAGE_ATTRIBUTE="name", ATTIO_USER_ID_ATTRIBUTE="no_such_attribute",
                   SYNC_STATE_DB=str(blocker / "sync.db"))
    assert result.returncode == 2
    out = result.stdout
    assert re.search(r"FAIL  scope object_configuration:read +not granted", out)
    assert re.search(r"FAIL  scope user_management:read +not granted: edit the token's scopes in Attio", out)
    assert "ok    scope record_permission:read" in out
    assert "FAIL  stage attribute" in out and "not a status: set it to one of its status attributes: stage" in out
    assert "FAIL  user id attribute" in out and "leave it unset to use emails" in out
    assert "FAIL  state" in out and "set --state or SYNC_STATE_DB" in out
    assert "5 of 8 checks failed: fix what they say" in out
    assert s.attio.token not in out + result.stderr


def test_list_pipelines_need_the_list_scopes_and_an_existing_list(sandbox):
    s = sandbox
    result = s.cli("check", ATTIO_LIST="no_such_list")
    assert result.returncode == 2
    assert "ok    scope list_entry:read" in result.stdout
    assert "FAIL  ATTIO_LIST" in result.stdout and "there is no list 'no_such_list'" in result.stdout
    result = s.cli("check", ATTIO_LIST="sales_pipeline")
    assert result.returncode == 0 and "ok    list's object" in result.stdout
    # a list of deals with ATTIO_OBJECT set to another object: `run` would hold every event
    result = s.cli("check", ATTIO_LIST="sales_pipeline", ATTIO_OBJECT="companies")
    assert result.returncode == 2
    assert "FAIL  list's object" in result.stdout and "set ATTIO_OBJECT=deals" in result.stdout


def test_an_inactive_or_refused_token_is_the_first_failure(sandbox):
    s = sandbox
    refused = s.cli("check", ATTIO_API_KEY="wrong-attio-token")
    assert refused.returncode == 2 and "FAIL  Attio token" in refused.stdout
    assert "check ATTIO_API_KEY" in refused.stdout and "Traceback" not in refused.stderr
    _token_scopes(s.attio, active=False)
    inactive = s.cli("check")
    assert inactive.returncode == 2 and "is not active: create a new access token" in inactive.stdout


def test_test_event_lands_with_its_own_type_a_fresh_id_and_the_time_asked(sandbox):
    s = sandbox
    result = s.cli("check", "--send-test-event", "--at", "2025-06-01T10:00:00Z")
    assert result.returncode == 0, result.stdout + result.stderr
    [event] = s.usermaven.events
    assert event["event_type"] == "attio-usermaven-sync test" and event["user"]["id"] == "attio-usermaven-sync-test"
    assert event["_timestamp"] == int(datetime(2025, 6, 1, 10, tzinfo=UTC).timestamp() * 1000)
    assert event["url"] == "https://it.example"
    assert f"event id  {event['event_id']}" in result.stdout
    assert "one event at 2025-06-01 10:00 UTC" in result.stdout and "do not backfill" in result.stdout
    again = s.cli("check", "--send-test-event")
    assert again.returncode == 0
    second = s.usermaven.events[1]
    assert second["event_id"] != event["event_id"]  # a fresh id each time
    day_ago = datetime.now(UTC) - timedelta(days=1)
    assert abs(second["_timestamp"] / 1000 - day_ago.timestamp()) < 120  # default: a day ago
    assert s.usermaven.server_token not in result.stdout + result.stderr


def test_resend_sends_the_same_id_again(sandbox):
    s = sandbox
    missing = s.cli("check", "--send-test-event", "--resend")
    assert missing.returncode == 2 and "send one first" in missing.stderr
    assert s.cli("check", "--send-test-event").returncode == 0
    result = s.cli("check", "--send-test-event", "--resend")
    assert result.returncode == 0, result.stderr
    first, second = s.usermaven.events
    assert first == second  # the same event, id and time, sent twice
    assert "sent 2 times now" in result.stdout


def test_test_event_refused_by_usermaven_exits_1_with_what_to_check(sandbox):
    result = sandbox.cli("check", "--send-test-event", USERMAVEN_SERVER_TOKEN="wrong-token")
    assert result.returncode == 1 and "check USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_at_and_resend_need_send_test_event(sandbox):
    result = sandbox.cli("check", "--at", "2025-01-01")
    assert result.returncode == 2 and "--at and --resend go with --send-test-event" in result.stderr


def test_send_test_event_has_no_dry_run_and_sends_nothing(sandbox):
    result = sandbox.cli("check", "--send-test-event", "--dry-run")
    assert result.returncode == 2 and "--send-test-event sends a real event, so it has no --dry-run" in result.stderr
    assert sandbox.usermaven.events == [] and not sandbox.state.exists()


def test_check_fails_on_a_state_path_the_sync_cannot_use(sandbox):
    sandbox.state.parent.mkdir(parents=True)
    sandbox.state.write_bytes(b"not a database, just some bytes" * 100)
    damaged = sandbox.cli("check")
    assert damaged.returncode == 2
    assert "FAIL  state" in damaged.stdout and "is not a readable SQLite database" in damaged.stdout
    sandbox.state.unlink()
    sandbox.state.mkdir()
    folder = sandbox.cli("check")
    assert folder.returncode == 2 and "is a folder: give --state or SYNC_STATE_DB a file name" in folder.stderr


def test_check_says_it_does_not_contact_usermaven(sandbox):
    result = sandbox.cli("check")
    assert "Usermaven is not contacted by `check`: `check --send-test-event` checks" in result.stdout


def test_event_attributes_and_stage_event_types_are_checked_as_run_checks_them(sandbox):
    s = sandbox
    won = s.workspace.status_id("Won 🎉")
    result = s.cli("check", ATTIO_EVENT_ATTRIBUTES="owner,value", USERMAVEN_STAGE_EVENT_TYPES=f"{won}=Deal Won;Lost=L")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"ok    event attributes +owner \(actor-reference\), value \(currency\)", result.stdout)
    assert re.search(r"ok    stage event types +2 stage\(s\) sent under their own event type", result.stdout)
    result = s.cli("check", ATTIO_EVENT_ATTRIBUTES="owner,lead_sorce,source", USERMAVEN_STAGE_EVENT_TYPES="Won=W")
    assert result.returncode == 2
    out = result.stdout
    assert "FAIL  event attributes" in out
    assert "ATTIO_EVENT_ATTRIBUTES: 'lead_sorce' is not an attribute of the object 'deals'" in out
    assert "ATTIO_EVENT_ATTRIBUTES: 'source' is not an attribute" in out
    assert "FAIL  stage event types" in out and "USERMAVEN_STAGE_EVENT_TYPES names 'Won', not a stage" in out
    assert "3 of " in out and "checks failed" in out
