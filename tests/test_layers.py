"""The import-linter contracts name every module: a new module that no contract places would go unchecked."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import sync

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = {c["name"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
             ["contracts"]}
# The entry points: nothing imports them, so no layer needs to be placed under them.
ENTRY_POINTS = {"sync.__main__"}


def _product_modules() -> set[str]:
    return {f"sync.{m.name}" for m in pkgutil.iter_modules(sync.__path__) if m.name != "sandbox"} - ENTRY_POINTS


def _contract(start: str) -> dict:
    [contract] = [c for name, c in CONTRACTS.items() if name.startswith(start)]
    return contract


def test_every_product_module_has_a_layer():
    placed = {m.strip() for layer in _contract("Layers")["layers"] for m in layer.split("|")}
    assert _product_modules() - placed == set()


def test_only_the_demo_and_the_cli_may_reach_the_sandbox():
    assert _product_modules() - set(_contract("Only the demo")["source_modules"]) == {"sync.cli", "sync.demo"}


def test_the_sandbox_may_import_no_product_module():
    assert _product_modules() - set(_contract("The sandbox stands alone")["forbidden_modules"]) == set()
