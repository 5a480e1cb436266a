"""`demo`: the whole job against the local sandbox, for someone who has just cloned the repository."""

from __future__ import annotations

import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sync import commands
from sync.config import load_config
from sync.errors import UsageError
from sync.sandbox import AttioSandbox, UsermavenCollector, Workspace

SITE_URL = "https://demo.example"
MIN_DEALS, MAX_DEALS = 20, 20_000


def demo(deals: int, keep: bool = False, dry_run: bool = False, state: Path | None = None,
         quiet: bool = False) -> int:
    """Generate a workspace, serve it, backfill two years through the same command functions as the CLI,
    move deals, poll, report. Returns the worst exit code of the two runs."""
    if not MIN_DEALS <= deals <= MAX_DEALS:
        # The generator's scripted deals (archived stage, re-opened, several people...) need room.
        raise UsageError(f"--deals must be from {MIN_DEALS} to {MAX_DEALS}, got {deals}")
    try:
        state = state.expanduser() if state is not None else None
    except RuntimeError:  # ~user with no home folder
        raise UsageError(f"demo --state {state}: that home folder does not exist on this machine") from None
    if state is not None and state.exists():
        # Its checkpoint, snapshot and held events would take the sandbox's for real ones.
        raise UsageError(f"demo --state must name a file that does not exist yet: {state} does, and the demo would "
                         "write its sandbox deals into it; give a new path, or leave --state out")
    folder = Path(tempfile.mkdtemp(prefix="attio-usermaven-sync-demo-"))
    try:
        return _demo(deals, keep, dry_run, state, quiet, folder)
    finally:
        if not keep:  # the generated state and events are the demo's own: nothing to leave behind
            shutil.rmtree(folder, ignore_errors=True)


def _demo(deals: int, keep: bool, dry_run: bool, state: Path | None, quiet: bool, folder: Path) -> int:
    state = state or folder / "sync.db"
    events_file = folder / "events.jsonl"
    began = time.monotonic()
    print(f"Generating a sandbox workspace of {deals} deals with two years of stage history...", flush=True)
    workspace = Workspace.generate(seed=1, deals=deals)
    with ExitStack() as stack:
        attio = stack.enter_context(AttioSandbox(workspace))
        usermaven = stack.enter_context(UsermavenCollector(jsonl_path=events_file))
        assert attio.url and usermaven.events_url, "the sandbox servers are running inside this block"
        env: dict[str, str] = {
            "ATTIO_BASE_URL": attio.url, "ATTIO_API_KEY": attio.token, "ATTIO_USER_ID_ATTRIBUTE": "app_user_id",
            "USERMAVEN_EVENTS_URL": usermaven.events_url, "USERMAVEN_API_KEY": usermaven.api_key,
            "USERMAVEN_SERVER_TOKEN": usermaven.server_token, "USERMAVEN_SITE_URL": SITE_URL,
            "SYNC_STATE_DB": str(state),
        }
        # Only the sandbox's settings: the demo never reads the environment, so it cannot reach a real workspace.
        config = load_config(env)
        since = (datetime.now(UTC) - timedelta(days=731)).replace(hour=0, minute=0, second=0, microsecond=0)
        print(f"\n$ attio-usermaven-sync run --backfill --since {since:%Y-%m-%d}", flush=True)
        progress = sys.stderr.isatty() and not quiet
        codes = [commands.run_backfill(config, since, None, dry_run, progress=progress).code]
        moved = _move_some_deals(workspace)
        print(f"\nMoved {len(moved)} deals in the sandbox: "
              + ", ".join(f"{name} → {stage}" for name, stage in moved), flush=True)
        print("\n$ attio-usermaven-sync run", flush=True)
        codes.append(commands.run_poll(config, dry_run).code)
        _report(usermaven.unique_events(), usermaven.requests, attio.stats, state, events_file, dry_run,
                time.monotonic() - began, kept=keep or not state.is_relative_to(folder))
        if keep:
            print("\nThe sandbox is still up. In another shell:")
            for name, value in env.items():
                print(f"  export {name}={value}")
            print("  attio-usermaven-sync status    # or run, replay DEAL_ID, ...")
            print("Ctrl-C stops it.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return max(codes)


def _move_some_deals(workspace: Workspace) -> list[tuple[str, str]]:
    """Move five deals to another stage now, as a sales team would between two polls."""
    rng = random.Random(7)
    stages = [s.title for s in workspace.statuses if not s.is_archived]
    moved = []
    for record_id in rng.sample(workspace.deal_ids(), 5):
        current = workspace.stage_history(record_id)[-1]["status"]["title"]
        target = rng.choice([s for s in stages if s != current])
        workspace.move_deal(record_id, target)
        name = workspace.deal(record_id).current("name")[0].fields["value"]
        moved.append((name, target))
    return moved


def _report(events: list[dict], usermaven_requests: int, attio_stats: dict, state: Path, events_file: Path,
            dry_run: bool, seconds: float, kept: bool) -> None:
    stages = Counter(e["event_attributes"]["deal_stage"] for e in events)
    months = Counter(datetime.fromtimestamp(e["_timestamp"] / 1000, UTC).strftime("%Y-%m") for e in events)
    cases = Counter("Case 1 (app user id)" if e["user"]["id"] != e["user"].get("email") else "Case 2 (email)"
                    for e in events)
    held = _held(state) if not dry_run else 0
    print("\n== What Usermaven received ==")
    print(f"{len(events)} events" + (" (dry run: nothing was sent)" if dry_run else ""))
    print("By stage:")
    for stage, count in stages.most_common():
        print(f"  {stage:<14} {count:>5}")
    print("By month of the stage change (the event's _timestamp):")
    for month in sorted(months):
        print(f"  {month}  {months[month]:>4}  {'#' * min(60, months[month])}")
    print("Identities:")
    for case, count in sorted(cases.items()):
        print(f"  {case:<22} {count:>5}")
    print(f"  {'held (no email/user id)':<22} {held:>5}  — kept in the ledger, sent once a person is added")
    print("Requests:")
    print(f"  Attio      {attio_stats['requests']:>6}  ({attio_stats['rate_limited']} answered 429)")
    print(f"  Usermaven  {usermaven_requests:>6}")
    if dry_run:
        print("State database:   none written (dry run)")
    elif kept:
        print(f"State database:   {state}   (try: attio-usermaven-sync status --state {state})")
    else:
        print("State database:   removed at exit with the demo's folder (--keep keeps it)")
    print(f"Received events:  {events_file}" if kept else "Received events:  removed at exit (--keep keeps them)")
    print(f"Took {seconds:.1f} s")


def _held(state: Path) -> int:
    if not state.exists():
        return 0
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return conn.execute("select count(*) from ledger where state = 'held'").fetchone()[0]
    finally:
        conn.close()
