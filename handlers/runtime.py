"""What the Ansible plugins share: the enable switch, the run id, the flusher's environment, and
waiting (bounded) for the background flusher. Imported by the callback and the action plugins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ara_spool.spool import state as state_mod
from ara_spool.spool.paths import RunPaths, default_spool_dir, ensure_spool_dir, open_nofollow
from ara_spool.spool.state import FAILING_GRACE, failing_for

# Set by the callback in the controller's environment once it records a run; forked workers and
# the flusher inherit it, so every part of the run agrees on one id.
ACTIVE_ENV = "ARA_SPOOL_ACTIVE_RUN"
TRUE = ("1", "true", "yes", "on", "y", "t")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE


def new_run_id() -> str:
    return str(uuid.uuid4())


def spool_dir(option: str | None = None) -> Path:
    return Path(option) if option else default_spool_dir()


def api_env(base_url: Any = None, token: Any = None, verify_ssl: Any = None) -> dict[str, str]:
    """Environment for the flusher from the role's variables (which win over the controller's env).
    Secrets travel by environment only, never argv."""
    env: dict[str, str] = {}
    if base_url:
        env["ARA_API_SERVER"] = str(base_url)
    if token:
        env["ARA_API_TOKEN"] = str(token)
    if verify_ssl is not None and verify_ssl != "":
        env["ARA_API_INSECURE"] = "false" if as_bool(verify_ssl) else "true"
    return env


def start_flusher(run_id: str, directory: Path, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the run's background flusher: follows the spool until the run's end is shipped.
    It runs in its own session, so a Ctrl-C meant for ansible-playbook does not cut it short."""
    ensure_spool_dir(directory)
    env = dict(os.environ)
    env.update(extra_env)
    env["ARA_SPOOL_DIR"] = str(directory)
    log_fd = open_nofollow(directory / f"{run_id}.flusher.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ara_spool.flusher", "-v", "flush", "--run", run_id, "--until-end", "--quiet",
             "--parent", str(os.getpid())],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fd,
            start_new_session=True, close_fds=True,
        )
    finally:
        os.close(log_fd)


def shipped_to(run_id: str, directory: Path) -> tuple[int, str | None]:
    """(offset shipped so far, last error) from the run's checkpoint."""
    st = state_mod.read_state_quiet(RunPaths.of(directory, run_id))
    return (st.offset, st.last_error) if st else (0, None)


def wait_shipped(run_id: str, directory: Path, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait (at most timeout s) until the flusher has passed the spool's current end."""
    target = RunPaths.of(directory, run_id).spool_size()
    deadline = time.monotonic() + timeout
    while True:
        offset, _ = shipped_to(run_id, directory)
        if offset >= target:
            return True
        if proc is not None and proc.poll() is not None:
            return shipped_to(run_id, directory)[0] >= target
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop_flusher(proc: subprocess.Popen[bytes], timeout: float, run_id: str | None = None,
                 directory: Path | None = None) -> int | None:
    """Let the flusher finish (it exits once the run's end is shipped), else stop it cleanly:
    SIGTERM makes it write its checkpoint; what it did not ship stays in the spool. Stop early when
    it has been failing to reach Ara for FAILING_GRACE seconds: waiting longer helps nobody."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        if run_id and directory is not None:
            st = state_mod.read_state_quiet(RunPaths.of(directory, run_id))
            if failing_for(st) >= FAILING_GRACE:
                break
        time.sleep(0.02)
    code = proc.poll()
    if code is not None:
        return code
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return None
