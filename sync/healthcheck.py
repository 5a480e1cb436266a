"""Pings for an outside monitor (SYNC_HEALTHCHECK_URL): healthchecks.io and Cronitor learn that a run
started and how it ended, so they can alert when runs stop or keep failing.

healthchecks.io (and anything that speaks its protocol): `URL/start`, then `URL/<exit code>` — 0 is
success, anything else a failure — with `?rid=<run id>` pairing the two. Cronitor (`cronitor.link`):
`URL?state=run`, then `state=complete` or `state=fail&status_code=<exit code>`, paired by `series`.
A ping that fails is logged once and never changes the run's outcome.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit, urlunsplit

import urllib3

from sync.http import RequestStats, make_pool, reason
from sync.redact import Redactor

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds per ping: a monitor that is down must not hold up the run
MAX_MESSAGE = 2000  # characters of the summary sent with the last ping (Cronitor's limit)
# No retry: a ping that fails is reported and the run goes on, the next run pings again. Redirects are followed.
NO_RETRY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_status=False)


def is_cronitor(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "cronitor.link" or host.endswith(".cronitor.link")


class Healthcheck:
    """Start and finish pings around one run. Every method returns whether the ping got a 2xx answer."""

    def __init__(self, url: str, run_id: str, redactor: Redactor | None = None, timeout: float = TIMEOUT):
        self.url = url.rstrip("/") if not is_cronitor(url) else url
        self.run_id = run_id
        # The ping URL is a credential of the monitor: mask it (the run's own secrets too), show only its host.
        parts = urlsplit(url)
        own = Redactor([url, self.url, *(part for part in (parts.path.strip("/"), parts.query) if len(part) > 1)])
        self.redact = (lambda text: own(redactor(text))) if redactor else own
        self.timeout = timeout
        self.pool = make_pool(url, RequestStats(), pool_size=1)
        port = f":{parts.port}" if parts.port else ""
        self.shown = f"{parts.scheme}://{parts.hostname or ''}{port}"

    def start(self) -> bool:
        if is_cronitor(self.url):
            return self._ping(self._cronitor({"state": "run"}))
        return self._ping(self._healthchecks("start"))

    def finish(self, exit_code: int, message: str = "") -> bool:
        """Success when `exit_code` is 0, failure with the code otherwise; `message` (redacted, trimmed)
        becomes the ping's body or message."""
        message = self.redact(message)[:MAX_MESSAGE]
        if is_cronitor(self.url):
            params = {"state": "complete" if exit_code == 0 else "fail", "status_code": str(exit_code)}
            if message:
                params["message"] = message
            return self._ping(self._cronitor(params))
        return self._ping(self._healthchecks(str(exit_code)), body=message)

    def _healthchecks(self, suffix: str) -> str:
        """`URL/<suffix>?rid=<run id>`: the suffix ends the path, before any query the URL has, which is kept."""
        parts = urlsplit(self.url)
        query = "&".join(q for q in (parts.query, urlencode({"rid": self.run_id})) if q)
        return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{suffix}", query=query))

    def _cronitor(self, params: dict[str, str]) -> str:
        joiner = "&" if urlsplit(self.url).query else "?"
        return f"{self.url}{joiner}{urlencode({**params, 'series': self.run_id})}"

    def _ping(self, url: str, body: str = "") -> bool:
        try:
            if body:
                response = self.pool.request("POST", url, body=body.encode(), timeout=self.timeout,
                                             headers={"Content-Type": "text/plain; charset=utf-8"}, retries=NO_RETRY)
            else:
                response = self.pool.request("GET", url, timeout=self.timeout, retries=NO_RETRY)
        except Exception as exc:  # any failure: DNS, refused, timeout, a malformed URL
            log.warning("healthcheck ping to %s failed (%s); the run goes on", self.shown,
                        self.redact(reason(exc)))
            return False
        if not 200 <= response.status < 300:
            log.warning("healthcheck ping to %s answered %d; the run goes on", self.shown, response.status)
            return False
        return True
