"""`status`: what the state database says — checkpoints, ledger counts, held and failed events, the deals to
read again, last runs."""

from __future__ import annotations

import shlex
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sync.duration import describe
from sync.errors import StateError
from sync.state import open_read_only
from sync.state.retries import POLL_SCOPE


def resume_command(backfill: dict, state_path: Path, config_file: Path | None = None) -> str:
    """The command that resumes an unfinished backfill, with the state (and config file) it was run with, so
    that it works as printed under cron or systemd too."""
    until = f" --until {backfill['until']}" if backfill["until"] else ""
    config = f" --config {shlex.quote(str(config_file.absolute()))}" if config_file else ""
    return (f"attio-usermaven-sync run --backfill --since {backfill['since']}{until}{config} "
            f"--state {shlex.quote(str(state_path.absolute()))}")


def read_status(state_path: Path, config_file: Path | None = None) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what `status --json` prints). Never writes the file."""
    if not state_path.exists():
        raise StateError(f"no state database at {state_path}: check --state or SYNC_STATE_DB, or create it with "
                         "`attio-usermaven-sync run`")
    try:
        state = open_read_only(state_path)
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the state database at {state_path} ({exc}): is it an attio-usermaven-sync "
                         "state file?") from None
    try:
        backfills = {b["id"]: b for b in state.backfills.unfinished()}
        return {
            "state": str(state_path),
            "checkpoints": state.checkpoints.all(),
            "deals_in_snapshot": state.snapshot.count(),
            "ledger": state.ledger.counts(),
            "held": state.ledger.held_reasons(),
            "pending_errors": state.ledger.pending_errors(),
            "failed": state.ledger.failures(),
            "retry": [_retry_entry(row, backfills, state_path, config_file) for row in state.retries.rows()],
            "unfinished_backfills": [{**b, "resume": resume_command(b, state_path, config_file)}
                                     for b in backfills.values()],
            "runs": state.runs.last(),
        }
    finally:
        state.close()


def _retry_entry(row: dict, backfills: dict[str, dict], state_path: Path, config_file: Path | None) -> dict[str, Any]:
    """A deal in the retry set, with who reads it again: every poll, or the backfill's next run."""
    if row["scope"] == POLL_SCOPE:
        return {**row, "backfill_since": None, "resume": None}
    backfill = backfills.get(row["scope"])
    return {**row, "scope": "backfill", "backfill_since": backfill["since"] if backfill else None,
            "resume": resume_command(backfill, state_path, config_file) if backfill else None}


def format_status(report: dict[str, Any]) -> str:
    """The status report as text for a person."""
    cp = report["checkpoints"]
    lines = [
        f"state:       {report['state']}",
        f"checkpoint:  {cp.get('poll', 'none yet (the first run records the baseline)')}",
        f"baseline:    {cp.get('baseline', 'none')}",
        f"deals:       {report['deals_in_snapshot']} in the snapshot",
        "ledger:      " + ", ".join(f"{n} {state}" for state, n in report["ledger"].items()),
    ]
    lines += [f"  held:      {r['count']} — {r['reason']}" for r in report["held"]]
    lines += [f"  pending:   {r['count']} — last attempt: {r['last_error']}"
              + (f"; sent again from {r['retry_at'][:19].replace('T', ' ')} UTC" if r["retry_at"] else "")
              for r in report["pending_errors"]]
    lines += [f"  failed:    {r['event_id']} (deal {r['deal_key']} → {r['to_stage']}, {r['changed_at']}): "
              f"{r['last_error']}" for r in report["failed"]]
    for r in report["retry"]:
        who = "poll" if r["scope"] == POLL_SCOPE else f"backfill since {r['backfill_since']}"
        attempts = f"{r['attempts']} attempt{'' if r['attempts'] == 1 else 's'}"
        lines.append(f"  to read again: deal {r['deal_key']} ({who}, {attempts} since "
                     f"{r['first_failed'][:19].replace('T', ' ')}): {r['last_error']}")
    lines += [f"unfinished backfill since {b['since']}: {b['deals_done']} deals done; resume: {b['resume']}"
              for b in report["unfinished_backfills"]]
    lines.append("last runs:")
    for run in report["runs"]:
        lines.append(
            f"  {run['started_at'][:19].replace('T', ' ')}  {run['command']:<8} "
            f"{(run['seconds'] or 0):7.1f} s  attio {run['attio_requests'] or 0:>5}  "
            f"usermaven {run['usermaven_requests'] or 0:>4}  transitions {run['transitions'] or 0:>5}  "
            f"sent {run['sent'] or 0:>5}  held {run['held'] or 0:>3}  failed {run['failed'] or 0:>3}  "
            f"exit {run['exit_code'] if run['exit_code'] is not None else '-'}"
            + (f"  {run['message']}" if run["message"] and run["exit_code"] else ""))
    if not report["runs"]:
        lines.append("  none")
    return "\n".join(lines)


# `status --check`, for Nagios, Icinga, Zabbix or a shell `||`: the plugin convention of exit codes.
CHECK_OK, CHECK_WARNING, CHECK_CRITICAL = 0, 1, 2
CHECK_NAMES = {CHECK_OK: "OK", CHECK_WARNING: "WARNING", CHECK_CRITICAL: "CRITICAL"}


@dataclass(frozen=True)
class Health:
    code: int
    line: str


def check_health(state_path: Path, max_age: timedelta, max_held: timedelta, now: datetime | None = None) -> Health:
    """One line and a plugin exit code: CRITICAL when no run has succeeded within `max_age` (or ever), or
    events have failed; WARNING when an event has been held longer than `max_held`, or deals wait in the retry
    set (their history cannot be read); else OK."""
    now = now or datetime.now(UTC)
    try:
        if not state_path.exists():
            raise StateError(f"no state database at {state_path}")
        state = open_read_only(state_path)
    except (StateError, sqlite3.Error) as exc:
        return Health(CHECK_CRITICAL, f"CRITICAL - {exc}")
    try:
        last_success = state.runs.last_success()
        counts = state.ledger.counts()
        oldest_held = state.ledger.oldest_held()
        unread = state.retries.rows()
    finally:
        state.close()
    problems: list[tuple[int, str]] = []
    if last_success is None:
        problems.append((CHECK_CRITICAL, "no run has succeeded yet"))
    elif now - _parse(last_success) > max_age:
        problems.append((CHECK_CRITICAL, f"last successful run {_ago(now - _parse(last_success))} ago "
                                         f"(more than {describe(int(max_age.total_seconds()))})"))
    if counts["failed"]:
        problems.append((CHECK_CRITICAL, f"{counts['failed']} event(s) failed (see `status`, then `replay` the deal)"))
    if oldest_held and now - _parse(oldest_held) > max_held:
        problems.append((CHECK_WARNING, f"{counts['held']} event(s) held, the oldest for "
                                        f"{_ago(now - _parse(oldest_held))} (more than "
                                        f"{describe(int(max_held.total_seconds()))})"))
    if unread:
        first = unread[0]
        problems.append((CHECK_WARNING, f"{len(unread)} deal(s) Attio will not let this sync read, the first "
                                        f"({first['deal_key']}) since {_ago(now - _parse(first['first_failed']))} "
                                        "ago: see `status`"))
    if not problems:
        ran = _ago(now - _parse(last_success)) if last_success else "?"
        return Health(CHECK_OK, f"OK - last successful run {ran} ago; {counts['pending']} pending, "
                                f"{counts['held']} held, 0 failed")
    code = max(c for c, _ in problems)
    return Health(code, f"{CHECK_NAMES[code]} - " + "; ".join(text for _, text in problems))


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 86_400:
        return f"{seconds // 86_400}d{(seconds % 86_400) // 3600}h"
    return describe(seconds - seconds % 60 if seconds >= 3600 else seconds)
