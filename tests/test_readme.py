"""The README is the product's face: what it names must exist, and what exists must be in it."""

from __future__ import annotations

import re
from pathlib import Path

from sync import cli, errors
from sync.config import SETTINGS, load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _table_rows(heading: str) -> list[list[str]]:
    section = README.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")][1:]


def test_every_setting_is_documented_with_its_default_and_nothing_else_is():
    documented: dict[str, str] = {}
    for name_cell, default, _ in _table_rows("## Configuration"):
        for name in re.findall(r"`([A-Z_]+)`", name_cell):
            documented[name] = default
    assert set(documented) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        shown = documented[setting.name].strip("`")
        if setting.required:
            assert shown == "required", setting.name
        elif setting.default is None:
            assert shown == "unset", setting.name
        else:
            assert shown == setting.default, setting.name


def test_every_command_and_option_is_documented():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert f"attio-usermaven-sync {name}" in README, name
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in README, (name, option)


def test_exit_codes_table_matches_the_code():
    documented = {int(code) for code, _ in _table_rows("### Exit codes")}
    defined = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert documented == defined


def test_example_config_file_is_valid():
    config = load_config({}, ROOT / "deploy" / "config.example.toml")
    assert config.usermaven_site_url == "https://yourwebsite.com"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"Run the tests:\n\n```sh\n(.+)\n```", README).group(1)
    assert command in (ROOT / ".ci" / "run").read_text()


def test_every_test_the_readme_names_as_proof_exists():
    named = set(re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?", README))
    assert named, "the README names the tests behind its guarantees"
    for file, test in named:
        path = ROOT / "tests" / file
        assert path.exists(), file
        if test:
            assert re.search(rf"^def {test}\(", path.read_text(), re.M), f"{file}::{test}"
