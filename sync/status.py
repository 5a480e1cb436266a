"""`status`: what the state database says — checkpoints, ledger counts, held and failed events, last runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sync.errors import StateError
from sync.state import open_state


def resume_command(backfill: dict) -> str:
    """The command that resumes an unfinished backfill."""
    until = f" --until {backfill['until']}" if backfill["until"] else ""
    return f"attio-usermaven-sync run --backfill --since {backfill['since']}{until}"


def read_status(state_path: Path) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what `status --json` prints). Never writes the file."""
    if not state_path.exists():
        raise StateError(f"no state database at {state_path}: check --state or SYNC_STATE_DB, or create it with "
                         "`attio-usermaven-sync run`")
    try:
        state = open_state(state_path, dry_run=True)
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the state database at {state_path} ({exc}): is it an attio-usermaven-sync "
                         "state file?") from None
    try:
        return {
            "state": str(state_path),
            "checkpoints": state.checkpoints.all(),
            "deals_in_snapshot": state.snapshot.count(),
            "ledger": state.ledger.counts(),
            "held": state.ledger.held_reasons(),
            "pending_errors": state.ledger.pending_errors(),
            "failed": state.ledger.failures(),
            "unfinished_backfills": [{**b, "resume": resume_command(b)} for b in state.backfills.unfinished()],
            "runs": state.runs.last(),
        }
    finally:
        state.close()


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
    lines += [f"  pending:   {r['count']} — last attempt: {r['last_error']}" for r in report["pending_errors"]]
    lines += [f"  failed:    {r['event_id']} (deal {r['deal_key']} → {r['to_stage']}, {r['changed_at']}): "
              f"{r['last_error']}" for r in report["failed"]]
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
