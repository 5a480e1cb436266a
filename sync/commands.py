"""One function per command: open the state under its lock, build the clients, run the steps, deliver what
was committed, record the run, and return a Report. The CLI, `schedule` and `demo` all call these."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sync.attio import AttioClient
from sync.backfill import backfill, backfill_id
from sync.check import SetupReport, canary_event, check_setup
from sync.config import Config
from sync.delivery import Sender, deliver, print_pending, release_held
from sync.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
    AttioAuthError,
    AttioError,
    AttioNotFound,
    DeliveryStopped,
    LockHeld,
    SetupError,
    StateError,
    SyncError,
    UsageError,
)
from sync.events import EventSettings, for_sending
from sync.healthcheck import Healthcheck
from sync.lock import StateLock, lock_holder
from sync.logformat import new_run_id, running
from sync.models import Counts, format_time
from sync.poll import poll, record_baseline
from sync.redact import Redactor
from sync.replay import replay
from sync.resolve import Resolver
from sync.source import DealSource
from sync.state import State, open_state
from sync.state.checkpoints import POLL
from sync.state.retries import POLL_SCOPE
from sync.state.sql import now_text
from sync.status import resume_command
from sync.usermaven import BATCH_EVENTS, UsermavenClient

# Free space the state's disk must have for a run to send events: marking a batch sent writes a few hundred KB
# to the journal at most.
MIN_FREE_BYTES = 8 * 2**20

log = logging.getLogger("sync")


@dataclass
class Report:
    """What one command run did: the CLI exits with `code`; `message` says why when it is not 0."""

    command: str
    code: int
    message: str
    counts: Counts
    attio_requests: int
    usermaven_requests: int
    seconds: float


@dataclass(frozen=True)
class Services:
    """What the steps of one run are built from; each step is handed only the parts it uses."""

    state: State
    source: DealSource
    resolver: Resolver
    usermaven: UsermavenClient
    settings: EventSettings
    config: Config


@dataclass
class Tally:
    """A run's running counts, the delivery errors met on the way, and whether it may still send."""

    counts: Counts = field(default_factory=Counts)
    errors: list[str] = field(default_factory=list)
    sending: bool = True
    unread: str = ""  # which deals could not be read, and what to do: the run then exits 1
    in_a_row: int = 0  # the last send may have arrived and failed (see delivery.STOP_AFTER)
    disk_full: str = ""  # why nothing more is sent (see room_to_record)

    def add(self, counts: Counts | Iterable[Counts]) -> None:
        for each in [counts] if isinstance(counts, Counts) else counts:
            self.counts += each

    def stopped(self, exc: DeliveryStopped) -> None:
        """Delivery stopped. After a refusal this run sends nothing more. Otherwise the end of the run tries
        again: what may have reached Usermaven (a timeout, a 500) waits to be sent again on a later run (see
        delivery.RESEND_AFTER), so it is sent at most once per run; after an answer that says nothing was taken
        (503, 429, refused connection) it is sent again then."""
        self.errors.append(str(exc))
        self.in_a_row = 1 if exc.maybe_received else 0
        if exc.refused:
            self.sending = False

    def room_to_record(self, config: Config) -> bool:
        """Whether the state's disk has room to mark what Usermaven takes as sent; if not, says why in
        `disk_full`. Without it, every run would send the same events again and fail to record them."""
        try:
            free = shutil.disk_usage(config.state_db.parent).free
        except OSError:
            return True  # unknown: the writes themselves will say
        if free >= MIN_FREE_BYTES:
            return True
        self.disk_full = (f"the disk that holds the state has {free // 1024} KB free, under the "
                          f"{MIN_FREE_BYTES // 2**20} MB needed to record what is sent: nothing more was sent; free "
                          "some space")
        return False


# A command's own work; it returns a final message (nothing more to do: the baseline) or None to go on to
# releasing held events and delivering.
Work = Callable[[Services, Tally], str | None]


def run_poll(config: Config, dry_run: bool = False, out: TextIO | None = None) -> Report:
    """`run`: one incremental poll; on an empty state, the baseline (nothing sent)."""

    def work(s: Services, tally: Tally) -> str | None:
        # A dry run takes no lock: a backfill under way holds it and is running, not unfinished.
        holder = lock_holder(config.state_db) if dry_run else None
        for unfinished in s.state.backfills.unfinished():
            started = unfinished["started_at"][:19].replace("T", " ")
            if holder and "(backfill)" in holder:
                log.info("a backfill started %s is running (%s; %d deals done so far); this dry run shows "
                         "what is committed now", started, holder, unfinished["deals_done"])
            elif s.state.notices.due(f"unfinished backfill {unfinished['id']}", str(unfinished["deals_done"])):
                # A standing condition: said when it changes and once a day, not on every poll.
                log.warning("a backfill started %s did not finish (%d deals done); resume it with: %s", started,
                            unfinished["deals_done"], resume_command(unfinished, config.state_db, config.config_file))
        if s.state.checkpoints.get(POLL) is None:
            counts = record_baseline(s.state, s.source)
            tally.add(counts)
            if dry_run:
                return f"dry run: the first run would record a baseline of {counts.deals_read} deals and send nothing"
            return (f"baseline recorded for {counts.deals_read} deals; nothing sent. "
                    "Use `run --backfill --since DATE` to send history")
        tally.add(poll(s.state, s.source, s.resolver, s.settings, timedelta(seconds=config.overlap_seconds)))
        if tally.counts.unread:
            tally.unread = unread_message(s.state.retries.rows(POLL_SCOPE),
                                          "they wait in the retry set and every run reads them again (see `status`)")
        return None

    return _execute("run", config, dry_run, out, work)


def run_backfill(config: Config, since: datetime, until: datetime | None, dry_run: bool = False,
                 out: TextIO | None = None, progress: bool = False) -> Report:
    """`run --backfill`: record every transition in [since, until), sending full batches as it goes."""

    def work(s: Services, tally: Tally) -> str | None:
        # Full batches go out on a thread of their own while the next deals are recorded (see Sender).
        sending = not dry_run and tally.room_to_record(config)
        sender = Sender(s.state, s.usermaven, config.usermaven_api_key, BATCH_EVENTS) if sending else None

        def send(counts: Iterator[Counts]) -> None:
            nonlocal sender
            try:
                tally.add(counts)
            except DeliveryStopped as exc:
                if exc.refused:
                    raise  # a refused token stops the backfill; what was committed stays, it resumes later
                tally.stopped(exc)
                log.error("%s; the backfill goes on recording, and sends what is pending at its end%s", exc,
                          " (this batch: on a later run)" if exc.maybe_received else "")
                if sender:
                    _close(sender, tally)
                sender = None

        try:
            for counts in backfill(s.state, s.source, s.resolver, s.settings, since, until, progress):
                tally.add(counts)
                if sender and not tally.room_to_record(config):
                    _close(sender, tally)
                    sender = None
                if sender:
                    send(sender.send_full_batches())
            if sender:
                send(sender.finish())
        finally:
            if sender:
                _close(sender, tally)  # before the run's last delivery: nothing on the wire is also pending then
        if tally.counts.unread:
            resume = resume_command({"since": format_time(since), "until": until and format_time(until)},
                                    config.state_db, config.config_file)
            tally.unread = unread_message(
                s.state.retries.rows(backfill_id(s.source, since, until)),
                f"every other deal is recorded; once Attio reads them, run the same command again: {resume}")
        return None

    return _execute("backfill", config, dry_run, out, work)


def _close(sender: Sender, tally: Tally) -> None:
    """Close the backfill's sender, counting what it settled even if a second Ctrl-C stops it midway."""
    try:
        sender.close()
    finally:
        tally.add(sender.closed)
        if sender.stopped is not None:
            tally.stopped(sender.stopped)


def replay_deal(config: Config, record_id: str, since: datetime | None, dry_run: bool = False,
                out: TextIO | None = None) -> Report:
    """`replay DEAL_ID`: queue the deal's transitions again (same ids) and send them."""

    def work(s: Services, tally: Tally) -> str | None:
        tally.add(replay(s.state, s.source, s.resolver, s.settings, record_id, since))
        return None

    return _execute("replay", config, dry_run, out, work)


@contextmanager
def _locked_state(config: Config, dry_run: bool, command: str) -> Iterator[State]:
    """The state, opened under its lock (a dry run: read-only, its writes kept aside, no lock). Raises LockHeld or
    StateError."""
    with ExitStack() as stack:
        try:
            if not dry_run:
                stack.enter_context(StateLock(config.state_db, command))
            state = open_state(config.state_db, dry_run=dry_run)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the state at {config.state_db} ({exc}): check --state or SYNC_STATE_DB, "
                             "and that the folder exists or can be created, is writable and has free space") from None
        stack.callback(state.close)
        yield state


def _attio(config: Config, redactor: Redactor) -> AttioClient:
    return AttioClient(config.attio_base_url, config.attio_api_key, config.attio_max_rps, redactor,
                       config.http_timeout)


def _usermaven(config: Config, redactor: Redactor) -> UsermavenClient:
    return UsermavenClient(config.usermaven_events_url, config.usermaven_api_key, config.usermaven_server_token,
                           redactor, config.http_timeout)


def _execute(command: str, config: Config, dry_run: bool, out: TextIO | None, work: Work) -> Report:
    run_id = new_run_id()
    with running(run_id, command):
        # The monitor watches the scheduled poll; a backfill or replay by hand is not what it times.
        if dry_run or command != "run" or not config.healthcheck_url:
            return _execute_run(command, config, dry_run, out, work)
        return _pinged(Healthcheck(config.healthcheck_url, run_id, Redactor(config.secrets)), command, config,
                       out, work)


def _pinged(check: Healthcheck, command: str, config: Config, out: TextIO | None, work: Work) -> Report:
    """The run between a start ping and a finish ping with its exit code. A run skipped because another holds
    the lock pings nothing: the monitor alerts only if no run completes in its period."""
    try:
        report = _execute_run(command, config, False, out, work, on_start=check.start)
    except LockHeld:
        raise
    except SyncError as exc:  # the state could not be opened: a failure the monitor should see
        check.finish(exc.exit_code, str(exc))
        raise
    check.finish(report.code, report.message or summary_line(report, False))
    return report


def _execute_run(command: str, config: Config, dry_run: bool, out: TextIO | None, work: Work,
                 on_start: Callable[[], object] | None = None) -> Report:
    redactor = Redactor(config.secrets)
    # Before the lock, the state and the start ping: a CA bundle or proxy they cannot use is a setting to fix.
    attio, usermaven = _attio(config, redactor), _usermaven(config, redactor)
    with _locked_state(config, dry_run, command) as state:
        if on_start is not None:
            on_start()
        source = DealSource(attio, config)
        services = Services(state=state, source=source, resolver=Resolver(attio, config.attio_user_id_attribute),
                            usermaven=usermaven, settings=EventSettings(config.usermaven_event_type,
                                                                        config.usermaven_site_url,
                                                                        config.usermaven_stage_event_types),
                            config=config)
        try:
            run_id = state.runs.start(command)
        except sqlite3.Error as exc:  # the run's first write: a full disk, an I/O error
            raise SyncError(f"{_unwritable(config, exc)}; nothing was read or sent") from None
        began = time.monotonic()
        tally = Tally()
        code, message = EXIT_OK, ""
        try:
            code, message = _work(services, tally, work, dry_run, out or sys.stdout, list_first=command == "backfill")
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
        except sqlite3.Error as exc:  # a full disk, an I/O error: the state could not be written
            code = EXIT_UNDELIVERED
            message = (f"{_unwritable(config, exc)}; what was committed stays, nothing was sent after the failure, "
                       "the next run goes on from there")
        except BrokenPipeError:
            # `--dry-run | head`: the reader has all it wanted. Point stdout at /dev/null so that Python's own
            # flush at exit does not fail again.
            if out is None or out is sys.stdout:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code, message = EXIT_OK, "the output was closed before every event was printed (dry run: nothing sent)"
        except Exception as exc:  # a bug: report it, redacted, rather than die with the token in a traceback
            log.debug("internal error", exc_info=True)
            code, message = EXIT_UNDELIVERED, redactor(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            seconds = time.monotonic() - began
            counts = tally.counts
            try:
                state.runs.finish(
                    run_id, seconds=round(seconds, 3), attio_requests=attio.stats.requests,
                    usermaven_requests=usermaven.stats.requests, deals_read=counts.deals_read,
                    transitions=counts.transitions, sent=counts.sent, held=counts.held, failed=counts.failed,
                    exit_code=code, message=redactor(message) or None)
            except sqlite3.Error as exc:  # the disk that failed the run fails this too: the run is reported
                log.warning("this run could not be recorded in the state (%s)", exc)
    report = Report(command, code, redactor(message), tally.counts, attio.stats.requests, usermaven.stats.requests,
                    seconds)
    if report.message:
        (log.info if code == EXIT_OK else log.error)("%s", report.message)
    log.info("%s", summary_line(report, dry_run), extra={"counts": summary_counts(report)})
    return report


def _unwritable(config: Config, exc: sqlite3.Error) -> str:
    """What to say when the state could not be written."""
    return f"the state at {config.state_db} could not be written ({exc}): check its disk (free space, errors)"


def _work(s: Services, tally: Tally, work: Work, dry_run: bool, out: TextIO, list_first: bool = False
          ) -> tuple[int, str]:
    s.source.check(list_first)  # a backfill's first page of deals comes with the checks, in one round trip
    s.resolver.user_id_attribute = s.source.user_id_attribute  # the slug check() found, if an id was configured
    started_at = now_text()
    final: str | None = None
    state_failed = False
    try:
        final = work(s, tally)
        if final is None:
            tally.add(release_held(s.state, s.source, s.resolver, detected_before=started_at))
    except DeliveryStopped as exc:
        tally.stopped(exc)
    except sqlite3.Error:
        state_failed = True  # nothing is sent: what Usermaven took could not be marked sent either
        raise
    finally:
        # Whatever was committed before an Attio failure or Ctrl-C is sent now, not left for the next run.
        if final is None and not state_failed:
            try:
                if dry_run:
                    tally.add(print_pending(s.state, out))
                elif tally.sending and not tally.disk_full and tally.room_to_record(s.config):
                    # Due when the run began: what fails in this run is not sent again in it.
                    tally.add(deliver(s.state, s.usermaven, s.config.usermaven_api_key, due=started_at,
                                      in_a_row=tally.in_a_row, taken=tally.counts.sent,
                                      room=lambda: tally.room_to_record(s.config)))
            except DeliveryStopped as exc:
                tally.stopped(exc)
    if final is not None:
        return EXIT_OK, final
    # The exit code says how the run ended, not what it met on the way: a 503 retried with success is exit 0, and
    # so is a run in which events only wait to be sent again after an earlier run's failure (delivery.RESEND_AFTER).
    counts = s.state.ledger.counts()
    counts["waiting"] = s.state.ledger.waiting(started_at) if counts["pending"] else 0
    errors = "; ".join(dict.fromkeys(tally.errors))
    problems = [tally.unread] if tally.unread else []
    if counts["pending"] and (errors or counts["pending"] > counts["waiting"]):
        why = "; ".join(text for text in (errors, tally.disk_full) if text) or "not sent"
        problems.append(f"{why}; {counts['pending']} event(s) stay pending for the next run")
    elif tally.counts.failed:
        problems.append(f"{tally.counts.failed} event(s) failed; see `status`")
    elif errors:
        log.warning("Usermaven failed on the way (%s); retried, and every event was delivered", errors)
    elif tally.disk_full:
        log.warning("%s", tally.disk_full)  # nothing was due
    if problems:
        return EXIT_UNDELIVERED, "; ".join(problems)
    report_standing_conditions(s.state, counts)
    return EXIT_OK, ""


def report_standing_conditions(state: State, counts: dict[str, int], now: datetime | None = None) -> None:
    """Events held, failed or waiting to be sent again stay so for many runs: say so when the number changes, and
    once a day."""
    standing = {
        "held": "%d event(s) held until their deal has a person with an email or user id; see `status`",
        "failed": "%d event(s) failed and are not retried: fix the cause, then `replay` the deal; see `status`",
        "waiting": "%d event(s) wait to be sent again after a send that may have reached Usermaven (a timeout, a "
                   "5xx); see `status`",
    }
    for name, text in standing.items():
        count = counts.get(name, 0)
        if count == 0:
            if state.notices.last(name) not in (None, "0") and state.notices.due(name, "0", now):
                log.info("no events %s any more", name)
        elif state.notices.due(name, str(count), now):
            log.warning(text + " (said again daily, or when the number changes)", count)


def summary_counts(report: Report) -> dict[str, int | float]:
    """The numbers of the summary line, for `--log-format json`."""
    return {**dataclasses.asdict(report.counts), "attio_requests": report.attio_requests,
            "usermaven_requests": report.usermaven_requests, "exit_code": report.code,
            "seconds": round(report.seconds, 3)}


def unread_message(rows: list[dict], what_to_do: str, shown: int = 5) -> str:
    """The run's message for deals whose history could not be read: each deal with Attio's answer."""
    named = "; ".join(f"deal {r['deal_key']}: {r['last_error']}" for r in rows[:shown])
    more = f"; and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"{len(rows)} deal(s) could not be read from Attio ({named}{more}); {what_to_do}"


def summary_line(report: Report, dry_run: bool) -> str:
    """The one line a run ends with: what it read, found and sent, and what it cost."""
    c = report.counts
    outcome = f"{c.printed} event(s) printed (dry run, nothing sent)" if dry_run else f"{c.sent} event(s) sent"
    replayed = f", {c.replayed} replayed" if c.replayed else ""
    return (f"{report.command}: {c.deals_read} deal(s) read, {c.transitions} new transition(s){replayed}, "
            f"{outcome}, {c.held} held, {c.failed} failed, {report.attio_requests} Attio request(s), "
            f"{report.usermaven_requests} Usermaven request(s), {report.seconds:.1f} s")


def check_configuration(config: Config) -> SetupReport:
    """`check`: the token, its scopes, the object or list, the stage attribute and its stages, the user id
    attribute, the state path. Reads only; creates nothing."""
    return check_setup(config, _attio(config, Redactor(config.secrets)))


@dataclass(frozen=True)
class CanaryReport:
    event: dict  # as sent, without api_key
    sends: int  # how many times this event id has now been sent


def send_test_event(config: Config, at: datetime | None, resend: bool) -> CanaryReport:
    """`check --send-test-event`: one test event with `_timestamp` at `at`, or (`resend`) the last one again
    with the same id. Raises a UsermavenError when Usermaven does not take it."""
    with _locked_state(config, dry_run=False, command="check") as state:
        if resend:
            event = state.canaries.last()
            if event is None:
                raise UsageError(f"no test event was sent with the state at {config.state_db}: send one first with "
                                 "`attio-usermaven-sync check --send-test-event`")
            if at is not None:
                raise UsageError("--resend sends the last test event as it was: it takes no --at")
        else:
            event = canary_event(config, at or datetime.now(UTC) - timedelta(days=1))
        _usermaven(config, Redactor(config.secrets)).send([for_sending(event, config.usermaven_api_key)])
        return CanaryReport(event, state.canaries.record_send(event))
