"""The deploy files work as written: systemd accepts every unit, and the commands they hold run as an
unprivileged user against the sandbox with the files where the README puts them."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.config import SETTINGS
from sync.sandbox import AttioSandbox, UsermavenCollector, Workspace

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INSTALLED = "/opt/attio-usermaven-sync/.venv/bin/attio-usermaven-sync"  # where the README installs it
CONFIG = "/etc/attio-usermaven-sync/config.toml"
PROGRAM = str(Path(sys.executable).parent / "attio-usermaven-sync")
SYSTEM_PYTHON = "/usr/bin/python3"  # what the README installs with: a Python every user can run
UNITS = ["attio-usermaven-sync.service", "attio-usermaven-sync.timer", "attio-usermaven-sync@.service",
         "attio-usermaven-sync@.timer"]


def _unit(name: str) -> dict[str, list[str]]:
    """Each key of a unit file with its values, in order (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (.ci/run does)"
    for name in UNITS:
        # systemd checks that ExecStart exists: point it at this checkout's program instead of /opt.
        (tmp_path / name).write_text((DEPLOY / name).read_text().replace(INSTALLED, PROGRAM))
    instances = [str(tmp_path / name.replace("@.", "@acme.")) for name in UNITS]
    result = subprocess.run([analyze, "verify", *instances], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    # verify exits 0 on an unknown or misplaced key and only warns: any output is a finding.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_units_run_unprivileged_from_a_timer_on_the_calendar():
    for name in ("attio-usermaven-sync.timer", "attio-usermaven-sync@.timer"):
        timer = _unit(name)
        assert timer["OnCalendar"] == ["*:0/5"] and timer["Persistent"] == ["true"], name
        assert "RandomizedDelaySec" in timer and "OnUnitActiveSec" not in timer, name
    for name in ("attio-usermaven-sync.service", "attio-usermaven-sync@.service"):
        service = _unit(name)
        assert service["Type"] == ["oneshot"] and service["DynamicUser"] == ["yes"], name
        assert "StateDirectory" in service, name
        assert service["LoadCredential"][0].startswith("config.toml:/etc/attio-usermaven-sync/"), name
        assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"], name
    template = _unit("attio-usermaven-sync@.service")
    assert template["LoadCredential"] == ["config.toml:/etc/attio-usermaven-sync/%i.toml"]
    assert template["StateDirectory"] == ["attio-usermaven-sync-%i"]
    # One user per workspace, and the name the README's one-off command uses.
    assert template["User"] == ["attio-sync-%i"] and "User" not in _unit("attio-usermaven-sync.service")


class Machine:
    """A throwaway layout under /tmp that an unprivileged user can reach, and a way to run as that user."""

    def __init__(self, root: Path, user: pwd.struct_passwd):
        self.root, self.user = root, user
        self.program = self._install()

    def _install(self) -> str:
        """This checkout's program in a venv of the system Python under /tmp, as the README installs it in
        /opt: the test's own interpreter may live where the unprivileged user cannot go (pyenv under /root)."""
        version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.split()
        assert version == [str(n) for n in sys.version_info[:2]], (
            f"{SYSTEM_PYTHON} must be Python {sys.version_info[0]}.{sys.version_info[1]}: apt-get install python3")
        venv = self.root / "opt/venv"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        site_packages = next(venv.glob("lib/python3*/site-packages"))
        # This checkout (installed editable) and its dependencies, from the test's own venv.
        (site_packages / "checkout.pth").write_text(
            "import site; site.addsitedir(" + repr(next(p for p in sys.path if p.endswith("site-packages"))) + ")\n")
        program = venv / "bin/attio-usermaven-sync"
        program.write_text(f"#!{venv}/bin/python\nimport sys\nfrom sync.cli import main\nsys.exit(main())\n")
        program.chmod(0o755)
        return str(program)

    def folder(self, relative: str, mode: int = 0o700) -> Path:
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def private_file(self, path: Path, text: str, mode: int = 0o600) -> Path:
        path.write_text(text)
        path.chmod(mode)
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def run(self, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            argv = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups",
                    *argv]
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def machine() -> Iterator[Machine]:
    """As root (CI), run as `nobody`; as anyone else, the current user is already unprivileged."""
    user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    root = Path(tempfile.mkdtemp(prefix="aus-deploy-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield Machine(root, user)
    finally:
        shutil.rmtree(root)


@pytest.fixture
def sandbox() -> Iterator[tuple[AttioSandbox, UsermavenCollector]]:
    with AttioSandbox(Workspace.generate(seed=3, deals=30)) as attio, UsermavenCollector() as usermaven:
        yield attio, usermaven


def _config_as_the_readme_says(attio: AttioSandbox, usermaven: UsermavenCollector) -> str:
    """deploy/config.example.toml with the four required values filled in (and the sandbox's URLs)."""
    text = (DEPLOY / "config.example.toml").read_text()
    for name, value in (("ATTIO_API_KEY", attio.token), ("USERMAVEN_API_KEY", usermaven.api_key),
                        ("USERMAVEN_SERVER_TOKEN", usermaven.server_token),
                        ("USERMAVEN_SITE_URL", "https://deploy.example")):
        text, count = re.subn(rf"^{name} = \".*\"$", f'{name} = "{value}"', text, flags=re.M)
        assert count == 1, name
    return text + f'ATTIO_BASE_URL = "{attio.url}"\nUSERMAVEN_EVENTS_URL = "{usermaven.events_url}"\n'


def _clean_env(**extra: str) -> dict[str, str]:
    """What cron or systemd gives the program: no settings in the environment, only the config file."""
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    return {**env, **extra}


def _assert_first_run_recorded_a_baseline(state: Path, user: pwd.struct_passwd) -> None:
    info = state.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o600)
    conn = sqlite3.connect(state)
    try:
        assert conn.execute("select command, exit_code from runs").fetchall() == [("run", 0)]
        assert conn.execute("select count(*) from deals").fetchone()[0] == 30
    finally:
        conn.close()


@pytest.mark.parametrize("unit, instance", [("attio-usermaven-sync.service", ""),
                                            ("attio-usermaven-sync@.service", "acme")])
def test_service_command_runs_as_its_own_user_with_the_config_as_a_credential(machine, sandbox, unit, instance):
    attio, usermaven = sandbox
    # What systemd lays out: the credential copied into a private directory, an empty state directory.
    credentials = machine.folder("run/credentials", 0o500)
    machine.private_file(credentials / "config.toml", _config_as_the_readme_says(attio, usermaven), 0o400)
    state_root = machine.root / "var/lib"
    state_root.mkdir(parents=True)
    state_dir_name = _unit(unit)["StateDirectory"][0].replace("%i", instance)
    state_dir = machine.folder(f"var/lib/{state_dir_name}")
    exec_start = _unit(unit)["ExecStart"][0]
    command = (exec_start.replace(INSTALLED, machine.program).replace("%d", str(credentials))
               .replace("%S", str(state_root)).replace("%i", instance))
    assert "%" not in command
    result = machine.run(shlex.split(command), _clean_env(CREDENTIALS_DIRECTORY=str(credentials)), cwd=state_dir)
    assert result.returncode == 0, result.stderr
    assert "baseline recorded for 30 deals" in result.stderr
    _assert_first_run_recorded_a_baseline(state_dir / "sync.db", machine.user)
    assert attio.token not in result.stderr and usermaven.server_token not in result.stderr


def test_cron_line_runs_in_an_ordinary_users_crontab(machine, sandbox):
    attio, usermaven = sandbox
    home = machine.folder("home/user")
    etc = machine.folder("etc/attio-usermaven-sync", 0o755)
    machine.private_file(etc / "config.toml", _config_as_the_readme_says(attio, usermaven))
    # `logger` writes to the system log, which a test machine may not run: a stand-in on PATH keeps what it
    # is given, as journald would.
    bin_dir = machine.folder("bin", 0o755)
    logged = machine.private_file(machine.root / "syslog", "", 0o666)
    fake_logger = bin_dir / "logger"
    fake_logger.write_text(f'#!/bin/sh\n[ "$1" = -t ] && [ "$2" = attio-usermaven-sync ] || exit 64\n'
                           f'cat >> {logged}\n')
    fake_logger.chmod(0o755)
    lines = [line for line in (ROOT / "cron.example").read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == 1
    schedule, command = lines[0].split(None, 5)[:5], lines[0].split(None, 5)[5]
    assert schedule == ["*/5", "*", "*", "*", "*"]
    assert command.startswith(INSTALLED) and CONFIG in command
    command = command.replace(INSTALLED, machine.program).replace(CONFIG, str(etc / "config.toml"))
    # What cron gives a job: the user's HOME, a minimal PATH, /bin/sh, the home as working directory.
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "user"}
    # README step 4 first, as that user: `check` passes and creates nothing.
    readme = (ROOT / "README.md").read_text()
    check = re.search(r"`(/opt/attio-usermaven-sync/\.venv/bin/attio-usermaven-sync check [^`]+)`", readme)
    assert check, "README step 4 names the check command for cron"
    checked = machine.run(["/bin/sh", "-c", check.group(1).replace(INSTALLED, machine.program)
                           .replace(CONFIG, str(etc / "config.toml"))], env, cwd=home)
    assert checked.returncode == 0 and "checks passed" in checked.stdout, checked.stdout + checked.stderr
    assert not (home / ".local").exists()
    result = machine.run(["/bin/sh", "-c", command], env, cwd=home)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    log = logged.read_text()
    assert "baseline recorded for 30 deals" in log
    assert attio.token not in log and usermaven.server_token not in log
    _assert_first_run_recorded_a_baseline(home / ".local/state/attio-usermaven-sync/sync.db", machine.user)
