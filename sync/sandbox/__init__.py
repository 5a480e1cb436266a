"""Loopback servers that behave like Attio and Usermaven, over a generated in-memory workspace.

Typical use in a test::

    workspace = Workspace.generate(seed=1, deals=300)
    with AttioSandbox(workspace) as attio, UsermavenCollector() as usermaven:
        run_the_sync(attio.url, attio.token, usermaven.events_url)
        assert len(usermaven.unique_events()) == len(workspace.expected_transitions())

``python -m sync.sandbox serve`` runs both in the foreground for benchmarks and demos.
"""

from sync.sandbox.attio import AttioSandbox, Faults
from sync.sandbox.records import EntryTransition, Transition
from sync.sandbox.usermaven import UsermavenCollector
from sync.sandbox.workspace import Workspace

__all__ = ["AttioSandbox", "EntryTransition", "Faults", "Transition", "UsermavenCollector", "Workspace"]
