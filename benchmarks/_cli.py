"""The CLI as the benchmark runs it: `attio-usermaven-sync` itself, plus two things a benchmark needs.

- At exit it writes the process's own peak memory (`VmHWM`, in kB) to $BENCH_HWM_FILE: `ru_maxrss` from
  `wait4` would include the parent's (the fork's) memory.
- With BENCH_NO_RATE_LIMIT=1 the client's rate limiter lets every request through, to measure local work
  (ATTIO_MAX_RPS cannot be set above Attio's 100/s).
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path


def _write_hwm() -> None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            Path(os.environ["BENCH_HWM_FILE"]).write_text(line.split()[1])


if os.environ.get("BENCH_HWM_FILE"):
    atexit.register(_write_hwm)

if os.environ.get("BENCH_NO_RATE_LIMIT") == "1":
    from sync import http

    http.RateLimiter.wait = lambda self, *args, **kwargs: None  # type: ignore[method-assign]

from sync import cli  # noqa: E402

if __name__ == "__main__":
    # What the installed command runs; a checkout older than entry_point (`--against`) has only main.
    sys.exit(getattr(cli, "entry_point", cli.main)())
