"""Benchmark: backfills of growing workspaces against the Attio sandbox, next to the rate limit's floor.

Each size runs in fresh processes: the sandbox (`python -m sync.sandbox serve`, with a per-request latency
and Attio's rate limit enforced) and the real CLI (`attio-usermaven-sync run --backfill`), whose wall time and
peak RSS (from wait4) are measured. The floor is the time the rate limit alone imposes: Attio requests ÷
ATTIO_MAX_RPS. Not a test: it measures and prints.

    python benchmarks/backfill.py                       # 500, 2,000 and 10,000 deals (about 5 minutes)
    python benchmarks/backfill.py --sizes 500 --max-rps 50 --server-limit 50 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def run_one(deals: int, args: argparse.Namespace) -> dict:
    server = subprocess.Popen(
        [sys.executable, "-m", "sync.sandbox", "serve", "--deals", str(deals), "--seed", "1",
         "--rate-limit", str(args.server_limit), "--latency", str(args.latency),
         "--stage-changes", "3", "6"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        coordinates = json.loads(server.stdout.readline())
        with tempfile.TemporaryDirectory() as folder:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTIO_", "USERMAVEN_", "SYNC_"))}
            env.update({
                "ATTIO_BASE_URL": coordinates["attio_url"], "ATTIO_API_KEY": coordinates["attio_token"],
                "ATTIO_MAX_RPS": str(args.max_rps), "ATTIO_CONCURRENCY": str(args.concurrency),
                "ATTIO_USER_ID_ATTRIBUTE": "app_user_id",
                "USERMAVEN_EVENTS_URL": coordinates["usermaven_events_url"],
                "USERMAVEN_API_KEY": coordinates["usermaven_api_key"],
                "USERMAVEN_SERVER_TOKEN": coordinates["usermaven_server_token"],
                "USERMAVEN_SITE_URL": "https://bench.example", "SYNC_STATE_DB": str(Path(folder) / "sync.db"),
            })
            began = time.perf_counter()
            cli = subprocess.Popen(
                [sys.executable, "-m", "sync", "run", "--backfill", "--since", "2020-01-01", "-q"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(cli.pid, 0)
            wall = time.perf_counter() - began
            stderr = cli.stderr.read() if cli.stderr else ""
            code = os.waitstatus_to_exitcode(status)
            cli.returncode = code
        attio = requests.get(coordinates["attio_url"] + "/_sandbox/stats", timeout=10).json()
        collector_url = coordinates["usermaven_events_url"].split("/api/")[0]
        usermaven = requests.get(collector_url + "/_sandbox/stats", timeout=10).json()
        floor = attio["requests"] / args.max_rps
        return {
            "deals": deals, "exit": code, "wall_s": wall, "attio_requests": attio["requests"],
            "rate_limited": attio["rate_limited"], "usermaven_requests": usermaven["requests"],
            "events": usermaven["events"], "floor_s": floor, "ratio": wall / floor,
            "peak_rss_mb": usage.ru_maxrss / 1024, "stderr": stderr.strip()[-500:],
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 10000])
    parser.add_argument("--max-rps", type=float, default=50, help="ATTIO_MAX_RPS (default 50)")
    parser.add_argument("--server-limit", type=int, default=50,
                        help="the sandbox's rate limit, requests/s (default 50: equal to ATTIO_MAX_RPS)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per Attio request (default 0.05)")
    parser.add_argument("--concurrency", type=int, default=8, help="ATTIO_CONCURRENCY (default 8)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()

    print(f"backfill benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"ATTIO_MAX_RPS={args.max_rps:g}, sandbox limit {args.server_limit}/s, latency "
          f"{args.latency * 1000:.0f} ms, ATTIO_CONCURRENCY={args.concurrency}, 3-6 stage changes per deal")
    header = (f"{'deals':>7} {'wall s':>8} {'floor s':>8} {'wall/floor':>10} {'Attio req':>10} {'429s':>5} "
              f"{'events':>7} {'UM req':>7} {'UM limit':>8} {'peak RSS MB':>11} {'exit':>4}")
    print(header)
    print("-" * len(header))
    results = []
    for deals in args.sizes:
        r = run_one(deals, args)
        results.append(r)
        print(f"{r['deals']:>7} {r['wall_s']:>8.1f} {r['floor_s']:>8.1f} {r['ratio']:>10.3f} "
              f"{r['attio_requests']:>10} {r['rate_limited']:>5} {r['events']:>7} {r['usermaven_requests']:>7} "
              f"{r['events'] // 50 + 1:>8} {r['peak_rss_mb']:>11.1f} {r['exit']:>4}", flush=True)
        if r["exit"] != 0:
            print(f"  the backfill exited {r['exit']}: {r['stderr']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
