"""The command line: configuration errors, bad arguments, the lock, status, and secrets kept out of output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync import cli
from sync.errors import ConfigError
from sync.lock import StateLock
from tests.conftest import NOW, SECRETS, add_leads, uid


def test_missing_config_exits_2_naming_each_key(run, monkeypatch, attio, mocked):
    for name in ("ATTIO_API_KEY", "USERMAVEN_SERVER_TOKEN", "USERMAVEN_SITE_URL"):
        monkeypatch.delenv(name)
    code, out, err = run("run")
    assert code == 2
    for name in ("ATTIO_API_KEY", "USERMAVEN_SERVER_TOKEN", "USERMAVEN_SITE_URL"):
        assert f"{name} is not set" in err
    assert "USERMAVEN_API_KEY is not set" not in err
    assert attio.queries == [] and len(mocked.calls) == 0  # before any network call


def test_malformed_values_exit_2_with_what_to_do(run, monkeypatch):
    monkeypatch.setenv("ATTIO_MAX_RPS", "fast")
    monkeypatch.setenv("USERMAVEN_SITE_URL", "acme.example")
    code, out, err = run("run")
    assert code == 2
    assert "ATTIO_MAX_RPS must be a number from 0.1 to 100, got 'fast'" in err
    assert "USERMAVEN_SITE_URL must be an http(s) URL" in err
    assert "Traceback" not in err


def test_config_file_fills_in_and_environment_wins(run, monkeypatch, tmp_path, workspace, usermaven):
    monkeypatch.delenv("USERMAVEN_SITE_URL")
    monkeypatch.delenv("ATTIO_API_KEY")
    config = tmp_path / "sync.toml"
    config.write_text(f'ATTIO_API_KEY = "{SECRETS["ATTIO_API_KEY"]}"\nUSERMAVEN_SITE_URL = "https://from-file.example"\n'
                      'USERMAVEN_EVENT_TYPE = "From File"\n')
    monkeypatch.setenv("USERMAVEN_EVENT_TYPE", "From Env")
    assert run("run", "--config", str(config))[0] == 0
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    assert run("run", "--config", str(config))[0] == 0
    [event] = usermaven.events
    assert event["url"] == "https://from-file.example"
    assert event["event_type"] == "From Env"


def test_bad_config_file_exits_2(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('ATTIO_API_KEY = "x"\nATIO_OBJECT = "deals"\nbroken')
    code, out, err = run("run", "--config", str(bad))
    assert code == 2 and "is not valid TOML" in err
    bad.write_text('ATIO_OBJECT = "deals"\n')
    code, out, err = run("run", "--config", str(bad))
    assert code == 2 and "unknown key 'ATIO_OBJECT'" in err
    code, out, err = run("run", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "does not exist" in err


def test_lock_contention_exits_75_naming_the_holder(run, env, attio, workspace, usermaven):
    with StateLock(Path(env["SYNC_STATE_DB"])):
        code, out, err = run("run")
    assert code == 75
    assert f"pid {os.getpid()}" in err and "since" in err
    assert attio.queries == []
    assert run("run")[0] == 0  # released


def test_a_moment_of_lock_holder_probing_does_not_turn_a_run_away(run, env, workspace, usermaven, monkeypatch):
    """`status` and a dry run probe the lock (a shared lock, released at once): a run that starts in that moment
    waits for it instead of exiting 75. Found by a review (275 refusals in 20,000 tries)."""
    import fcntl
    from types import SimpleNamespace

    from sync import lock as lock_module

    state = Path(env["SYNC_STATE_DB"])
    with StateLock(state):
        pass  # the lock file exists
    fd = os.open(f"{state}.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the probe, caught holding it
    waits: list[float] = []

    def probe_done(seconds: float) -> None:  # the run's first wait: the probe lets go meanwhile
        waits.append(seconds)
        if len(waits) == 1:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    monkeypatch.setattr(lock_module, "time", SimpleNamespace(sleep=probe_done))
    assert run("run")[0] == 0 and waits == [lock_module.LOCK_RETRY_SECONDS]


def test_lock_released_when_holder_is_killed(env, tmp_path):
    state = Path(env["SYNC_STATE_DB"])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from sync.lock import StateLock\n"
         f"with StateLock(Path({str(state)!r})):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        lock = StateLock(state)
        try:
            lock.__enter__()
            raise AssertionError("lock should be held")
        except Exception as exc:
            assert f"pid {holder.pid}" in str(exc)
    finally:
        holder.kill()
        holder.wait()
    with StateLock(state):
        pass


def test_bad_since_exits_2(run, workspace):
    for value, message in (("yesterday-ish", "is not a date"), ("2999-01-01", "is in the future")):
        code, out, err = run("run", "--backfill", "--since", value)
        assert code == 2 and message in err
    code, out, err = run("run", "--backfill")
    assert code == 2 and "--backfill needs --since" in err
    code, out, err = run("run", "--backfill", "--since", "2024-02-01", "--until", "2024-01-01")
    assert code == 2 and "--until must be after --since" in err


def test_unknown_command_or_option_exits_2(run):
    assert run("launch")[0] == 2
    assert run("run", "--fast")[0] == 2


def test_refused_attio_token_exits_2(run, attio):
    attio.token = "another-workspace-token"  # Attio does not know the token the CLI sends
    code, out, err = run("run")
    assert code == 2
    assert "Attio answered 401" in err and "The access token provided is invalid." in err


def test_wrong_stage_attribute_exits_2_listing_status_attributes(run, attio, monkeypatch):
    monkeypatch.setenv("ATTIO_STAGE_ATTRIBUTE", "value")
    code, out, err = run("run")
    assert code == 2
    assert ("'value' on object 'deals' is of type 'currency', not a status: set it to one of its status attributes: "
            "stage") in err
    monkeypatch.setenv("ATTIO_STAGE_ATTRIBUTE", "phase")
    code, out, err = run("run")
    assert code == 2 and "'phase' is not an attribute of object 'deals'" in err


def test_status_reports_checkpoint_counts_and_runs(run, workspace, usermaven):
    run("run")
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.move_deal(uid("d3"), "Qualified", NOW.replace(minute=2))
    workspace.clock = NOW.replace(minute=5)
    run("run")
    code, out, err = run("status")
    assert code == 0
    assert "checkpoint:  2026-03-01T12:05:00.000000Z" in out
    assert "1 pending, 1 held, 1 sent, 0 failed".replace("1 pending", "0 pending") in out
    assert "held:      1 — deal has no associated person" in out
    assert "run " in out and "exit 0" in out
    code, out, err = run("status", "--json")
    report = json.loads(out)
    assert report["ledger"] == {"pending": 0, "held": 1, "sent": 1, "failed": 0}
    assert report["runs"][0]["transitions"] == 2 and report["runs"][0]["sent"] == 1
    assert report["runs"][0]["attio_requests"] > 0


def test_status_without_state_exits_2(run, tmp_path):
    code, out, err = run("status", "--state", str(tmp_path / "nowhere.db"))
    assert code == 2 and "no state database" in err


def test_secrets_never_printed_logged_or_stored(run, env, workspace, usermaven, monkeypatch):
    run("run", "-v")
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    usermaven.answers = [(500, {"message": "boom", "error": ""})] * 5
    outputs = [run("run", "-v"), run("run", "-v", "--dry-run"), run("run", "-v"), run("status"),
               run("status", "--json")]
    monkeypatch.setenv("USERMAVEN_SERVER_TOKEN", "st_other_secret_777")
    outputs.append(run("run", "-v"))
    text = "\n".join(out + err for _, out, err in outputs)
    assert "Usermaven answered 500" in text  # the failure was reported...
    assert "/api/v1/s2s/event?token=***" in text  # ...and -v logged the requests, token masked...
    for secret in [*SECRETS.values(), "st_other_secret_777"]:
        assert secret not in text  # ...without a secret
    database = Path(env["SYNC_STATE_DB"]).read_bytes()
    for secret in SECRETS.values():
        assert secret.encode() not in database


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "sync", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("attio-usermaven-sync ")


def test_unusable_state_path_exits_2(run, tmp_path, attio):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run("run", "--state", str(blocker / "sync.db"))
    assert code == 2 and "cannot open the state" in err and "Traceback" not in err
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("these are my notes, not a database " * 100)
    for command in ("status", "run"):
        code, out, err = run(command, "--state", str(not_sqlite))
        assert code == 2 and "it is not a readable SQLite database" in err and "Traceback" not in err


def test_rates_that_would_disable_or_freeze_the_limiter_exit_2(run, monkeypatch):
    for value in ("nan", "inf", "1e-9", "0", "-5", "500"):
        monkeypatch.setenv("ATTIO_MAX_RPS", value)
        code, out, err = run("run")
        assert code == 2 and f"ATTIO_MAX_RPS must be from 0.1 to 100, got '{value}'" in err, value
    monkeypatch.setenv("ATTIO_MAX_RPS", "50")
    monkeypatch.setenv("ATTIO_CONCURRENCY", "1000000")
    code, out, err = run("run")
    assert code == 2 and "ATTIO_CONCURRENCY must be from 1 to 64" in err


def test_token_in_a_pasted_events_url_is_refused_and_never_echoed(run, monkeypatch):
    token = f"{SECRETS['USERMAVEN_API_KEY']}.{SECRETS['USERMAVEN_SERVER_TOKEN']}"
    monkeypatch.setenv("USERMAVEN_EVENTS_URL", f"events.usermaven.com/api/v1/s2s/event?token={token}")
    code, out, err = run("run")
    assert code == 2 and "USERMAVEN_EVENTS_URL must be an http(s) URL" in err
    monkeypatch.setenv("USERMAVEN_EVENTS_URL", f"https://events.usermaven.com/api/v1/s2s/event?token={token}")
    code, out, err = run("run")
    assert code == 2 and "without ?token=" in err
    for secret in SECRETS.values():
        assert secret not in out + err


def test_demo_refuses_a_workspace_too_small_or_too_large(run):
    for value in ("3", "0", "-5", "50000"):
        code, out, err = run("demo", "--deals", value)
        assert code == 2 and "--deals must be from 20 to 20000" in err and "Traceback" not in err


# ---- the lock follows the file, not how its path is spelled ----


def test_the_same_state_through_a_symlink_takes_the_same_lock(run, env, workspace, usermaven, tmp_path):
    assert run("run")[0] == 0
    real = Path(env["SYNC_STATE_DB"])
    (tmp_path / "elsewhere").mkdir()
    linked_file = tmp_path / "elsewhere" / "sync.db"
    linked_file.symlink_to(real)
    linked_folder = tmp_path / "linked"
    linked_folder.symlink_to(real.parent)
    with StateLock(real):
        for path in (linked_file, linked_folder / "sync.db"):
            code, out, err = run("run", "--state", str(path))
            assert code == 75, (path, err)
    with StateLock(linked_file):
        assert run("run")[0] == 75
    assert run("run", "--state", str(linked_file))[0] == 0  # released


# ---- messages that stay readable and name the cause ----


def test_secret_masking_never_garbles_messages_when_settings_are_empty_or_short(run, monkeypatch, tmp_path):
    nowhere = tmp_path / "state.d" / "none.db"
    for name in ("USERMAVEN_API_KEY", "USERMAVEN_SERVER_TOKEN"):
        monkeypatch.delenv(name)
    code, out, err = run("status", "--state", str(nowhere))
    assert code == 2 and f"no state database at {nowhere}: check --state or SYNC_STATE_DB" in err
    assert "***" not in err
    # A one-letter "key" could not be masked without garbling every word: it is refused, readably.
    monkeypatch.setenv("USERMAVEN_API_KEY", "c")
    monkeypatch.setenv("USERMAVEN_SERVER_TOKEN", "e")
    code, out, err = run("status", "--state", str(nowhere))
    assert code == 2
    assert "USERMAVEN_API_KEY is shorter than 8 characters, which no real key, token or ping URL is" in err
    assert "USERMAVEN_SERVER_TOKEN is shorter than 8 characters" in err
    assert "***" not in err


def test_a_secret_too_short_to_mask_is_a_configuration_error(env):
    from sync.config import load_config

    for name in ("ATTIO_API_KEY", "USERMAVEN_API_KEY", "USERMAVEN_SERVER_TOKEN"):
        with pytest.raises(ConfigError, match=f"{name} is shorter than 8 characters"):
            load_config({**env, name: "abc1234"})
        assert load_config({**env, name: "abcd1234"}) is not None


@pytest.mark.parametrize("value", ["attio-key\nsecret-tail", "attio-key-secret-tail\u201d", "attio key secret"])
def test_a_secret_with_a_line_break_a_space_or_a_curly_quote_is_a_configuration_error(run, env, tmp_path, value,
                                                                                        monkeypatch):
    """A key pasted across two lines (a TOML multi-line string) or with a curly quote would reach an error message
    escaped, in a form the mask does not match: refused before anything runs, exit 2, the value not shown."""
    config = tmp_path / "sync.toml"
    config.write_text(f"ATTIO_API_KEY = {json.dumps(value)}\n", encoding="utf-8")
    monkeypatch.delenv("ATTIO_API_KEY")
    code, out, err = run("run", "--config", str(config))
    assert code == 2
    assert "ATTIO_API_KEY holds a space, a line break, a quote or another character that is not plain ASCII" in err
    assert "secret" not in out + err and "Traceback" not in err


def test_a_state_path_that_cannot_be_reached_is_a_configuration_error(run, env, monkeypatch):
    code, out, err = run("status", "--state", "~no-such-user-here/sync.db")
    assert code == 2 and "names a home folder that this machine does not know" in err and "Traceback" not in err

    def refused(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", refused)  # as a user who may not enter /root (the tests run as root)
    code, out, err = run("status", "--state", "/root/sync.db")
    assert code == 2 and "the state path /root/sync.db cannot be reached (Permission denied)" in err


def test_the_redactor_masks_real_secrets_and_leaves_empty_or_short_values_alone():
    from sync.redact import Redactor

    redact = Redactor(["", ".", "c", "ab12", SECRETS["ATTIO_API_KEY"]])
    text = "check the state at ./state.db (ab12)"
    assert redact(text) == text
    assert redact(f"Bearer {SECRETS['ATTIO_API_KEY']}") == "Bearer ***"
    # A secret with %-escapes is masked as urllib3 logs it too, escapes in capitals (a ping URL's path, say).
    assert Redactor(["/abc%7edef-1234"])("GET /abc%7Edef-1234/start") == "GET ***/start"


def test_the_settings_repr_shows_no_secret():
    """Nothing prints the settings today; should a log line or a traceback ever show them, the keys, the token and
    the healthcheck URL are not in their repr (found by a review)."""
    from sync.config import load_config

    ping = "https://hc-ping.example/5f3b2c1a-0d9e-4c1b-9a77-1f2e3d4c5b6a"
    config = load_config({**SECRETS, "USERMAVEN_SITE_URL": "https://acme.example", "SYNC_HEALTHCHECK_URL": ping})
    shown = repr(config)
    assert "attio_base_url=" in shown and "usermaven_events_url=" in shown
    for secret in (*SECRETS.values(), ping, "5f3b2c1a"):
        assert secret not in shown


def answer_once(attio, monkeypatch, path: str, body: object) -> None:
    """The next answer to a request for `path` is a 200 with `body`, whatever Attio would have said."""
    answer, left = attio.dispatch, [1]

    def dispatch(request):  # type: ignore[no-untyped-def]
        reply = answer(request)
        if request.path == path and left[0]:
            left[0] -= 1
            reply.status, reply.body = 200, json.dumps(body).encode()
        return reply

    monkeypatch.setattr(attio, "dispatch", dispatch)


def test_an_attio_answer_of_the_wrong_shape_names_the_endpoint(run, attio, workspace, usermaven, monkeypatch):
    assert run("run")[0] == 0
    answer_once(attio, monkeypatch, "/v2/objects/deals/records/query", {"data": [{"name": "not a record"}]})
    code, out, err = run("run")
    assert code == 1 and "internal error" not in err
    assert "Attio answered POST /v2/objects/deals/records/query with an item without the field 'id'" in err
    assert "check that ATTIO_BASE_URL is Attio's API root" in err
    answer_once(attio, monkeypatch, "/v2/objects/deals/records/query", {"data": ["a", "b"]})
    code, out, err = run("run")
    assert code == 1 and "Attio answered POST /v2/objects/deals/records/query with a field of another type" in err


def test_a_history_of_the_wrong_shape_names_the_endpoint(run, attio, workspace, usermaven, monkeypatch):
    assert run("run")[0] == 0
    workspace.move_deal(uid("d1"), "Demo", NOW.replace(minute=1))
    workspace.clock = NOW.replace(minute=5)
    path = f"/v2/objects/deals/records/{uid('d1')}/attributes/stage/values"
    answer_once(attio, monkeypatch, path, {"data": [{"status": {"title": "Demo"}, "active_from": "2026-03-01T12:01Z"}]})
    code, out, err = run("run")
    assert code == 1 and "internal error" not in err
    assert f"Attio answered GET {path} with an item without the field 'id'" in err


def test_until_without_backfill_says_what_each_command_takes(run):
    code, out, err = run("run", "--until", "2024-01-01")
    assert code == 2
    assert "--since and --until go with --backfill (replay DEAL_ID takes --since, not --until)" in err


def test_a_dry_run_during_a_running_backfill_does_not_call_it_unfinished(run, env, workspace, usermaven):
    import sqlite3

    assert run("run")[0] == 0
    conn = sqlite3.connect(env["SYNC_STATE_DB"])
    with conn:
        conn.execute("insert into backfills (id, since, until, started_at) values "
                     "('b1', '2025-06-01T00:00:00.000000Z', null, '2026-03-01T11:00:00.000000Z')")
    conn.close()
    with StateLock(Path(env["SYNC_STATE_DB"]), "backfill"):
        code, out, err = run("run", "--dry-run")
    assert code == 0
    assert "a backfill started 2026-03-01 11:00:00 is running" in err and f"pid {os.getpid()} (backfill)" in err
    assert "did not finish" not in err
    code, out, err = run("run", "--dry-run")  # nobody holds the lock: it was killed
    assert "did not finish" in err and "resume it with" in err


def test_a_dry_run_cut_short_reports_what_it_printed(env, workspace):
    from datetime import UTC, datetime

    from sync import commands
    from sync.config import load_config

    class ClosedAfter:
        def __init__(self, lines: int):
            self.left, self.lines = lines, []

        def write(self, text: str) -> None:
            if not self.left:
                raise BrokenPipeError(32, "Broken pipe")
            self.left -= 1
            self.lines.append(text)

        def flush(self) -> None:
            pass

    add_leads(workspace, "h", 30, days_back=60)
    out = ClosedAfter(10)
    report = commands.run_backfill(load_config(os.environ), datetime(2020, 1, 1, tzinfo=UTC), None, dry_run=True,
                                   out=out)  # type: ignore[arg-type]
    assert report.code == 0 and "the output was closed" in report.message
    assert len(out.lines) == 10 and report.counts.printed == 10
    assert "10 event(s) printed" in commands.summary_line(report, dry_run=True)


# ---- user mistakes get a message and exit 2, never a traceback ----


def test_a_config_file_that_is_not_utf8_is_named(run, tmp_path):
    config = tmp_path / "sync.toml"
    config.write_bytes('USERMAVEN_EVENT_TYPE = "caf\xe9"\n'.encode("latin-1"))
    code, out, err = run("run", "--config", str(config))
    assert code == 2 and f"config file {config} is not UTF-8 text" in err and "Traceback" not in err


def test_a_folder_as_the_state_path_is_a_usage_error(run, tmp_path):
    for path in ("", str(tmp_path)):
        code, out, err = run("run", "--state", path)
        assert code == 2 and "is a folder: give --state or SYNC_STATE_DB a file name" in err, err
        assert "Traceback" not in err


def test_a_tilde_in_the_state_path_means_home(env, monkeypatch, tmp_path):
    from sync.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config({**env, "SYNC_STATE_DB": "~/attio/sync.db"})
    assert config.state_db == tmp_path / "attio" / "sync.db"


def test_a_date_out_of_range_is_a_usage_error(run):
    code, out, err = run("run", "--backfill", "--since", "0001-01-01T00:00:00+01:00")
    assert code == 2 and "is not a date or ISO 8601 timestamp in range" in err and "Traceback" not in err


def test_an_unexpected_error_is_one_redacted_line_and_exit_1(run, monkeypatch):
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"boom with {SECRETS['ATTIO_API_KEY']}")

    monkeypatch.setattr("sync.cli.read_status", broken)
    code, out, err = run("status")
    assert code == 1 and "internal error: RuntimeError: boom with ***" in err
    assert SECRETS["ATTIO_API_KEY"] not in err and "Traceback" not in err


def test_the_command_sets_the_collector_for_its_process_and_main_alone_does_not():
    """The collector's thresholds and `gc.freeze` are the command's (`entry_point`, what the installed script and
    `python -m sync` run), not `main`'s, which tests call many times in one process."""
    script = ("import gc, sys\nfrom sync import cli\nsys.argv = ['attio-usermaven-sync', '--version']\n"
              "{call}\nprint(gc.get_threshold()[0], gc.get_freeze_count() > 0)")
    for call, expected in (("cli.main()", "700 False"), ("cli.entry_point()", f"{20_000} True")):
        out = subprocess.run([sys.executable, "-c", script.format(call=call)], capture_output=True, text=True,
                             check=True).stdout
        assert out.split("\n")[-2] == expected, out


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2,
                    reason="needs a system that lets a process choose among two CPUs or more")
def test_the_command_keeps_its_threads_on_one_cpu_of_those_it_may_use_and_main_alone_does_not():
    """`entry_point` pins the process to one CPU it was allowed (threads started later inherit it); `main`, which
    tests call, leaves the process as it was."""
    script = ("import json, os, sys, threading\nfrom sync import cli\n"
              "sys.argv = ['attio-usermaven-sync', '--version']\n"
              "allowed = sorted(os.sched_getaffinity(0))\n{call}\nseen = []\n"
              "thread = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))\n"
              "thread.start(); thread.join()\nprint(json.dumps([allowed, sorted(os.sched_getaffinity(0)), seen[0]]))")
    for call in ("cli.main()", "cli.entry_point()"):
        out = subprocess.run([sys.executable, "-c", script.format(call=call)], capture_output=True, text=True,
                             check=True).stdout
        allowed, now, thread = json.loads(out.split("\n")[-2])
        if call == "cli.main()":
            assert now == thread == allowed, out
        else:
            assert len(now) == 1 and now[0] in allowed and thread == now, out


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2,
                    reason="needs a system that lets a process choose among two CPUs or more")
def test_one_cpu_is_chosen_among_those_the_process_was_given():
    """An operator's `taskset` (or a container's cpuset) is kept: the process ends on one CPU of the two it was
    given, the one it runs on (here the highest: first held there, then given both again), not a fixed one."""
    allowed = sorted(os.sched_getaffinity(0))
    given = {allowed[0], allowed[-1]}
    script = ("import json, os\nfrom sync import cli\nos.sched_setaffinity(0, {{{last}}})\n"
              "os.sched_setaffinity(0, {given})\ncli.run_on_one_cpu()\n"
              "print(json.dumps(sorted(os.sched_getaffinity(0))))")
    out = subprocess.run([sys.executable, "-c", script.format(last=allowed[-1], given=given)], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == [allowed[-1]], out


def test_where_the_cpu_it_runs_on_cannot_be_read_the_process_is_left_as_it_was(monkeypatch):
    """No guess (such as the lowest CPU, where every such process would then pile up)."""
    monkeypatch.setattr(cli, "current_cpu", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pytest.fail("pinned"), raising=False)
    cli.run_on_one_cpu()


def test_without_a_way_to_choose_cpus_the_process_is_left_as_it_was(monkeypatch):
    """Where the system has no sched_setaffinity (macOS, Windows) nothing is pinned and nothing fails."""
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: pytest.fail("asked for the CPUs"), raising=False)
    cli.run_on_one_cpu()


def test_a_system_that_refuses_to_pin_leaves_the_process_as_it_was(monkeypatch):
    """A seccomp profile may refuse sched_setaffinity or sched_getaffinity: the run goes on, on the CPUs it
    had."""
    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cli, "current_cpu", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", refused, raising=False)
    cli.run_on_one_cpu()
    monkeypatch.setattr(os, "sched_getaffinity", refused, raising=False)
    cli.run_on_one_cpu()


def test_a_free_threaded_python_is_left_on_every_cpu(monkeypatch):
    """Without the GIL (Python 3.13t) the threads do run at once: one CPU would only slow them down."""
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    monkeypatch.setattr(cli, "current_cpu", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pytest.fail("pinned"), raising=False)
    cli.run_on_one_cpu()


def test_the_cpu_it_runs_on_is_none_where_proc_cannot_be_read(monkeypatch):
    """No /proc (a container without it), or a stat line of another shape: None, and then nothing is pinned."""
    class Unreadable:
        def __init__(self, path: str):
            self.path = path

        def read_text(self) -> str:
            raise FileNotFoundError(2, "No such file or directory", self.path)

    class Short(Unreadable):
        def read_text(self) -> str:
            return "1 (python) R 0"

    for fake in (Unreadable, Short):
        monkeypatch.setattr(cli, "Path", fake)
        assert cli.current_cpu() is None
