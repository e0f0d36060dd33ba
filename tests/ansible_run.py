"""Run real ansible-playbook with the ara-spool plugins enabled the way users enable them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ara_spool.handlers import env_lines
from ara_spool.spool.reader import read_lines

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
BIN = Path(sys.executable).parent


def interpreter() -> str:
    """The Python Ansible runs modules with. Ansible writes it unquoted into each module's shebang,
    so a checkout path with a space breaks every module ("/bin/sh: /tmp/ci: not found"); there a
    space-free link to this venv stands in for it (the venv is still found through the link)."""
    exe = Path(sys.executable)
    if " " not in str(exe):
        return str(exe)
    venv = exe.parent.parent
    link = Path(tempfile.gettempdir()) / f"ara-spool-venv-{hashlib.sha1(str(venv).encode()).hexdigest()[:12]}"
    if not (link.is_symlink() and os.readlink(link) == str(venv)):
        tmp = link.with_name(f"{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(venv)
        os.replace(tmp, link)
    return str(link / "bin" / exe.name)


def ansible_env(tmp: Path, spool_dir: Path, server: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARA_", "ANSIBLE_"))}
    for line in env_lines():  # what `eval "$(ara-spool env)"` exports
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.split("$")[0].strip("'")
    # Everything Ansible writes goes under the test's tmp dir, which pytest removes: its local and
    # "remote" temp dirs, and the ansible_<module>_payload_* dirs AnsiballZ makes with mkdtemp
    # (TMPDIR), which a killed module leaves behind.
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "TMPDIR": str(tmp / "tmp"),
        "ANSIBLE_KEEP_REMOTE_FILES": "0",
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_REMOTE_TMP": str(tmp / "ansible-remote"),
        "ANSIBLE_PYTHON_INTERPRETER": interpreter(),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORKS": "5",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ARA_SPOOL_DIR": str(spool_dir),
        "ARA_API_SERVER": server,
    })
    env.update(extra)
    return env


def playbook_cmd(name: str, *args: str) -> list[str]:
    return [str(BIN / "ansible-playbook"), "-i", str(PLAYBOOKS / "inventory.ini"), str(PLAYBOOKS / name), *args]


def run_playbook(env: dict[str, str], name: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(playbook_cmd(name, *args), env=env, capture_output=True, text=True, timeout=timeout)


def wait_for_task_start(spool: Path, name: str | None = None, timeout: float = 60) -> None:
    """Until the run's spool holds a task_start (of the task `name`, if given), at most `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spool.exists() and any(ln.event and ln.event["kind"] == "task_start"
                                  and name in (None, ln.event["task"]["name"]) for ln in read_lines(spool)):
            return
        time.sleep(0.05)
