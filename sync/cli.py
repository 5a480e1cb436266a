"""The command line: parse, configure, lock, run one command, report, exit with a documented code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dateutil.parser import isoparse

from sync import __version__
from sync.attio import AttioAuthError, AttioClient, AttioError, AttioNotFound
from sync.backfill import backfill
from sync.config import Config, ConfigError, load_config
from sync.delivery import DeliveryStopped, deliver, release_held
from sync.job import Context
from sync.lock import LockHeld, StateLock
from sync.pipeline import Pipeline, SetupError
from sync.poll import POLL, poll, record_baseline
from sync.redact import RedactingFilter, Redactor
from sync.replay import replay
from sync.resolve import Resolver
from sync.store import Store, now_text
from sync.usermaven import UsermavenClient

EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERRUPTED = 0, 1, 2, 75, 130

log = logging.getLogger("sync")


class UsageError(Exception):
    """A bad argument value (exit 2)."""


def parse_moment(text: str, option: str) -> datetime:
    """A date or ISO 8601 timestamp (naive = UTC) that is not in the future."""
    try:
        moment = isoparse(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a date or ISO 8601 timestamp: use e.g. 2024-01-01 "
                         "or 2024-01-01T09:30:00Z") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > datetime.now(UTC):
        raise UsageError(f"{option} {text} is in the future: give a moment in the past")
    return moment


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dry-run", action="store_true",
                        help="compute and print the events that would be sent (JSON lines); send nothing, "
                             "leave the state file unchanged")
    common.add_argument("--state", type=Path, metavar="PATH", help="state database (default: SYNC_STATE_DB)")
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings (environment wins)")
    common.add_argument("-v", "--verbose", action="store_true", help="log every request")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")

    parser = argparse.ArgumentParser(
        prog="attio-usermaven-sync",
        description="Send every Attio deal stage change to Usermaven as a custom event.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="one incremental poll (what cron runs), or a backfill")
    run.add_argument("--backfill", action="store_true", help="send historical stage changes (needs --since)")
    run.add_argument("--since", metavar="DATE", help="with --backfill: first moment to send (date or ISO 8601)")
    run.add_argument("--until", metavar="DATE", help="with --backfill: send changes before this moment only")

    status = commands.add_parser("status", parents=[common], help="checkpoint, last runs and ledger counts")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    replay = commands.add_parser("replay", parents=[common], help="send one deal's transitions again")
    replay.add_argument("deal_id", metavar="DEAL_ID", help="the deal's Attio record id")
    replay.add_argument("--since", metavar="DATE", help="only transitions at or after this moment")

    schedule = commands.add_parser("schedule", parents=[common], help="run the poll every N seconds (APScheduler)")
    schedule.add_argument("--every", type=int, default=300, metavar="SECONDS",
                          help="seconds between polls (default 300)")

    demo = commands.add_parser("demo", parents=[common], help="try everything against a local sandbox")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox servers running afterwards")
    demo.add_argument("--deals", type=int, default=300, help="deals in the generated workspace (default 300)")
    return parser


def setup_logging(verbose: bool, quiet: bool, redactor: Redactor, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not verbose:
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `attio-usermaven-sync` and `python -m sync`; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (already explained, exit 2)
        return int(exc.code or 0)
    setup_logging(args.verbose, args.quiet, Redactor())
    try:
        return _main(args)
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            from sync.demo import demo

            return demo(args)
        config = load_config(os.environ, args.config, args.state, need_credentials=args.command != "status")
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    redactor = Redactor(config.secrets)
    setup_logging(args.verbose, args.quiet, redactor)
    try:
        if args.command == "status":
            return show_status(config.state_db, args.json)
        if args.command == "schedule":
            from sync.scheduler import run_every

            return run_every(args.every, lambda: execute(args, config, redactor))
        return execute(args, config, redactor)
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE


def execute(args: argparse.Namespace, config: Config, redactor: Redactor, out: TextIO | None = None) -> int:
    """Run `run` (poll or backfill) or `replay` under the state lock; return the exit code."""
    since = parse_moment(args.since, "--since") if getattr(args, "since", None) else None
    until = parse_moment(args.until, "--until") if getattr(args, "until", None) else None
    backfilling = getattr(args, "backfill", False)
    if backfilling and since is None:
        raise UsageError("--backfill needs --since DATE: the first moment whose stage changes to send")
    if not backfilling and args.command == "run" and (since or until):
        raise UsageError("--since and --until go with --backfill (or with replay)")
    if since and until and until <= since:
        raise UsageError("--until must be after --since")
    lock = None if args.dry_run else StateLock(config.state_db)
    try:
        if lock is not None:
            lock.__enter__()
        store = Store.open(config.state_db, dry_run=args.dry_run)
    except LockHeld as exc:
        log.error("%s", exc)
        return EXIT_LOCKED
    except (OSError, sqlite3.Error) as exc:
        if lock is not None:
            lock.__exit__(None, None, None)
        log.error("cannot open the state at %s (%s): check --state or SYNC_STATE_DB, and that the folder "
                  "exists or can be created and is writable", config.state_db, exc)
        return EXIT_USAGE
    try:
        return _execute(args, config, store, redactor, since, until, backfilling, out)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def _execute(args: argparse.Namespace, config: Config, store: Store, redactor: Redactor, since: datetime | None,
             until: datetime | None, backfilling: bool, out: TextIO | None) -> int:
    attio = AttioClient(config.attio_base_url, config.attio_api_key, config.attio_max_rps, redactor,
                        config.http_timeout)
    usermaven = UsermavenClient(config.usermaven_events_url, config.usermaven_api_key,
                                config.usermaven_server_token, redactor, config.http_timeout)
    pipeline = Pipeline(attio, config)
    ctx = Context(config=config, store=store, attio=attio, usermaven=usermaven, pipeline=pipeline,
                  resolver=Resolver(attio, config.attio_user_id_attribute), dry_run=args.dry_run,
                  out=out or sys.stdout, show_progress=sys.stderr.isatty() and not args.quiet)
    # `schedule` runs the same poll as `run`.
    command = "backfill" if backfilling else "run" if args.command == "schedule" else args.command
    run_id = store.start_run(command)
    ctx.started_at = now_text()
    began = time.monotonic()
    code, message = EXIT_OK, ""
    try:
        code, message = _work(ctx, args, command, since, until)
    except (AttioAuthError, SetupError) as exc:
        code, message = EXIT_USAGE, str(exc)
    except AttioNotFound as exc:
        hint = ("check the deal id" if command == "replay"
                else "check ATTIO_OBJECT, ATTIO_LIST and ATTIO_STAGE_ATTRIBUTE")
        code, message = EXIT_USAGE, f"{exc}; {hint}"
    except AttioError as exc:
        code = EXIT_UNDELIVERED
        message = f"{exc}; nothing past the last committed batch was recorded, the next run retries"
    except KeyboardInterrupt:
        code, message = EXIT_INTERRUPTED, "interrupted; what was committed stays, the next run goes on from there"
    except BrokenPipeError:
        # `--dry-run | head`: the reader has all it wanted. Point stdout at /dev/null so that Python's own
        # flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code, message = EXIT_OK, "the output was closed before every event was printed (dry run: nothing sent)"
    except Exception as exc:  # a bug: report it, redacted, rather than die with the token in a traceback
        log.debug("internal error", exc_info=True)
        code, message = EXIT_UNDELIVERED, redactor(f"internal error: {type(exc).__name__}: {exc}")
    finally:
        summary = ctx.summary
        seconds = time.monotonic() - began
        store.finish_run(
            run_id, seconds=round(seconds, 3), attio_requests=attio.stats.requests,
            usermaven_requests=usermaven.stats.requests, deals_read=summary.deals_read,
            transitions=summary.transitions, sent=summary.sent, held=summary.held, failed=summary.failed,
            exit_code=code, message=redactor(message) or None)
        store.close()
    if message:
        (log.info if code == EXIT_OK else log.error)("%s", redactor(message))
    _report(command, ctx, seconds, args.dry_run)
    return code


def _work(ctx: Context, args: argparse.Namespace, command: str, since: datetime | None,
          until: datetime | None) -> tuple[int, str]:
    ctx.pipeline.check()
    if command == "run":
        _warn_unfinished_backfills(ctx.store)
    if command == "run" and ctx.store.checkpoint(POLL) is None:
        count = record_baseline(ctx)
        if ctx.dry_run:
            return EXIT_OK, f"dry run: the first run would record a baseline of {count} deals and send nothing"
        return EXIT_OK, (f"baseline recorded for {count} deals; nothing sent. "
                         "Use `run --backfill --since DATE` to send history")
    try:
        if command == "backfill":
            assert since is not None
            backfill(ctx, since, until)
        elif command == "replay":
            replay(ctx, args.deal_id, since)
        else:
            poll(ctx)
        release_held(ctx, detected_before=ctx.started_at)
    except DeliveryStopped as exc:
        ctx.summary.errors.append(str(exc))
    finally:
        # Whatever was committed before an Attio failure or Ctrl-C is sent now, not left for the next run.
        try:
            deliver(ctx)
        except DeliveryStopped as exc:
            ctx.summary.errors.append(str(exc))
    counts = ctx.store.counts()
    if ctx.summary.errors or ctx.summary.failed:
        pending = counts["pending"]
        return EXIT_UNDELIVERED, (f"{'; '.join(dict.fromkeys(ctx.summary.errors))}; {pending} event(s) stay "
                                  "pending for the next run" if ctx.summary.errors else
                                  f"{ctx.summary.failed} event(s) failed; see `status`")
    if counts["held"]:
        log.warning("%d event(s) held until their deal has a person with an email or user id; "
                    "see `status`", counts["held"])
    return EXIT_OK, ""


def _resume_command(backfill: dict) -> str:
    until = f" --until {backfill['until']}" if backfill["until"] else ""
    return f"attio-usermaven-sync run --backfill --since {backfill['since']}{until}"


def _warn_unfinished_backfills(store: Store) -> None:
    for unfinished in store.unfinished_backfills():
        log.warning("a backfill started %s did not finish (%d deals done); resume it with: %s",
                    unfinished["started_at"][:19].replace("T", " "), unfinished["deals_done"],
                    _resume_command(unfinished))


def _report(command: str, ctx: Context, seconds: float, dry_run: bool) -> None:
    s = ctx.summary
    outcome = f"{s.printed} event(s) printed (dry run, nothing sent)" if dry_run else f"{s.sent} event(s) sent"
    replayed = f", {s.replayed} replayed" if s.replayed else ""
    log.info("%s: %d deal(s) read, %d new transition(s)%s, %s, %d held, %d failed, %d Attio request(s), "
             "%d Usermaven request(s), %.1f s", command, s.deals_read, s.transitions, replayed, outcome, s.held,
             s.failed, ctx.attio.stats.requests, ctx.usermaven.stats.requests, seconds)


def show_status(state: Path, as_json: bool, out: TextIO | None = None) -> int:
    """Print the checkpoint, ledger counts, held reasons, failures and the last runs."""
    out = out or sys.stdout
    if not state.exists():
        log.error("no state database at %s: check --state or SYNC_STATE_DB, or create it with "
                  "`attio-usermaven-sync run`", state)
        return EXIT_USAGE
    try:
        store = Store.open(state, dry_run=True)
    except sqlite3.Error as exc:
        log.error("cannot read the state database at %s (%s): is it an attio-usermaven-sync state file?",
                  state, exc)
        return EXIT_USAGE
    report = {
        "state": str(state),
        "checkpoints": store.checkpoints(),
        "deals_in_snapshot": store.deal_count(),
        "ledger": store.counts(),
        "held": store.held_reasons(),
        "pending_errors": store.pending_errors(),
        "failed": store.failures(),
        "unfinished_backfills": [{**b, "resume": _resume_command(b)} for b in store.unfinished_backfills()],
        "runs": store.last_runs(),
    }
    store.close()
    if as_json:
        out.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    cp = report["checkpoints"]
    lines = [
        f"state:       {state}",
        f"checkpoint:  {cp.get('poll', 'none yet (the first run records the baseline)')}",
        f"baseline:    {cp.get('baseline', 'none')}",
        f"deals:       {report['deals_in_snapshot']} in the snapshot",
        "ledger:      " + ", ".join(f"{n} {state_}" for state_, n in report["ledger"].items()),
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
    out.write("\n".join(lines) + "\n")
    return EXIT_OK
