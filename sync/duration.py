"""Intervals written the way people write them: `30s`, `5m`, `1h`, `1h30m`, `7d`, or bare seconds."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
MIN_EVERY = 10  # seconds: a shorter poll interval only queues runs behind the lock
MAX_SECONDS = 3650 * 86_400  # ten years: longer is a typo, and overflows the clock arithmetic it feeds
_PART = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> int:
    """Seconds in `text`; raise ValueError saying how to write it."""
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    else:
        parts = _PART.findall(value)
        if (not value or not parts or "".join(n + u for n, u in parts) != value
                or len({u for _, u in parts}) < len(parts)):
            raise ValueError(f"{text!r} is not a duration: write e.g. 30s, 5m, 1h or 1h30m (or seconds alone)")
        seconds = sum(int(number) * UNITS[unit] for number, unit in parts)
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than ten years: write e.g. 7d or 30d")
    return seconds


def parse_every(text: str) -> int:
    """`schedule --every`: a duration of at least MIN_EVERY seconds."""
    seconds = parse_duration(text)
    if seconds < MIN_EVERY:
        raise ValueError(f"--every must be at least {MIN_EVERY} seconds, got {text}")
    return seconds


def describe(seconds: int) -> str:
    """The shortest way to write `seconds` back: 300 → 5m, 90 → 1m30s."""
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)
