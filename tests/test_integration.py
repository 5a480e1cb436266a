"""The real CLI, in a subprocess, against the sandbox's Attio and Usermaven servers on loopback."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync import backfill, source
from sync.config import SETTINGS
from sync.models import DealRef, StageValue, parse_time
from sync.sandbox import AttioSandbox, Faults, UsermavenCollector, Workspace
from sync.transitions import event_id
from tests.conftest import resends_due

SINCE = "2020-01-01"


class Setup:
    def __init__(self, workspace: Workspace, attio: AttioSandbox, usermaven: UsermavenCollector, state: Path):
        self.workspace, self.attio, self.usermaven, self.state = workspace, attio, usermaven, state

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
        env.update({
            "ATTIO_BASE_URL": self.attio.url, "ATTIO_API_KEY": self.attio.token,
            "ATTIO_USER_ID_ATTRIBUTE": "app_user_id", "ATTIO_MAX_RPS": "90",
            "USERMAVEN_EVENTS_URL": self.usermaven.events_url, "USERMAVEN_API_KEY": self.usermaven.api_key,
            "USERMAVEN_SERVER_TOKEN": self.usermaven.server_token, "USERMAVEN_SITE_URL": "https://it.example",
            "SYNC_STATE_DB": str(self.state), **extra,
        })
        return env

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sync", *args], env=self.env(**extra), capture_output=True,
                              text=True, timeout=120)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "sync", *args], env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def ledger(self) -> list[dict]:
        conn = sqlite3.connect(self.state)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("select * from ledger")]
        finally:
            conn.close()

    def sent_keys(self) -> list[tuple]:
        return [(e["event_attributes"]["deal_id"], e["event_attributes"]["deal_stage"],
                 parse_time(e["event_attributes"]["stage_changed_at"])) for e in self.usermaven.events]

    def recorded_keys(self) -> set[tuple]:
        """Every transition in the ledger, as (record id, to status id, time)."""
        return {(r["record_id"], r["to_stage_id"], parse_time(r["changed_at"])) for r in self.ledger()}

    def held_keys(self) -> set[tuple]:
        return {(r["record_id"], r["to_stage_id"], parse_time(r["changed_at"]))
                for r in self.ledger() if r["state"] == "held"}


def expected(workspace: Workspace, since: datetime | None = None) -> set[tuple]:
    return {(t.record_id, t.to_status_id, t.active_from) for t in workspace.expected_transitions(since=since)}


@pytest.fixture
def sandbox(tmp_path, openapi):
    workspace = Workspace.generate(seed=11, deals=120)
    with AttioSandbox(workspace, rate_limit=100) as attio, \
            UsermavenCollector(jsonl_path=tmp_path / "events.jsonl") as usermaven:
        exchanges, host = record_exchanges(attio), attio.url
        yield Setup(workspace, attio, usermaven, tmp_path / "state" / "sync.db")
    assert_exchanges_match_the_spec(openapi, exchanges, host)


def record_exchanges(attio: AttioSandbox) -> list[tuple]:
    """Keep every (request, reply) the sandbox answers while the real CLI talks to it."""
    exchanges: list[tuple] = []
    answer = attio.dispatch

    def dispatch(request):  # type: ignore[no-untyped-def]
        reply = answer(request)
        exchanges.append((request, reply))
        return reply

    attio.dispatch = dispatch  # type: ignore[method-assign]
    return exchanges


def assert_exchanges_match_the_spec(openapi, exchanges: list[tuple], host: str, per_kind: int = 5) -> None:
    """What the sync sent and what the sandbox answered, checked against Attio's OpenAPI spec: the first
    few of each kind of request (method, path shape, status). 429s and injected 5xx faults are not in the
    spec (test_sandbox_contract checks them against the documented shapes); admin calls are not Attio's."""
    from openapi_core.testing import MockRequest, MockResponse

    seen: dict[tuple, int] = {}
    checked = 0
    for request, reply in exchanges:
        if request.path.startswith("/_sandbox/") or reply.drop or reply.status in (429, 500, 502, 503):
            continue
        shape = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", request.path)
        key = (request.method, shape, reply.status)
        if seen.get(key, 0) >= per_kind:
            continue
        try:
            json.loads(reply.body)
        except ValueError:
            continue  # an injected malformed body
        seen[key] = seen.get(key, 0) + 1
        args = {name: values[0] for name, values in request.query.items()}
        mock_request = MockRequest(host, request.method, request.path, args=args,
                                   headers=dict(request.headers), data=request.body or None)
        mock_response = MockResponse(reply.body, status_code=reply.status, headers=reply.headers,
                                     content_type="application/json")
        if reply.status < 300:
            openapi.validate_request(mock_request)
        openapi.validate_response(mock_request, mock_response)
        checked += 1
    assert checked > 0 or not exchanges


def assert_everything_delivered_once(s: Setup, since: datetime | None = None, resends: int = 0) -> None:
    """Every transition recorded, and delivered once — counting what Usermaven received, not distinct ids —
    or at most `resends` more times (one per run that may have left a batch half-delivered)."""
    want = expected(s.workspace, since)
    assert s.recorded_keys() == want
    delivered = Counter((e["event_attributes"]["deal_id"], parse_time(e["event_attributes"]["stage_changed_at"]))
                        for e in s.usermaven.events)
    assert set(delivered) == {(record, at) for record, _, at in want - s.held_keys()}
    assert max(delivered.values(), default=1) <= 1 + resends, delivered.most_common(3)
    assert {r["state"] for r in s.ledger()} <= {"sent", "held"}


def test_baseline_then_changes_then_poll(sandbox):
    s = sandbox
    first = s.cli("run")
    assert first.returncode == 0, first.stderr
    assert "baseline recorded for 120 deals" in first.stderr
    assert s.usermaven.events == []
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    deals = s.workspace.deal_ids()
    s.workspace.move_deal(deals[0], "Won 🎉")
    s.workspace.move_deal(deals[1], "Lost")
    s.workspace.move_deal(deals[1], "Qualified")
    current = s.workspace.stage_history(deals[2])[-1]["status"]["title"]
    s.workspace.move_deal(deals[2], "Demo" if current != "Demo" else "Lead")
    s.workspace.move_deal(deals[2], current)  # A → B → A
    person = s.workspace.add_person(email="new.lead@example.org")
    s.workspace.create_deal("Brand new", "Lead", people=[person])
    result = s.cli("run")
    assert result.returncode == 0, result.stderr
    assert s.recorded_keys() == expected(s.workspace, before)
    assert len(s.recorded_keys()) == 6
    assert len(s.usermaven.events) == 6 - len(s.held_keys())
    again = s.cli("run")
    assert again.returncode == 0 and len(s.usermaven.events) == 6 - len(s.held_keys())


def test_backfill_then_poll_sends_nothing_twice(sandbox):
    s = sandbox
    result = s.cli("run", "--backfill", "--since", SINCE)
    assert result.returncode == 0, result.stderr
    assert s.attio.stats["rate_limited"] == 0  # one process: ATTIO_MAX_RPS 90 under the server's 100
    assert_everything_delivered_once(s)
    count = len(s.usermaven.events)
    assert len(s.usermaven.unique_events()) == count  # no event id arrived twice
    for _ in range(2):
        assert s.cli("run").returncode == 0
        assert s.cli("run", "--backfill", "--since", SINCE).returncode == 0
    assert len(s.usermaven.events) == count
    # Not asserted here: no 429. Each run is a process with a limiter of its own, and runs started back to back can
    # together pass the server's count within one second (one's last second and the next one's first): a 429 is
    # then retried, which is what a rate limit shared with other clients does too. Within one process the limiter
    # is tested in test_rate_limiter.py, and against the sandbox by the benchmark's 429 column.


def test_faults_on_both_sides_end_with_everything_delivered(sandbox):
    s = sandbox
    s.attio.faults = Faults(error_rate=0.08, drop_rate=0.02, malformed_rate=0.02, timeout_rate=0.01,
                            timeout_seconds=3, seed=3)
    s.usermaven.faults = Faults(error_rate=0.3, drop_rate=0.05, timeout_rate=0.05, timeout_seconds=3, seed=4)
    # An operator re-runs what failed: the backfill until it completes, then the polls.
    codes = []
    for command in (("run", "--backfill", "--since", SINCE), ("run",)):
        if command == ("run",):
            s.workspace.move_deal(s.workspace.deal_ids()[5], "Won 🎉")
        for _ in range(15):
            resends_due(s.state)  # the operator re-runs it later: what may have arrived is due to be sent again
            before = len(s.usermaven.events)
            codes.append(s.cli(*command, SYNC_HTTP_TIMEOUT="1").returncode)
            in_this_run = [e["event_id"] for e in s.usermaven.events[before:]]
            assert len(in_this_run) == len(set(in_this_run))  # no event POSTed twice in one run
            if codes[-1] == 0:
                break
        assert codes[-1] == 0
    assert set(codes) <= {0, 1}
    assert s.attio.stats["faults"] > 0 and s.usermaven.stats["faults"] > 0
    # A batch Usermaven took but answered too late is sent again by the next run, and only then.
    assert_everything_delivered_once(s, resends=codes.count(1))


# Seeded kill -9 trials: a few in every run of the suite, more with SYNC_CRASH_TRIALS=200 (about 7 s each).
CRASH_TRIALS = int(os.environ.get("SYNC_CRASH_TRIALS", "3"))


def run_with_kills(s: Setup, rng: random.Random, args: tuple[str, ...], kills: int, reads: int,
                   **extra: str) -> int:
    """Start the command and kill -9 it at a random moment, up to `kills` times, then run it to the end (a run
    that ends before its moment is that end). Returns how many kills landed. `reads`: about how many Attio
    requests the command makes, to spread the moments over its whole run."""
    landed = 0
    for _ in range(kills):
        attio_before, usermaven_before = s.attio.stats["requests"], s.usermaven.requests
        # the moment: after a random number of Attio requests, or of Usermaven batches (to land between a
        # 200 and its commit), then a random few milliseconds more
        on_usermaven = rng.random() < 0.4
        after = rng.randint(1, 3) if on_usermaven else rng.randint(1, reads)
        lag = rng.uniform(0, 0.04)
        process = subprocess.Popen([sys.executable, "-m", "sync", *args], env=s.env(**extra),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            done = (s.usermaven.requests - usermaven_before if on_usermaven
                    else s.attio.stats["requests"] - attio_before)
            if done >= after:
                break
            time.sleep(0.002)
        time.sleep(lag)
        if process.poll() is not None:
            assert process.wait() == 0
            return landed
        process.send_signal(signal.SIGKILL)
        process.wait()
        landed += 1
    result = s.cli(*args, **extra)
    assert result.returncode == 0, result.stderr
    return landed


def truth_ids(workspace: Workspace) -> set[str]:
    """The event id of every transition in the workspace, from the sandbox's own record of its history."""
    object_id, attribute_id = workspace.deals.id, workspace.stage_attribute.attribute_id
    return {event_id(DealRef(t.record_id), StageValue(t.to_status_id, "", t.active_from, attribute_id, object_id))
            for t in workspace.expected_transitions()}


@pytest.mark.parametrize("trial", range(CRASH_TRIALS))
def test_kill_9_at_random_moments_loses_nothing_and_resends_no_more_than_once_per_kill(tmp_path, trial):
    rng = random.Random(trial)  # a failing trial is replayed by its number
    workspace = Workspace.generate(seed=1000 + trial, deals=rng.randint(60, 160))
    # Attio's clock, fixed and a little behind this machine's (the checkpoints follow it), so that the poll
    # below can run after its overlap has passed the moves.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    workspace.clock = start
    # Usermaven answers 20 ms after it records a batch: room for a kill between its 200 and the commit.
    with AttioSandbox(workspace, rate_limit=None) as attio, UsermavenCollector(latency=0.02) as usermaven:
        s = Setup(workspace, attio, usermaven, tmp_path / "sync.db")
        deals = workspace.deal_ids()
        kills = run_with_kills(s, rng, ("run", "--backfill", "--since", SINCE), rng.randint(1, 3), len(deals))
        # A resumed backfill does not read finished deals again: only, per kill, the batch being committed, the
        # next one (its events are built ahead) and the read-ahead window.
        window = max(2 * 48, math.ceil(50 * source.READ_AHEAD_SECONDS))  # default ATTIO_CONCURRENCY and MAX_RPS
        assert attio.stats["by_kind"]["record_values"] <= len(deals) + kills * (2 * backfill.BATCH + window)
        workspace.clock = start + timedelta(minutes=2)
        moved = rng.sample(deals, rng.randint(1, len(deals) // 2))
        for record_id in moved:
            for _ in range(rng.randint(1, 2)):
                current = workspace.stage_history(record_id)[-1]["status"]["title"]
                workspace.move_deal(record_id, rng.choice([t for t in ("Lead", "Qualified", "Demo", "Won 🎉", "Lost")
                                                           if t != current]))
        person = workspace.add_person(email=f"trial{trial}@example.org")
        workspace.create_deal("Created between runs", "Lead", people=[person])
        # The poll's overlap (a minute) ends after the moves: only the checkpoint keeps them in view.
        workspace.clock = start + timedelta(minutes=5)
        kills += run_with_kills(s, rng, ("run",), rng.randint(1, 3), len(moved) + 5, SYNC_OVERLAP_SECONDS="60")
        raw = Counter(e["event_id"] for e in usermaven.events)  # every delivery, resends included
        held = {r["event_id"] for r in s.ledger() if r["state"] == "held"}
        assert {r["event_id"] for r in s.ledger()} == truth_ids(workspace), f"trial {trial}"
        assert set(raw) == truth_ids(workspace) - held, f"trial {trial}"
        assert {r["state"] for r in s.ledger()} <= {"sent", "held"}
        assert max(raw.values()) - 1 <= kills, f"trial {trial}: an event resent more often than the {kills} kill(s)"


def test_list_pipeline_backfill_poll_and_replay(sandbox):
    s = sandbox
    twice = next(r for r in s.workspace.deal_ids() if len(s.workspace.entry_ids(r)) == 2)
    s.workspace.set_deal_people(twice, [s.workspace.add_person(email="two.entries@example.org")])
    result = s.cli("run", "--backfill", "--since", SINCE, ATTIO_LIST="sales_pipeline")
    assert result.returncode == 0, result.stderr
    want = {(t.entry_id, t.to_status_id, t.active_from) for t in s.workspace.expected_entry_transitions()}
    got = {(r["entry_id"], r["to_stage_id"], parse_time(r["changed_at"])) for r in s.ledger()}
    assert got == want and len(want) > 0
    entry = s.workspace.entry_ids(twice)[0]
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    current = s.workspace.entry_history(entry)[-1]["status"]["title"]
    s.workspace.move_entry(entry, "Lost" if current != "Lost" else "Lead")
    assert s.cli("run", ATTIO_LIST="sales_pipeline").returncode == 0
    moved = [e for e in s.usermaven.events if parse_time(e["event_attributes"]["stage_changed_at"]) >= before]
    assert [e["event_attributes"]["entry_id"] for e in moved] == [entry]
    sent_before = len(s.usermaven.events)
    result = s.cli("replay", twice, ATTIO_LIST="sales_pipeline")
    assert result.returncode == 0, result.stderr
    replayed = s.usermaven.events[sent_before:]
    mine = [t for t in s.workspace.expected_entry_transitions() if t.entry_id in s.workspace.entry_ids(twice)]
    assert sorted((e["event_attributes"]["entry_id"], parse_time(e["event_attributes"]["stage_changed_at"]))
                  for e in replayed) == sorted((t.entry_id, t.active_from) for t in mine)
    assert {e["event_attributes"]["deal_id"] for e in replayed} == {twice}
    assert {e["user"]["id"] for e in replayed} == {"two.entries@example.org"}
    # a replay resends with the original ids: Usermaven ends with one event per transition
    assert {e["event_id"] for e in replayed} <= {e["event_id"] for e in s.usermaven.events[:sent_before]}


def _wait_for(condition, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)


def test_schedule_polls_at_once_then_stops_cleanly_on_sigterm(sandbox):
    s = sandbox
    process = s.popen("schedule", "--every", "10s")
    _wait_for(lambda: s.state.exists() and _runs(s.state))
    time.sleep(0.3)  # the tick's last line, with the next poll's time, comes after the run is recorded
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "polling every 10s" in err and "baseline recorded for 120 deals" in err
    assert re.search(r"poll ended with exit code 0; next poll at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", err)
    assert "stopping the schedule (SIGTERM)" in err
    assert [r[0] for r in _runs(s.state)] == ["run"]


def test_schedule_stopped_by_ctrl_c_mid_poll_finishes_the_poll_and_exits_130(sandbox):
    s = sandbox
    s.attio.latency = 0.2  # a poll of several requests: long enough to be stopped half way
    process = s.popen("schedule", "--every", "1h")
    _wait_for(lambda: s.state.exists() and _started_runs(s.state))
    assert not _runs(s.state), "the poll finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopping the schedule (SIGINT); the poll in progress finishes first" in err
    assert _runs(s.state) == [("run", 0)]
    assert "Traceback" not in err


def test_schedule_tick_that_finds_the_lock_held_says_so_and_goes_on(sandbox):
    from sync.lock import StateLock

    s = sandbox
    s.state.parent.mkdir(parents=True)
    with StateLock(s.state):
        process = s.popen("schedule", "--every", "10s")
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "another run holds the lock" in err and "poll ended with exit code 75" in err
    assert "Traceback" not in err


def _started_runs(state: Path) -> list[tuple]:
    conn = sqlite3.connect(state)
    try:
        return conn.execute("select command from runs").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _runs(state: Path) -> list[tuple]:
    conn = sqlite3.connect(state)
    try:
        return conn.execute("select command, exit_code from runs where finished_at is not null").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_schedule_rejects_a_too_short_interval(sandbox):
    result = sandbox.cli("schedule", "--every", "1")
    assert result.returncode == 2 and "--every must be at least 10 seconds" in result.stderr


def test_dry_run_piped_into_head_stops_quietly(sandbox):
    s = sandbox
    command = (f"{sys.executable} -m sync run --backfill --since {SINCE} --dry-run | head -n 2")
    result = subprocess.run(command, shell=True, env=s.env(), capture_output=True, text=True, timeout=120)
    assert len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "the output was closed before every event was printed" in result.stderr
    # what it wrote before `head` closed the pipe: at least the two lines head printed, not 0
    assert int(re.search(r"(\d+) event\(s\) printed", result.stderr).group(1)) >= 2
    assert s.usermaven.events == []


def test_event_fields_and_deal_attributes_from_the_sandbox(sandbox):
    """Deal attributes rendered from the sandbox's spec-shaped records (the name lookups are checked against
    the spec with the rest), stage ids, first entry into a stage, time in the previous stage, utc_time."""
    s = sandbox
    won = s.workspace.status_id("Won 🎉")
    result = s.cli("run", "--backfill", "--since", SINCE,
                   ATTIO_EVENT_ATTRIBUTES="owner,associated_company,associated_people,value",
                   USERMAVEN_STAGE_EVENT_TYPES=f"{won}=Deal Won")
    assert result.returncode == 0, result.stderr
    events = s.usermaven.unique_events()
    assert events
    history: dict[str, list[tuple[str, datetime]]] = {}
    for t in sorted(s.workspace.expected_transitions(), key=lambda t: t.active_from):
        history.setdefault(t.record_id, []).append((t.to_status_id, t.active_from))
    for event in events:
        attrs = event["event_attributes"]
        at = parse_time(attrs["stage_changed_at"])
        before = [(status, when) for status, when in history[attrs["deal_id"]] if when < at]
        assert attrs["first_time_in_stage"] == (attrs["deal_stage_id"] not in {status for status, _ in before})
        assert attrs["previous_stage_id"] == (before[-1][0] if before else None)
        expected_seconds = int((at - before[-1][1]).total_seconds()) if before else None
        assert attrs["seconds_in_previous_stage"] == expected_seconds
        assert event["event_type"] == ("Deal Won" if attrs["deal_stage_id"] == won else "Deal Stage Changed")
        assert parse_time(event["utc_time"]).timestamp() * 1000 == event["_timestamp"]
        deal = s.workspace.deal(attrs["deal_id"])
        people = [s.workspace.person(v.fields["target_record_id"]).current("name")[0].fields["full_name"]
                  for v in deal.current("associated_people")]
        assert attrs["associated_people"] == people
        assert attrs["associated_company"] == (event["company"]["name"] if "company" in event else None)
        assert (attrs["value"], attrs["value_currency"]) == (attrs["deal_value"], attrs["deal_currency"])
        assert attrs["owner"] == attrs["deal_owner"]
    # the sandbox's histories revisit stages (A → B → A), so both answers are exercised
    assert {e["event_attributes"]["first_time_in_stage"] for e in events} == {True, False}
    assert any(e["event_type"] == "Deal Won" for e in events)
