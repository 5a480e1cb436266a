"""Usermaven's server-to-server event API: a thin client that sends batches of events."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from sync.errors import UsermavenAuthError, UsermavenRedirected, UsermavenRejected, UsermavenUnavailable
from sync.http import CONNECT_TIMEOUT, NOT_RECEIVED_STATUSES, RequestStats, make_session, settle_environment
from sync.redact import Redactor

log = logging.getLogger(__name__)

# Usermaven's docs and SDKs send arrays; Jitsu caps one event at 51,200 bytes.
BATCH_EVENTS = 50
BATCH_BYTES = 400_000


class UsermavenClient:
    """POSTs JSON arrays of events to the s2s endpoint; the token travels in the URL only."""

    def __init__(self, events_url: str, api_key: str, server_token: str, redactor: Redactor | None = None,
                 timeout: float = 60):
        self.events_url = events_url
        self.timeout = (CONNECT_TIMEOUT, timeout)
        self._params = {"token": f"{api_key}.{server_token}"}
        self.redact = redactor or Redactor([api_key, server_token, f"{api_key}.{server_token}"])
        self.stats = RequestStats()
        self._session = make_session(self.stats, retries=4, statuses=NOT_RECEIVED_STATUSES,
                                     resend_if_maybe_received=False)
        settle_environment(self._session, events_url)
        # Every batch goes to the same URL with the same headers: prepared once and copied for each batch, as
        # requests' merging of settings into every request (runtime Protocol checks) costs more than the rest.
        self._template = self._session.prepare_request(requests.Request(
            "POST", events_url, params=self._params, headers={"Content-Type": "application/json"}))

    def send(self, events: Sequence[dict]) -> None:
        """Send one batch; return only when Usermaven answered 2xx, else raise a UsermavenError.

        Retried here only where Usermaven cannot have taken the batch (connection refused, 429, 503); a
        UsermavenUnavailable says with `maybe_received` whether it may have (a timeout, a 500)."""
        self.send_encoded([json.dumps(event, ensure_ascii=False) for event in events])

    def send_encoded(self, events: Sequence[str]) -> None:
        """`send` for events already encoded as JSON text: the body is the JSON array of them, the same bytes
        `json.dumps(events, ensure_ascii=False)` gives for the decoded events."""
        body = ("[" + ", ".join(events) + "]").encode("utf-8")
        self.stats.add(requests=1)
        try:
            request = self._template.copy()
            request.prepare_body(body, None)
            response = self._session.send(request, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            received = _maybe_received(exc)
            what = "did not answer in time, or the connection broke," if received else "could not be reached"
            raise UsermavenUnavailable(self.redact(f"Usermaven {what} ({type(exc).__name__}: {exc})"),
                                       maybe_received=received) from None
        # The URL holds the token: the log handler's redactor masks it (-v shows it as ***).
        log.debug("POST %s -> %s (%d events)", response.url, response.status_code, len(events))
        if response.status_code < 300:
            return
        if response.status_code < 400:
            # Never followed: requests would resend the POST as a GET and take any 200 for delivery.
            where = response.headers.get("Location", "").split("?", 1)[0] or "nowhere"
            raise UsermavenRedirected(self.redact(f"Usermaven answered {response.status_code}, a redirect to "
                                                  f"{where}, not 200: check USERMAVEN_EVENTS_URL"))
        message = self.redact(_message(response))
        text = f"Usermaven answered {response.status_code}: {message}"
        if response.status_code in (401, 403):
            raise UsermavenAuthError(text + " — check USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN")
        if response.status_code in (400, 413, 422):
            raise UsermavenRejected(text)
        raise UsermavenUnavailable(text, maybe_received=response.status_code not in NOT_RECEIVED_STATUSES)


def _maybe_received(exc: requests.RequestException) -> bool:
    """Whether the request may have reached Usermaven: anything but a connection that never opened."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # NewConnectionError (refused, unknown host) is a ConnectTimeoutError too.
    return not isinstance(reason, ConnectTimeoutError)


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason or "no message"
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return str(body)[:200]


def batches(events: Sequence[object], max_events: int = BATCH_EVENTS, max_bytes: int = BATCH_BYTES,
            sizes: Sequence[int] | None = None) -> list[list[int]]:
    """Split events into batches (as index lists) of at most `max_events` and about `max_bytes` each.

    `sizes`, when known, are the events' JSON sizes in bytes (saves encoding each one again); without them
    each event is a dict, encoded here to weigh it."""
    result: list[list[int]] = []
    current: list[int] = []
    size = 2
    for index, event in enumerate(events):
        encoded = sizes[index] if sizes is not None else len(json.dumps(event, ensure_ascii=False).encode("utf-8"))
        event_size = encoded + 1
        if current and (len(current) >= max_events or size + event_size > max_bytes):
            result.append(current)
            current, size = [], 2
        current.append(index)
        size += event_size
    if current:
        result.append(current)
    return result
