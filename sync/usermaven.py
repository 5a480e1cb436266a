"""Usermaven's server-to-server event API: a thin client that sends batches of events."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from urllib.parse import urlencode

import urllib3

from sync.errors import UsermavenAuthError, UsermavenRejected, UsermavenUnavailable, UsermavenWrongUrl
from sync.http import CONNECT_TIMEOUT, NOT_RECEIVED_STATUSES, RequestStats, make_pool, reason
from sync.redact import Redactor

log = logging.getLogger(__name__)

# Usermaven's docs and SDKs send arrays; Jitsu caps one event at 51,200 bytes.
BATCH_EVENTS = 50
BATCH_BYTES = 400_000
HEADERS = {"Content-Type": "application/json"}


class UsermavenClient:
    """POSTs JSON arrays of events to the s2s endpoint; the token travels in the URL only."""

    def __init__(self, events_url: str, api_key: str, server_token: str, redactor: Redactor | None = None,
                 timeout: float = 60):
        self.events_url = events_url
        self.timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=timeout)
        self._params = {"token": f"{api_key}.{server_token}"}
        self.redact = redactor or Redactor([api_key, server_token, f"{api_key}.{server_token}"])
        self.stats = RequestStats()
        self._url = f"{events_url}{'&' if '?' in events_url else '?'}{urlencode(self._params)}"
        self._pool = make_pool(events_url, self.stats, retries=4, pool_size=2, statuses=NOT_RECEIVED_STATUSES,
                               resend_if_maybe_received=False)

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
            response = self._pool.request("POST", self._url, body=body, headers=HEADERS, timeout=self.timeout,
                                          redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            received = _maybe_received(exc)
            what = "did not answer in time, or the connection broke," if received else "could not be reached"
            raise UsermavenUnavailable(self.redact(f"Usermaven {what} ({reason(exc)})"),
                                       maybe_received=received) from None
        # The URL holds the token: the log handler's redactor masks it (-v shows it as ***).
        log.debug("POST %s -> %s (%d events)", self._url, response.status, len(events))
        if response.status < 300:
            return
        if response.status < 400:
            # Never followed: a redirect may resend the POST as a GET and take any 200 for delivery.
            where = (response.headers.get("Location") or "").split("?", 1)[0] or "nowhere"
            raise UsermavenWrongUrl(self.redact(f"Usermaven answered {response.status}, a redirect to "
                                                f"{where}, not 200: check USERMAVEN_EVENTS_URL"))
        text = f"Usermaven answered {response.status}: {_message(response, self.redact)}"
        if response.status in (401, 403):
            raise UsermavenAuthError(text + " — check USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN")
        if response.status in (404, 405):
            # No such endpoint: a wrong path, not an outage (every run would send the same batch again).
            raise UsermavenWrongUrl(text + " — check USERMAVEN_EVENTS_URL")
        if response.status in (400, 413, 422):
            raise UsermavenRejected(text)
        raise UsermavenUnavailable(text, maybe_received=response.status not in NOT_RECEIVED_STATUSES)


def _maybe_received(exc: urllib3.exceptions.HTTPError) -> bool:
    """Whether the request may have reached Usermaven: anything but a connection that never opened."""
    cause = (exc.reason or exc) if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    # NewConnectionError (refused, unknown host) is a ConnectTimeoutError too.
    return not isinstance(cause, urllib3.exceptions.ConnectTimeoutError)


def _message(response: urllib3.BaseHTTPResponse, redact: Redactor) -> str:
    """What Usermaven's answer says, short. Masked before it is cut: a secret the answer echoes and the cut
    divides would no longer match the mask."""
    text = redact(response.data.decode("utf-8", "replace"))
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200] or response.reason or "no message"
    # Masked again once decoded: JSON may write a secret with escapes (`\/`, `\u0075`) that the mask above
    # does not match.
    if isinstance(body, dict):
        return redact(str(body.get("message") or body.get("error") or body))[:500]
    return redact(str(body))[:200]


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
