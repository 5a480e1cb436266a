"""Benchmark: what a user feels, each measure in fresh processes (the sandbox in one, the CLI in another, so
the sandbox's CPU is not counted as the CLI's). Not a test: it measures and prints one table per measure.

    python benchmarks/bench.py                 # every measure (about 37 minutes on 2 cores)
    python benchmarks/bench.py matrix          # backfill wall time ÷ the rate limit's floor, latency × ATTIO_MAX_RPS
    python benchmarks/bench.py throughput      # Attio answering instantly, no rate limit: transitions per second
    python benchmarks/bench.py status          # `status`, `status --json` and a `--dry-run` poll on a large ledger
    python benchmarks/bench.py memory          # the CLI's peak memory (VmHWM) as the workspace grows
    python benchmarks/bench.py polls           # Attio requests of the polls after a backfill, as the workspace grows
    python benchmarks/bench.py --quick         # CI: small runs; fails only if request counts or batches change

The floor of a backfill is the time the rate limit alone imposes: Attio requests ÷ ATTIO_MAX_RPS. The matrix's
backfills have a floor of about a minute (`--seconds 60`): what a run costs once whatever its length (the
interpreter's start, the first and the last round trip, the last batch's commit and sends; 0.5–0.9 s at 300 ms)
is then 1–1.5% of it, and less of a longer backfill (a minute is 1,500 deals at 25 rps, 6,000 at 100); `--seconds
20` shows that cost on a third of the floor (2.5–4.5% of it).
(At its end a backfill also waits a round trip per 6 pages of its deal list beyond 6: the README's Performance.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "benchmarks" / "_cli.py")]
# (label, source tree of the CLI): `--against PATH` adds another checkout, run interleaved with this one.
TREES: list[tuple[str, Path]] = [("this", ROOT)]
EXPECTED = ROOT / "benchmarks" / "quick_expected.json"
# The backfill every measure runs: two years and more of every deal's history.
BACKFILL = ["run", "--backfill", "--since", "2020-01-01", "-q"]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def _post_json(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


@dataclass
class Sandbox:
    """`python -m sync.sandbox serve` in its own process."""

    deals: int
    latency: float = 0.0
    rate_limit: int = 0  # 0: none
    process: subprocess.Popen | None = None
    coordinates: dict = field(default_factory=dict)

    def __enter__(self) -> Sandbox:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sync.sandbox", "serve", "--deals", str(self.deals), "--seed", "1",
             "--rate-limit", str(self.rate_limit), "--latency", str(self.latency), "--stage-changes", "3", "6"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.coordinates = json.loads(self.process.stdout.readline())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=60)

    def stats(self) -> dict:
        attio = _get_json(self.coordinates["attio_url"] + "/_sandbox/stats")
        collector = self.coordinates["usermaven_events_url"].split("/api/")[0]
        usermaven = _get_json(collector + "/_sandbox/stats")
        return {"attio": attio, "usermaven": usermaven}

    def move(self, count: int, stage: str) -> None:
        """Move the first `count` deals (oldest created first) to `stage`, as a user in Attio would."""
        url, token = self.coordinates["attio_url"], self.coordinates["attio_token"]
        ids: list[str] = []
        while len(ids) < count:
            page = _post_json(f"{url}/v2/objects/deals/records/query", {"limit": 500, "offset": len(ids)}, token)
            ids += [row["id"]["record_id"] for row in page["data"]]
            if len(page["data"]) < 500:
                break
        for record_id in ids[:count]:
            _post_json(f"{url}/_sandbox/move", {"record_id": record_id, "stage": stage})

    def env(self, state: Path, **settings: str) -> dict[str, str]:
        c = self.coordinates
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTIO_", "USERMAVEN_", "SYNC_", "BENCH_"))}
        env.update({
            "ATTIO_BASE_URL": c["attio_url"], "ATTIO_API_KEY": c["attio_token"],
            "ATTIO_USER_ID_ATTRIBUTE": "app_user_id", "USERMAVEN_EVENTS_URL": c["usermaven_events_url"],
            "USERMAVEN_API_KEY": c["usermaven_api_key"], "USERMAVEN_SERVER_TOKEN": c["usermaven_server_token"],
            "USERMAVEN_SITE_URL": "https://bench.example", "SYNC_STATE_DB": str(state), **settings,
        })
        return env


@dataclass
class Run:
    wall: float
    cpu: float
    hwm_mb: float
    exit: int
    stderr: str


def compile_tree(tree: Path) -> None:
    """Byte-compile the tree's package (into its __pycache__, which git ignores; an `--against` tree's too), so
    that the CLI starts as an installed copy does (pip compiles what it installs): with PYTHONDONTWRITEBYTECODE
    set, as on the machine the README's numbers come from, every run would otherwise compile every module of the
    sync again (about 0.08 s of each run)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "sync")], check=True,
                   stdout=subprocess.DEVNULL)


def run_cli(args: Sequence[str], env: dict[str, str], tree: Path = ROOT) -> Run:
    """The CLI in its own process: wall time, its CPU (user + system, from wait4) and its own peak memory."""
    with tempfile.NamedTemporaryFile() as hwm:
        env = {**env, "BENCH_HWM_FILE": hwm.name, "PYTHONPATH": str(tree)}
        began = time.perf_counter()
        process = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        stderr = process.stderr.read() if process.stderr else ""
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        text = Path(hwm.name).read_text().strip()
    return Run(wall, usage.ru_utime + usage.ru_stime, int(text or 0) / 1024, process.returncode, stderr.strip()[-400:])


def backfill(deals: int, latency: float, max_rps: float, server_limit: int, settings: dict[str, str] | None = None,
             unlimited: bool = False, tree: Path = ROOT) -> dict:
    with Sandbox(deals, latency, server_limit) as sandbox, tempfile.TemporaryDirectory() as folder:
        env = sandbox.env(Path(folder) / "sync.db", ATTIO_MAX_RPS=str(max_rps), **(settings or {}))
        if unlimited:
            env["BENCH_NO_RATE_LIMIT"] = "1"
        run = run_cli(BACKFILL, env, tree)
        stats = sandbox.stats()
        transitions = sqlite3.connect(Path(folder) / "sync.db").execute("select count(*) from ledger").fetchone()[0]
    attio = stats["attio"]
    return {"deals": deals, "latency": latency, "max_rps": max_rps, "wall": run.wall, "cpu": run.cpu,
            "hwm_mb": run.hwm_mb, "exit": run.exit, "stderr": run.stderr, "attio_requests": attio["requests"],
            "by_kind": attio["by_kind"], "rate_limited": attio["rate_limited"],
            "usermaven_requests": stats["usermaven"]["requests"], "events": stats["usermaven"]["events"],
            "transitions": transitions, "floor": attio["requests"] / max_rps}


def header(title: str, columns: str) -> None:
    print(f"\n{title}\n{columns}\n{'-' * len(columns)}", flush=True)


def check(result: dict) -> None:
    if result["exit"] != 0:
        print(f"  the CLI exited {result['exit']}: {result['stderr']}", flush=True)


def matrix(args: argparse.Namespace) -> list[dict]:
    """Backfill wall time ÷ floor for each latency × ATTIO_MAX_RPS, default settings, server limit = rps."""
    header(f"rate limit reached: backfill wall ÷ floor, default settings, sandbox limit = ATTIO_MAX_RPS, "
           f"median of {args.repeats}",
           f"{'tree':<8} {'latency ms':>10} {'rps':>5} {'deals':>6} {'wall s':>7} {'floor s':>7} {'wall/floor':>10} "
           f"{'min..max':>12} {'429s':>5} {'Attio req':>9}")
    results = []
    for latency, rps, (label, tree) in itertools.product(args.latencies, args.rps, TREES):
        deals = max(50, int(rps * args.seconds))
        runs = [backfill(deals, latency, rps, int(rps), tree=tree) for _ in range(args.repeats)]
        ratios = sorted(r["wall"] / r["floor"] for r in runs)
        median, wall, r = statistics.median(ratios), statistics.median(x["wall"] for x in runs), runs[0]
        print(f"{label:<8} {latency * 1000:>10.0f} {rps:>5.0f} {deals:>6} {wall:>7.1f} "
              f"{r['floor']:>7.1f} {median:>10.3f} {ratios[0]:>5.2f}..{ratios[-1]:<5.2f} "
              f"{sum(x['rate_limited'] for x in runs):>5} {r['attio_requests']:>9}", flush=True)
        for x in runs:
            check(x)
        results.append({"tree": label, "latency": latency, "rps": rps, "ratio": median, "runs": runs})
    return results


def throughput(args: argparse.Namespace) -> list[dict]:
    """Attio answering at once and no rate limit: transitions per second of wall time and of the CLI's CPU."""
    header(f"local work: Attio answering instantly, no rate limit, median of {args.repeats}",
           f"{'tree':<8} {'deals':>6} {'transitions':>11} {'wall s':>7} {'CLI CPU s':>9} {'trans/s wall':>12} "
           f"{'trans/CPU-s':>11} {'peak MB':>7} {'UM req':>6}")
    results = []
    for deals in args.throughput_deals:
        # Repeats alternate between the trees, so that a slower minute of a shared machine falls on both.
        by_tree: dict[str, list[dict]] = {label: [] for label, _ in TREES}
        for _ in range(args.repeats):
            for label, tree in TREES:
                by_tree[label].append(backfill(deals, 0.0, 100, 0, unlimited=True, tree=tree))
        for label, runs in by_tree.items():
            results.append(_throughput_row(label, deals, runs))
    return results


def _throughput_row(label: str, deals: int, runs: list[dict]) -> dict:
    """Print one tree's row of the throughput table (medians of its runs) and return it."""
    wall = statistics.median(r["wall"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    n = runs[0]["transitions"]
    print(f"{label:<8} {deals:>6} {n:>11} {wall:>7.1f} {cpu:>9.1f} {n / wall:>12.0f} {n / cpu:>11.0f} "
          f"{max(r['hwm_mb'] for r in runs):>7.1f} {runs[0]['usermaven_requests']:>6}", flush=True)
    for r in runs:
        check(r)
    return {"tree": label, "deals": deals, "transitions": n, "wall": wall, "cpu": cpu, "runs": runs}


PAYLOAD = ('{"event_type": "Deal Stage Changed", "event_id": "%s", "_timestamp": 1738555506000, '
           '"url": "https://bench.example", "user": {"id": "user-%d", "email": "person%d@example.com"}, '
           '"company": {"id": "%s", "name": "Company %d"}, "event_attributes": {"deal_id": "%s", '
           '"deal_name": "Deal %d", "deal_stage": "Won", "previous_stage": "Negotiation", "deal_value": 12000, '
           '"deal_currency": "USD", "deal_owner": "Owner Name", "deal_url": "https://app.attio.com/bench/deal/%s", '
           '"stage_changed_at": "2025-02-03T04:05:06.000000Z", "source": "Attio CRM"}}')


def build_ledger(path: Path, rows: int) -> None:
    """A state file with `rows` ledger rows (1% held, 0.1% failed, 1% pending, the rest sent) and a checkpoint."""
    from sqlite_utils import Database

    from sync.state import State

    State(Database(path)).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reasons = ["deal has no associated person", "the deal's associated person has no email and no user id"]

    def generate() -> Iterator[tuple[object, ...]]:
        for i in range(rows):
            event_id, record = str(uuid.UUID(int=i + 1)), str(uuid.UUID(int=10**12 + i // 5))
            state = "held" if i % 100 == 7 else "failed" if i % 1000 == 3 else "pending" if i % 100 == 11 else "sent"
            yield (event_id, record, record, "s1", "Negotiation", "s2", "Won",
                   f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T04:05:06.{i % 999999:06d}Z",
                   PAYLOAD % (event_id, i, i, record, i, record, i, record), state,
                   reasons[i % 2] if state == "held" else None, 1 if state == "failed" else 0,
                   "Usermaven answered 400" if state == "failed" else None, "backfill", now,
                   now if state == "sent" else None)

    with db:
        db.executemany(
            "insert into ledger (event_id, deal_key, record_id, from_stage_id, from_stage, to_stage_id, to_stage, "
            "changed_at, payload, state, reason, attempts, last_error, origin, detected_at, sent_at) "
            "values (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", generate())
        db.execute("insert into checkpoints values ('poll', ?, ?), ('baseline', ?, ?)", [now, now, now, now])
        db.executemany("insert into runs (command, started_at, finished_at, seconds, exit_code) values (?,?,?,?,0)",
                       [("run", now, now, 1.0)] * 20)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def status(args: argparse.Namespace) -> list[dict]:
    """`status`, `status --json` and a `--dry-run` poll on a ledger of `--ledger-rows` rows."""
    results = []
    header(f"status on a large ledger, median of {args.repeats}",
           f"{'tree':<8} {'ledger rows':>11} {'file MB':>7} {'command':<16} {'wall s':>7} {'peak MB':>7} "
           f"{'file unchanged':>14}")
    for rows in args.ledger_rows:
        with tempfile.TemporaryDirectory() as folder, Sandbox(50) as sandbox:
            path = Path(folder) / "sync.db"
            build_ledger(path, rows)
            size = path.stat().st_size / 2**20
            env = sandbox.env(path)
            for (name, argv), (label, tree) in itertools.product(
                    (("status", ["status"]), ("status --json", ["status", "--json"]),
                     ("run --dry-run", ["run", "--dry-run", "-q"])), TREES):
                before = (path.stat().st_mtime_ns, path.stat().st_size)
                runs = [run_cli(argv, env, tree) for _ in range(args.repeats)]
                unchanged = (path.stat().st_mtime_ns, path.stat().st_size) == before
                wall = statistics.median(r.wall for r in runs)
                hwm = max(r.hwm_mb for r in runs)
                print(f"{label:<8} {rows:>11} {size:>7.0f} {name:<16} {wall:>7.2f} {hwm:>7.1f} "
                      f"{str(unchanged):>14}", flush=True)
                for r in runs:
                    if r.exit != 0:
                        print(f"  exited {r.exit}: {r.stderr}")
                results.append({"tree": label, "rows": rows, "command": name, "wall": wall, "hwm_mb": hwm,
                                "unchanged": unchanged})
    return results


def memory(args: argparse.Namespace) -> list[dict]:
    """The CLI's own peak memory (VmHWM) for backfills of growing workspaces (no rate limit)."""
    header("memory: the CLI's peak (VmHWM), backfill, Attio answering instantly",
           f"{'tree':<8} {'deals':>6} {'transitions':>11} {'peak MB':>7} {'wall s':>7}")
    results = []
    for deals, (label, tree) in itertools.product(args.memory_deals, TREES):
        r = backfill(deals, 0.0, 100, 0, unlimited=True, tree=tree)
        r["tree"] = label
        print(f"{label:<8} {deals:>6} {r['transitions']:>11} {r['hwm_mb']:>7.1f} {r['wall']:>7.1f}", flush=True)
        check(r)
        results.append(r)
    return results


def after_backfill(deals: int, moves: int, tree: Path = ROOT) -> dict:
    """A backfill (Attio at once, no rate limit), then two polls: one that finds nothing new, and one after
    `moves` deals moved. For each poll, the Attio requests by kind and the queries by object (deals, people,
    companies), counted by the sandbox; and the deals whose events the backfill left held."""
    with Sandbox(deals) as sandbox, tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sync.db"
        env = {**sandbox.env(path, ATTIO_MAX_RPS="100"), "BENCH_NO_RATE_LIMIT": "1"}
        runs = [run_cli(BACKFILL, env, tree)]
        with closing(sqlite3.connect(path)) as db:
            held = db.execute("select count(distinct record_id) from ledger where state = 'held'").fetchone()[0]
        before = sandbox.stats()
        runs.append(run_cli(["run", "-q"], env, tree))
        idle = sandbox.stats()
        sandbox.move(moves, "Negotiation")
        moved_at = sandbox.stats()
        runs.append(run_cli(["run", "-q"], env, tree))
        moved = sandbox.stats()
    polls = {}
    for name, (start, end), run in (("idle", (before, idle), runs[1]), ("moved", (moved_at, moved), runs[2])):
        a, b = start["attio"], end["attio"]
        polls[name] = {"attio_requests": b["requests"] - a["requests"], "by_kind": _since(b["by_kind"], a["by_kind"]),
                       "queries": _since(b["queries"], a["queries"]),
                       "events": end["usermaven"]["events"] - start["usermaven"]["events"], "wall": run.wall}
    return {"deals": deals, "moves": moves, "held_deals": held, "exits": [r.exit for r in runs],
            "stderr": [r.stderr for r in runs if r.exit], **polls}


def _since(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """The counts that grew between two snapshots, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _queries(poll: dict) -> str:
    return "/".join(str(poll["queries"].get(k, 0)) for k in ("deals", "people", "companies"))


def polls(args: argparse.Namespace) -> list[dict]:
    """The polls after a backfill: what a poll asks Attio, as the workspace (and the held events a backfill
    leaves) grows. Re-checking held events is bounded per poll (400 deals); the other people and companies a poll
    needs are looked up once each."""
    header(f"polls after a backfill: Attio requests per poll (a poll with nothing new; one after {args.poll_moves} "
           "deals moved)",
           f"{'tree':<8} {'deals':>6} {'held deals':>10} {'idle: req':>9} {'deals/people/companies q':>24} "
           f"{'moved: req':>10} {'histories':>9} {'deals/people/companies q':>24} {'events':>6}")
    results = []
    for deals, (label, tree) in itertools.product(args.poll_deals, TREES):
        r = after_backfill(deals, args.poll_moves, tree)
        r["tree"] = label
        idle, moved = r["idle"], r["moved"]
        print(f"{label:<8} {deals:>6} {r['held_deals']:>10} {idle['attio_requests']:>9} {_queries(idle):>24} "
              f"{moved['attio_requests']:>10} {moved['by_kind'].get('record_values', 0):>9} {_queries(moved):>24} "
              f"{moved['events']:>6}", flush=True)
        if any(r["exits"]):
            print(f"  the CLI exited {r['exits']}: {r['stderr']}", flush=True)
        results.append(r)
    return results


def sandbox_latency(latencies: Sequence[float] = (0.0, 0.02), requests: int = 50) -> dict[str, float]:
    """What one request to the sandbox takes, the median of `requests` over one kept-alive connection (as the CLI's
    pool sends them), with no latency added and with each of `latencies`: the latency the sandbox claims, plus well
    under a millisecond. (An answer written in two pieces without TCP_NODELAY would add Nagle's and delayed ACK's
    40 ms to every request.) Printed, never checked: it is a time."""
    medians = {}
    for latency in latencies:
        with Sandbox(20, latency, 0) as sandbox:
            url, token = sandbox.coordinates["attio_url"], sandbox.coordinates["attio_token"]
            pool = urllib3.PoolManager(retries=False)
            times = []
            for _ in range(requests):
                began = time.perf_counter()
                pool.request("GET", f"{url}/v2/self", headers={"Authorization": f"Bearer {token}"})
                times.append(time.perf_counter() - began)
            pool.clear()
        medians[f"{latency * 1000:g} ms"] = statistics.median(times) * 1000
    print("the sandbox's answer to one request, median of "
          f"{requests}: " + ", ".join(f"{v:.1f} ms with {k} added" for k, v in medians.items()), flush=True)
    return medians


def quick(args: argparse.Namespace) -> int:
    """Small runs whose request counts and Usermaven batches must not change (times are printed, not checked)."""
    sandbox_latency()
    observed = {}
    for name, latency in (("instant", 0.0), ("latency-20ms", 0.02)):
        # No limit on the sandbox's side: a 429 (timing, not a change) would add a request to the counts.
        r = backfill(120, latency, 100, 0)
        observed[name] = {k: r[k] for k in ("attio_requests", "by_kind", "usermaven_requests", "events",
                                            "transitions", "exit")}
        print(f"{name}: wall {r['wall']:.1f} s, floor {r['floor']:.1f} s, CLI CPU {r['cpu']:.1f} s, "
              f"peak {r['hwm_mb']:.0f} MB, {r['rate_limited']} 429s, {json.dumps(observed[name])}", flush=True)
    # More held deals than a poll re-checks (400): the bound shows in the idle poll's requests.
    r = after_backfill(2500, 100)
    observed["polls"] = {"held_deals": r["held_deals"], "exits": r["exits"],
                         **{name: {k: r[name][k] for k in ("attio_requests", "by_kind", "queries", "events")}
                            for name in ("idle", "moved")}}
    print(f"polls: {json.dumps(observed['polls'])}", flush=True)
    with tempfile.TemporaryDirectory() as folder, Sandbox(20) as sandbox:
        path = Path(folder) / "sync.db"
        build_ledger(path, 5000)
        before = path.read_bytes(), path.stat().st_mtime_ns
        runs = {name: run_cli(argv, sandbox.env(path)) for name, argv in
                (("status", ["status", "--json"]), ("dry-run", ["run", "--dry-run", "-q"]))}
        observed["state"] = {"exits": {k: v.exit for k, v in runs.items()},
                             "file_unchanged": (path.read_bytes(), path.stat().st_mtime_ns) == before}
        print(f"state: {json.dumps(observed['state'])}", flush=True)
    if args.record:
        EXPECTED.write_text(json.dumps(observed, indent=2, sort_keys=True) + "\n")
        print(f"recorded {EXPECTED}")
        return 0
    expected = json.loads(EXPECTED.read_text())
    if observed != expected:
        print(f"CHANGED: expected {json.dumps(expected, sort_keys=True)}\n"
              f"         got {json.dumps(observed, sort_keys=True)}")
        return 1
    print("quick benchmark: request counts, batches and state checks as expected")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measures", nargs="*", choices=["matrix", "throughput", "status", "memory", "polls", []],
                        help="which measures (default: all)")
    parser.add_argument("--quick", action="store_true", help="CI mode: small runs, check counts, not times")
    parser.add_argument("--record", action="store_true", help="with --quick: record the expected counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.02, 0.1, 0.3], help="seconds")
    parser.add_argument("--rps", type=float, nargs="+", default=[25, 50, 100], help="ATTIO_MAX_RPS values")
    parser.add_argument("--seconds", type=float, default=60,
                        help="matrix: deals = rps × this (default 60: a floor of about a minute)")
    parser.add_argument("--throughput-deals", type=int, nargs="+", default=[12_000])
    parser.add_argument("--ledger-rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--memory-deals", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--poll-deals", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--poll-moves", type=int, default=500, help="polls: deals moved before the second poll")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--against", type=Path, help="another checkout (say, main) to run interleaved, as `before`")
    args = parser.parse_args()
    if args.against:
        TREES[:] = [("before", args.against.resolve()), ("after", ROOT)]
    print(f"benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, 3-6 stage changes per deal", flush=True)
    for _, tree in TREES:
        compile_tree(tree)
    if args.quick:
        return quick(args)
    measures = {"matrix": matrix, "throughput": throughput, "status": status, "memory": memory, "polls": polls}
    results: dict[str, object] = {"sandbox_latency_ms": sandbox_latency()}
    results.update({name: measures[name](args) for name in (args.measures or measures)})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
