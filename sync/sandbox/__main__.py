"""``python -m sync.sandbox serve``: run the Attio sandbox and the Usermaven collector in the foreground.

Prints one JSON line with the URLs and credentials, then the ``export NAME=value`` lines that point the CLI
at the two servers, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sync.sandbox.attio import AttioSandbox
from sync.sandbox.records import item_json
from sync.sandbox.usermaven import UsermavenCollector
from sync.sandbox.workspace import Workspace


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m sync.sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run both sandbox servers until SIGTERM/SIGINT")
    serve.add_argument("--deals", type=int, default=300, help="deals to generate (default 300)")
    serve.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    serve.add_argument("--rate-limit", type=int, default=100,
                       help="Attio requests per second before 429 (default 100; 0 disables)")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added to every API answer")
    serve.add_argument("--attio-port", type=int, default=0, help="Attio sandbox port (default: a free one)")
    serve.add_argument("--usermaven-port", type=int, default=0, help="collector port (default: a free one)")
    serve.add_argument("--events-file", default=None, help="append every accepted event to this JSONL file")
    serve.add_argument("--stage-changes", nargs=2, type=int, metavar=("LOW", "HIGH"), default=None,
                       help="give every deal LOW..HIGH moves after its first stage (default: a realistic mix)")
    return parser


SITE_URL = "https://sandbox.example"


def cli_environment(attio: AttioSandbox, usermaven: UsermavenCollector) -> dict[str, str]:
    """The settings that point ``attio-usermaven-sync`` at running sandbox servers."""
    return {
        "ATTIO_BASE_URL": attio.url or "",
        "ATTIO_API_KEY": attio.token,
        "USERMAVEN_EVENTS_URL": usermaven.events_url or "",
        "USERMAVEN_API_KEY": usermaven.api_key,
        "USERMAVEN_SERVER_TOKEN": usermaven.server_token,
        "USERMAVEN_SITE_URL": SITE_URL,
    }


def serve_without_pauses() -> None:
    """Turn Python's cycle collector off for the rest of this process. A full collection walks every object the
    process holds: the generated workspace, and every event the collector keeps. While a backfill ran it stopped
    both servers for 0.29 s at 10,000 deals and 0.53 s at 20,000 (probes of 2026-11-29, benchmarks/LOG.md); the
    requests that arrived meanwhile were then answered in a burst and counted in one second (a 20,000-deal
    backfill at 300 ms and 100 rps got two 429s), which real Attio does not do. Serving a backfill makes no cyclic
    garbage (the 252 collections made while a 10,000-deal one ran freed nothing); faults and error replies were
    not measured. What the collector keeps grows as before: every event it accepted."""
    gc.disable()


def serve(args: argparse.Namespace) -> int:
    """Generate a workspace, start both servers, print their coordinates and wait for a signal."""
    changes = tuple(args.stage_changes) if args.stage_changes else None
    workspace = Workspace.generate(seed=args.seed, deals=args.deals, stage_changes=changes)
    # Render every record once so the first full scan is as fast as the following ones.
    for collection in (*workspace.objects.values(), *workspace.lists.values()):
        for item in collection.items.values():
            item_json(collection, workspace.workspace_id, workspace.workspace_slug, item)
    serve_without_pauses()
    attio = AttioSandbox(
        workspace, rate_limit=args.rate_limit or None, latency=args.latency, port=args.attio_port
    )
    usermaven = UsermavenCollector(jsonl_path=args.events_file, port=args.usermaven_port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    attio_url = attio.start()
    try:
        events_url = usermaven.start()
        try:
            print(json.dumps({
                "attio_url": attio_url,
                "attio_token": attio.token,
                "usermaven_events_url": events_url,
                "usermaven_api_key": usermaven.api_key,
                "usermaven_server_token": usermaven.server_token,
                "deals": len(workspace.deals.items),
            }))
            for name, value in cli_environment(attio, usermaven).items():
                print(f"export {name}={shlex.quote(value)}")
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            usermaven.stop()
    finally:
        attio.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
