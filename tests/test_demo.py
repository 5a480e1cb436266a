"""`demo` leaves nothing behind unless asked to keep it."""

from __future__ import annotations

import tempfile
import time
from types import SimpleNamespace

import pytest

from sync import demo as demo_module


def _demo_folders(root) -> list:  # type: ignore[no-untyped-def]
    return sorted(root.glob("attio-usermaven-sync-demo-*"))


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_demo_removes_its_temporary_folder(temp_root, capsys):
    assert demo_module.demo(20, quiet=True) == 0
    assert _demo_folders(temp_root) == []
    assert "removed at exit" in capsys.readouterr().out


def test_demo_keep_leaves_the_folder_with_the_state_and_events(temp_root, capsys, monkeypatch):
    def stop(seconds: float) -> None:  # the user's Ctrl-C while the kept servers wait
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "time", SimpleNamespace(monotonic=time.monotonic, sleep=stop))
    assert demo_module.demo(20, keep=True, quiet=True) == 0
    [folder] = _demo_folders(temp_root)
    assert (folder / "sync.db").exists() and (folder / "events.jsonl").exists()
    assert f"status --state {folder / 'sync.db'}" in capsys.readouterr().out


def test_demo_never_writes_into_an_existing_state(run, env, tmp_path, monkeypatch):
    """`--state` is a common option: given a real state, the demo would move its checkpoint and mix sandbox deals
    into its snapshot. It refuses (exit 2) and leaves the file as it was."""
    state = tmp_path / "real.db"
    state.write_bytes(b"a real state")
    code, out, err = run("demo", "--deals", "20", "--state", str(state))
    assert code == 2 and f"demo --state must name a file that does not exist yet: {state} does" in err
    assert state.read_bytes() == b"a real state"
    monkeypatch.setenv("HOME", str(tmp_path))  # the same file as ~/real.db (found by a review)
    code, out, err = run("demo", "--deals", "20", "--state", "~/real.db")
    assert code == 2 and f"{state} does" in err and state.read_bytes() == b"a real state"


def test_demo_state_in_an_unknown_home_folder_is_a_usage_error(run, env):
    code, out, err = run("demo", "--deals", "20", "--state", "~no-such-user-here/x.db")
    assert code == 2 and "that home folder does not exist on this machine" in err and "Traceback" not in err
