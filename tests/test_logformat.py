"""Log lines an operator can use: a UTC time and a level on each, or one JSON object per line; no secret."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest

from sync.logformat import RunFields, make_handler, new_run_id, running
from sync.redact import Redactor

SECRET = "attio_secret_a1b2c3d4e5"


@pytest.fixture
def logger():
    log = logging.getLogger("test_logformat")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def _capture(logger: logging.Logger, log_format: str, fields: RunFields | None = None) -> io.StringIO:
    stream = io.StringIO()
    logger.addHandler(make_handler(stream, log_format, Redactor([SECRET]), fields))
    return stream


def test_text_lines_start_with_a_utc_timestamp_and_the_level(logger):
    stream = _capture(logger, "text")
    logger.info("run: %d deal(s) read", 3)
    logger.warning("2 event(s) held")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO run: 3 deal\(s\) read", lines[0])
    assert re.fullmatch(r"\S+Z WARNING 2 event\(s\) held", lines[1])


def test_json_lines_carry_time_level_message_run_id_command_and_counts(logger):
    stream = _capture(logger, "json", RunFields(run_id="abc123", command="run"))
    logger.info("run: done", extra={"counts": {"sent": 4, "held": 1, "note": "not a number"}})
    logger.error("plain line")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(first) == {"time", "level", "message", "run_id", "command", "counts"}
    assert first["level"] == "INFO" and first["message"] == "run: done"
    assert first["run_id"] == "abc123" and first["command"] == "run"
    assert first["counts"] == {"sent": 4, "held": 1}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "ERROR" and "counts" not in second


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_either_format_even_in_a_traceback(logger, log_format):
    stream = _capture(logger, log_format)
    logger.error("refused token %s", SECRET)
    try:
        raise RuntimeError(f"token={SECRET}")
    except RuntimeError:
        logger.exception("failed")
    out = stream.getvalue()
    assert SECRET not in out and "***" in out and "RuntimeError" in out
    if log_format == "json":
        assert all(json.loads(line) for line in out.splitlines() if line.startswith("{"))


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="text, json"):
        make_handler(io.StringIO(), "xml", Redactor())


def test_run_ids_are_distinct_uuids():
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100 and all(uuid.UUID(i) for i in ids)


def test_lines_inside_a_run_carry_its_id_and_command_and_lines_after_it_do_not(logger):
    stream = _capture(logger, "json")
    with running("r-1", "backfill"):
        logger.info("inside")
    logger.info("after")
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["run_id"], inside["command"]) == ("r-1", "backfill")
    assert "run_id" not in after and "command" not in after


def test_the_cli_logs_json_lines_with_the_runs_counts_and_no_secret(tmp_path):
    from sync.sandbox import AttioSandbox, UsermavenCollector, Workspace
    from tests.test_integration import Setup

    with AttioSandbox(Workspace.generate(seed=6, deals=20)) as attio, UsermavenCollector() as usermaven:
        s = Setup(attio.workspace, attio, usermaven, tmp_path / "sync.db")
        result = s.cli("run", "--backfill", "--since", "2020-01-01", "-v", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one JSON object
    assert {line["command"] for line in lines} == {"backfill"}  # the run's command, not the command line's "run"
    run_ids = {line.get("run_id") for line in lines if "run_id" in line}
    assert len(run_ids) == 1 and uuid.UUID(run_ids.pop())
    summary = lines[-1]
    assert summary["message"].startswith("backfill: ") and summary["command"] == "backfill"
    assert summary["counts"]["exit_code"] == 0
    assert summary["counts"]["sent"] == len(usermaven.unique_events()) > 0
    assert attio.token not in result.stderr and usermaven.server_token not in result.stderr
