"""Keeping secrets out of every message: one redactor, used by errors and by the log handler."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values are not masked: an empty or one-letter "secret" would garble every message ("." in every
# path, "c" in every word), and no real key or token is this short.
MIN_SECRET_LENGTH = 8
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


class Redactor:
    """Replaces every known secret (and its URL-encoded forms, and the secret with its %-escapes in capitals, as
    urllib3 writes a URL it logs: `%7E` for `%7e`) with ***; values shorter than MIN_SECRET_LENGTH are left
    alone."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms.update({secret, quote(secret, safe=""), quote_plus(secret),
                              _ESCAPE.sub(lambda m: m[0].upper(), secret)})
        # Longest first, so the joined token is masked whole before its parts.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return text


class RedactingFilter(logging.Filter):
    """A log filter that renders each record once and masks secrets in it, whoever logged it."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
