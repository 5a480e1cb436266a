"""Exit codes, and the errors every layer may raise: each names the exit code the command ends with.

Messages are written for the operator (what is wrong and what to do) and never hold a secret.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNDELIVERED = 1  # some events not delivered, Attio unreadable after retries, or an internal error
EXIT_USAGE = 2  # bad argument, configuration, workspace setup or state file
EXIT_LOCKED = 75  # another run holds the state lock (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C


class SyncError(Exception):
    """An expected failure with a message for the operator."""

    exit_code = EXIT_UNDELIVERED


class UsageError(SyncError):
    """A bad argument value."""

    exit_code = EXIT_USAGE


class ConfigError(SyncError):
    """Every problem found in the configuration, each with what to do about it."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("configuration error:\n" + "\n".join(f"  - {p}" for p in problems))


class SetupError(SyncError):
    """The workspace does not have what the configuration names."""

    exit_code = EXIT_USAGE


class StateError(SyncError):
    """The state file cannot be opened or read."""

    exit_code = EXIT_USAGE


class LockHeld(SyncError):
    """Another process holds the state lock; the message says which process and since when."""

    exit_code = EXIT_LOCKED


class AttioError(SyncError):
    """Attio answered with an error, or could not be reached after retries."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class AttioAuthError(AttioError):
    """The token was refused (401/403): a configuration problem."""

    exit_code = EXIT_USAGE


class AttioNotFound(AttioError):
    """404: the object, list, attribute or record does not exist."""

    exit_code = EXIT_USAGE


class UsermavenError(SyncError):
    """Usermaven did not take a batch. The message never holds the token."""


class UsermavenAuthError(UsermavenError):
    """401/403: the API key or server token is wrong. Nothing more can be sent this run."""


class UsermavenRejected(UsermavenError):
    """400: Usermaven refused the batch itself (bad JSON, an event over its size limit)."""


class UsermavenUnavailable(UsermavenError):
    """Network failure, or 5xx/429 after every retry: try again later. `maybe_received`: the request may
    have reached Usermaven (a timeout, a 500), so it is not sent again in this run."""

    def __init__(self, message: str, maybe_received: bool = False):
        super().__init__(message)
        self.maybe_received = maybe_received


class UsermavenWrongUrl(UsermavenError):
    """3xx, 404 or 405: USERMAVEN_EVENTS_URL is not the event endpoint. Nothing more can be sent this run."""


class DeliveryStopped(SyncError):
    """Usermaven cannot take events now (down, or the token refused); the rest stay pending."""

    def __init__(self, message: str, refused: bool = False, maybe_received: bool = False):
        super().__init__(message)
        self.refused = refused  # 401/403 or a wrong URL: a configuration problem, not a passing one
        # The last batch may have reached Usermaven: it waits to be sent again on a later run (delivery.py).
        self.maybe_received = maybe_received
