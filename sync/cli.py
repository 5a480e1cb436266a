"""The command line: parse arguments, call one command function, print its result, exit with its code."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from dateutil.parser import isoparse

from sync import __version__, commands
from sync.check import SetupReport
from sync.config import Config, load_config
from sync.duration import parse_duration, parse_every
from sync.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE, SyncError, UsageError
from sync.logformat import FORMATS, RunFields, make_handler
from sync.redact import Redactor
from sync.status import check_health, format_status, read_status

log = logging.getLogger("sync")


def parse_moment(text: str, option: str) -> datetime:
    """A date or ISO 8601 timestamp (naive = UTC) that is not in the future."""
    try:
        moment = isoparse(text)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"{option} {text!r} is not a date or ISO 8601 timestamp in range: use e.g. 2024-01-01 "
                         "or 2024-01-01T09:30:00Z") from None
    if moment > datetime.now(UTC):
        raise UsageError(f"{option} {text} is in the future: give a moment in the past")
    return moment


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _every(text: str) -> int:
    try:
        return parse_every(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dry-run", action="store_true",
                        help="compute and print the events that would be sent (JSON lines); send nothing, "
                             "leave the state file unchanged")
    common.add_argument("--state", type=Path, metavar="PATH", help="state database (default: SYNC_STATE_DB)")
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings (environment wins)")
    common.add_argument("-v", "--verbose", action="store_true", help="log every request")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")
    common.add_argument("--log-format", choices=FORMATS, default="text",
                        help="text (default: UTC time, level, message) or json (one object per line)")

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
    status.add_argument("--check", action="store_true",
                        help="one line and a monitoring plugin's exit code: 0 OK, 1 WARNING, 2 CRITICAL")
    status.add_argument("--max-age", type=_duration, default="15m", metavar="DURATION",
                        help="with --check: CRITICAL when no run succeeded within this (default 15m)")
    status.add_argument("--max-held", type=_duration, default="7d", metavar="DURATION",
                        help="with --check: WARNING when an event has been held longer (default 7d)")

    replay = commands.add_parser("replay", parents=[common], help="send one deal's transitions again")
    replay.add_argument("deal_id", metavar="DEAL_ID", help="the deal's Attio record id")
    replay.add_argument("--since", metavar="DATE", help="only transitions at or after this moment")

    schedule = commands.add_parser("schedule", parents=[common], help="run the poll every few minutes (APScheduler)")
    schedule.add_argument("--every", type=_every, default="5m", metavar="DURATION",
                          help="time between polls: 30s, 5m, 1h, 1h30m or seconds alone (default 5m, at least 10s)")

    check = commands.add_parser("check", parents=[common],
                                help="check the configuration before the first run; send a test event")
    check.add_argument("--send-test-event", action="store_true",
                       help="then send one test event dated --at, to see where Usermaven places it")
    check.add_argument("--at", metavar="DATE", help="with --send-test-event: the event's time (default: a day ago)")
    check.add_argument("--resend", action="store_true",
                       help="with --send-test-event: send the last test event again, with the same id")

    demo = commands.add_parser("demo", parents=[common], help="try everything against a local sandbox")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox servers running afterwards")
    demo.add_argument("--deals", type=int, default=300, help="deals in the generated workspace (default 300)")
    return parser


def setup_logging(verbose: bool, quiet: bool, redactor: Redactor, stream: TextIO | None = None,
                  log_format: str = "text", command: str | None = None) -> None:
    """Every line to stderr (or `stream`), secrets masked, with a UTC time and a level, as text or JSON."""
    handler = make_handler(stream or sys.stderr, log_format, redactor, RunFields(command=command))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not verbose:
        logging.getLogger("urllib3").setLevel(logging.ERROR)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, kept fixed
GC_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)


def keep_memory_flat() -> None:
    """Give large answers back to the system when they are freed (a page of 500 records is megabytes).

    glibc raises its mmap threshold to the size of the first large block freed, and carves later ones from the
    heaps of the threads that read them, where they leave holes: the process's memory then grows with the length
    of a backfill. A fixed threshold keeps the peak flat. Nothing to do without glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return
    if mallopt is not None and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def collect_garbage_less() -> None:
    """Fewer passes of the cycle collector: a backfill makes millions of short-lived containers (pages,
    values, events) and almost no cycles, and with Python's thresholds (700, 10, 10) the collector ran over
    a thousand times, about 5% of a backfill's CPU; with (20,000, 20, 20), a few dozen. The modules imported
    so far are moved out of its sight for good (`gc.freeze`)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def run_on_one_cpu() -> None:
    """Keep the process's threads on one CPU, the one it runs on now (of those it may use), on systems that let
    a process choose (Linux) and with Python's GIL. Called before any thread starts: threads inherit it.

    The threads take turns holding the GIL and hand it over at every socket call, a few times per history read.
    On two cores each handover woke a thread on the other one: with Attio answering at once, a backfill made
    three times the context switches and spent about a sixth more CPU than on one core, and took longer
    (benchmarks/bench.py; the README's Performance). What runs without the GIL (SQLite, the kernel's share of
    the sockets) is small beside it, and within Attio's rate limit a run needs a fraction of one core. Where the
    CPU it runs on cannot be read, or the system refuses, the process is left as it was."""
    if not hasattr(os, "sched_setaffinity") or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return  # no way to choose (macOS, Windows), or a free-threaded Python whose threads do run at once
    try:
        allowed = os.sched_getaffinity(0)
        cpu = current_cpu()
        if len(allowed) > 1 and cpu in allowed:
            os.sched_setaffinity(0, {cpu})
    except OSError:  # not allowed here (a seccomp profile, say)
        pass


def current_cpu() -> int | None:
    """The CPU this thread last ran on (Linux's /proc), None where that cannot be read."""
    try:
        fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[36])  # field 39 of stat(5), `processor`; the split starts at field 3
    except (OSError, IndexError, ValueError):
        return None


def entry_point() -> int:
    """The `attio-usermaven-sync` command and `python -m sync`: the settings of the whole process (glibc's
    mmap threshold, the cycle collector, one CPU), then `main`. Not `main`'s own: tests call it many times in
    one process."""
    keep_memory_flat()
    collect_garbage_less()
    run_on_one_cpu()
    return main()


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (the process's arguments when None); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (already explained, exit 2)
        return int(exc.code or 0)
    setup_logging(args.verbose, args.quiet, Redactor(), log_format=args.log_format, command=args.command)
    try:
        return dispatch(args)
    except SyncError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line through the redactor (the traceback with -v), never a raw traceback
        log.debug("internal error", exc_info=True)
        log.error("internal error: %s: %s (please report it; -v shows where)", type(exc).__name__, exc)
        return EXIT_UNDELIVERED


def dispatch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the command `args` names; return its exit code. Raises SyncError for a user mistake."""
    # The demo's sandbox and the scheduler's APScheduler are imported by the command that runs them: the others,
    # what cron runs every few minutes included, would carry 5 MB of modules they never use.
    if args.command == "demo":
        from sync.demo import demo

        return demo(args.deals, keep=args.keep, dry_run=args.dry_run, state=args.state, quiet=args.quiet)
    config = load_config(os.environ, args.config, args.state, need_credentials=args.command != "status")
    setup_logging(args.verbose, args.quiet, Redactor(config.secrets), log_format=args.log_format,
                  command=args.command)
    if args.command == "status" and args.check:
        health = check_health(config.state_db, timedelta(seconds=args.max_age), timedelta(seconds=args.max_held))
        (out or sys.stdout).write(health.line + "\n")
        return health.code
    if args.command == "status":
        report = read_status(config.state_db, config.config_file)
        (out or sys.stdout).write(json.dumps(report, indent=2, ensure_ascii=False) + "\n" if args.json
                                  else format_status(report) + "\n")
        return EXIT_OK
    if args.command == "check":
        return check_command(args, config, out or sys.stdout)
    if args.command == "schedule":
        from sync.scheduler import run_every

        return run_every(args.every, lambda: commands.run_poll(config, args.dry_run, out).code)
    return run_command(args, config, out)


def run_command(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    """`run` (poll or backfill) or `replay`, after checking the dates given."""
    since = parse_moment(args.since, "--since") if args.since else None
    until = parse_moment(args.until, "--until") if getattr(args, "until", None) else None
    if args.command == "replay":
        return commands.replay_deal(config, args.deal_id, since, args.dry_run, out).code
    if not args.backfill:
        if since or until:
            raise UsageError("--since and --until go with --backfill (replay DEAL_ID takes --since, not --until)")
        return commands.run_poll(config, args.dry_run, out).code
    if since is None:
        raise UsageError("--backfill needs --since DATE: the first moment whose stage changes to send")
    if until and until <= since:
        raise UsageError("--until must be after --since")
    progress = sys.stderr.isatty() and not args.quiet
    return commands.run_backfill(config, since, until, args.dry_run, out, progress).code


def check_command(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """`check [--send-test-event [--at DATE] [--resend]]`: the report, then the canary if asked and all is well."""
    if (args.at or args.resend) and not args.send_test_event:
        raise UsageError("--at and --resend go with --send-test-event")
    if args.send_test_event and args.dry_run:
        raise UsageError("--send-test-event sends a real event, so it has no --dry-run: run `check` alone to see "
                         "the report without sending anything")
    at = parse_moment(args.at, "--at") if args.at else None
    report = commands.check_configuration(config)
    out.write(format_setup_report(report, config) + "\n")
    if not report.ok:
        return EXIT_USAGE
    if args.send_test_event:
        out.write(format_canary(commands.send_test_event(config, at, args.resend), config) + "\n")
    return EXIT_OK


def format_setup_report(report: SetupReport, config: Config) -> str:
    width = max((len(f.what) for f in report.findings), default=0)
    lines = [f"  {'ok  ' if f.ok else 'FAIL'}  {f.what:<{width}}  {f.detail}" for f in report.findings]
    if report.stages:
        target = config.attio_list or config.attio_object
        lines.append(f"Stages of {target}.{config.attio_stage_attribute} (status id, then the title as "
                     "deal_stage and previous_stage will show it):")
        lines += [f"  {s.status_id}  {s.title}{'  (archived)' if s.archived else ''}" for s in report.stages]
    lines.append("Usermaven is not contacted by `check`: `check --send-test-event` checks USERMAVEN_API_KEY and "
                 "USERMAVEN_SERVER_TOKEN by sending one test event.")
    failed = sum(not f.ok for f in report.findings)
    lines.append(f"All {len(report.findings)} checks passed." if not failed else
                 f"{failed} of {len(report.findings)} checks failed: fix what they say, then run "
                 "`attio-usermaven-sync check` again.")
    return "\n".join(lines)


def format_canary(canary: commands.CanaryReport, config: Config) -> str:
    event = canary.event
    when = datetime.fromtimestamp(event["_timestamp"] / 1000, UTC)
    sent = event["event_attributes"]["sent_at"].replace("T", " ").replace("Z", " UTC")
    endpoint = config.usermaven_events_url
    if canary.sends == 1:
        return "\n".join([
            f"Sent one test event to {endpoint}; Usermaven accepted it (it stores events within minutes).",
            f"  event type  {event['event_type']!r}    event id  {event['event_id']}",
            f"  user id     {event['user']['id']!r}    _timestamp  {when:%Y-%m-%d %H:%M:%S} UTC",
            f"Where to look: in Usermaven, the custom event {event['event_type']!r} (e.g. the events of the user "
            f"{event['user']['id']!r}), on {when:%Y-%m-%d}.",
            f"What to expect: one event at {when:%Y-%m-%d %H:%M} UTC, the time of --at, not {sent}, the time it "
            "was sent. If it shows at the time it was sent, Usermaven ignores _timestamp: a backfill would put "
            "every past stage change on the day it runs, so do not backfill.",
            "Then run `attio-usermaven-sync check --send-test-event --resend`: it sends the same event id again, "
            "and Usermaven should still show one event (it collapses events with the same id, eventually). Two "
            "mean a replay after a fix would count a conversion twice.",
        ])
    return "\n".join([
        f"Sent the test event {event['event_id']} again (sent {canary.sends} times now); Usermaven accepted it.",
        f"What to expect: still one {event['event_type']!r} event at {when:%Y-%m-%d %H:%M} UTC once Usermaven has "
        "merged them (allow it some time); one per send means Usermaven does not deduplicate event ids.",
    ])
