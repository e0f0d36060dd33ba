"""What the Ansible plugins share: the enable switch, the run id, the flusher's environment,
starting the background flusher, and the bounded waits at the run's end and at an `ara_flush`
checkpoint. The flusher is only ever a process to them: this module never imports it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ara_spool.spool import paths as paths_mod
from ara_spool.spool import progress, quarantine, settings
from ara_spool.spool.lock import is_locked
from ara_spool.spool.paths import RunPaths, default_spool_dir, ensure_spool_dir, open_nofollow

# Set by the callback in the controller's environment once it records a run; forked workers and
# the flusher inherit it, so every part of the run agrees on one id.
ACTIVE_ENV = "ARA_SPOOL_ACTIVE_RUN"


def as_bool(value: Any) -> bool:
    """An Ansible variable as a switch: the one boolean rule (spool/settings.py); anything else,
    an opt-in switch reads as off."""
    return settings.parse_bool(value) or False


def new_run_id() -> str:
    return str(uuid.uuid4())


def task_run_id(templar: Any, task_vars: dict[str, Any]) -> str | None:
    """The run an action plugin's event belongs to: the play's `ara_run_id` (templated: task vars
    arrive raw), else the callback's active run, else ARA_RUN_ID; None when there is none."""
    return templar.template(task_vars.get("ara_run_id") or "") or os.environ.get(ACTIVE_ENV) \
        or os.environ.get("ARA_RUN_ID") or None


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


# The run's end waits for its flusher only while Ara acknowledges events: this long without
# progress (Ara hangs, or answers too slowly) and the playbook ends, leaving the rest to it.
END_STALL_SECONDS = 1.5
DEFAULT_SERVER = "http://127.0.0.1:8000"  # the flusher's default, for the hint we print


def _server(prog: progress.RunProgress, env: dict[str, str] | None) -> str:
    """The Ara a run is shipped to: the flusher's checkpoint says; else the settings it was given.
    Never with credentials: a URL's user:password@ is dropped (the hint says how to pass them)."""
    dest = prog.state.dest if prog.state is not None else ""
    if dest.endswith("/api/v1"):
        return dest[: -len("/api/v1")]
    return (env or {}).get("ARA_API_SERVER") or os.environ.get("ARA_API_SERVER") or DEFAULT_SERVER


def _shared(directory: Path) -> bool:
    """The spool is group-shared: by the setting, or a setgid group-writable dir (the documented 2770)."""
    if paths_mod.group_shared():
        return True
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISGID and mode & 0o020)


def flush_hint(run_id: str, directory: Path, server: str, env: dict[str, str] | None = None) -> str:
    """The command that ships the run by hand: the URL redacted, the group-shared setting it needs,
    and how to give the credential (by environment or file, never on the command line)."""
    merged = {**os.environ, **(env or {})}
    shown = settings.redact_url(server)
    prefix = "ARA_SPOOL_GROUP_SHARED=true " if _shared(directory) else ""
    cmd = f"{prefix}ara-spool flush --run {run_id} --server {shown} --spool-dir {directory}"
    url_creds = any(settings.url_has_credentials(u) for u in (server, merged.get("ARA_API_SERVER", "")))
    if url_creds or merged.get("ARA_API_USERNAME") or merged.get("ARA_API_TOKEN") or \
            merged.get("ARA_API_TOKEN_FILE") or merged.get("ARA_API_PASSWORD_FILE"):
        cmd += (" (credentials by environment, never in the URL: ARA_API_USERNAME with ARA_API_PASSWORD_FILE,"
                " or ARA_API_TOKEN_FILE)")
    return cmd


def _flusher_said(paths: RunPaths) -> str | None:
    """The last message the run's flusher wrote to its log (why it stopped), redacted."""
    try:
        fd = open_nofollow(paths.flusher_log, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - 8192))
        lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("ara-spool: ")] or lines
    if not said:
        return None
    return " ".join(settings.redact_url(w) for w in said[-1].removeprefix("ara-spool: ").split(" "))


def end_of_run(run_id: str, directory: Path, budget: float, proc: subprocess.Popen[bytes] | None,
               env: dict[str, str] | None = None) -> str | None:
    """At the run's end: wait while the background flusher makes progress, at most `budget`
    seconds, never while it fails or stalls. None when the run is all in Ara, else one line that
    says what is left and the command that ships it.

    A flusher still making progress when the budget is spent is left to finish detached (bounded,
    flusher/follow.py). One that fails or stalls (Ara down, hanging, refusing the login) is
    stopped: it saves its checkpoint within a second, and the run waits in the spool for the next
    `ara-spool flush`, the daemon or the timer."""
    paths = RunPaths.of(directory, run_id)
    alive = (lambda: proc.poll() is None) if proc is not None else progress.flusher_holds(paths)
    why, prog = progress.wait(paths, timeout=budget, stall=END_STALL_SECONDS, alive=alive)
    if why == "shipped":
        if quarantine.count(paths):
            return (f"ara-spool: run {run_id}: some events were refused by Ara and quarantined in "
                    f"{paths.rejected} (see `ara-spool requeue`)")
        return None
    reason = prog.last_error or {
        "stalled": f"Ara has not acknowledged anything for {END_STALL_SECONDS}s",
        "timeout": f"still shipping after {budget:.0f}s",
        "gone": "its flusher stopped" + (f" (exit {proc.returncode})" if proc is not None else ""),
    }.get(why, why)
    if why == "gone" and proc is not None and proc.returncode:
        said = _flusher_said(paths)  # the real cause (a configuration error...), not only its exit code
        if said:
            reason += f": {said}"
    going = proc is not None and proc.poll() is None
    if going and paths_mod.disk_full(directory):
        # Its checkpoint cannot be written (ENOSPC): it looks stalled but waits for space, and
        # ends the run itself once the playbook is gone.
        reason = "the spool's disk is full"
        why = "timeout"
    if going and why == "timeout":
        after = f"; its flusher (pid {proc.pid}) goes on shipping in the background"
    else:
        if going:
            proc.send_signal(signal.SIGTERM)
        after = "; they wait in the spool"
    return (f"ara-spool: run {run_id}: {prog.pending_lines} event(s) not in Ara yet ({reason}){after}. "
            f"To ship them: {flush_hint(run_id, directory, _server(prog, env), env)}")


def checkpoint_flush(run_id: str, directory: Path, timeout: float, env: dict[str, str]) -> tuple[bool, str]:
    """An explicit `ara_flush` checkpoint: ship the run up to now, waiting at most `timeout` s.
    The flusher already on the run (in-play or daemon) is waited for; when none is, a one-shot
    `ara-spool flush` process runs. Never imports the flusher; secrets travel by environment."""
    paths = RunPaths.of(directory, run_id)
    target = paths.spool_size()
    deadline = time.monotonic() + timeout
    if is_locked(paths):
        why, prog = progress.wait(paths, timeout=timeout, target=target, alive=progress.flusher_holds(paths))
        if why == "shipped":
            return True, f"run {run_id} is in Ara"
        if why != "gone":
            reason = prog.last_error or f"not all shipped within {timeout:.0f}s"
            return False, (f"run {run_id} not flushed: {reason}; the spool keeps it "
                           f"(`{flush_hint(run_id, directory, _server(prog, env), env)}`)")
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["ARA_SPOOL_DIR"] = str(directory)
    left = max(1.0, deadline - time.monotonic())
    proc = subprocess.Popen(
        [sys.executable, "-m", "ara_spool.flusher", "flush", "--run", run_id, "--quiet", "--timeout", f"{left:.0f}"],
        env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=left)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # it saves its checkpoint and exits within a second
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        err = (err or b"") + f"not all shipped within {timeout:.0f}s".encode()
    lines = [ln for ln in (err or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    if proc.returncode == 0:
        return True, f"run {run_id} is in Ara"
    if proc.returncode == 5:
        return True, f"run {run_id} is in Ara; some events were quarantined in {paths.rejected}"
    prog = progress.read(paths)
    about_run = [ln for ln in lines if ln.startswith(f"ara-spool: run {run_id}:")]
    reason = (about_run or lines or [f"flusher exit {proc.returncode}"])[-1].removeprefix("ara-spool: ")
    reason = " ".join(settings.redact_url(w) for w in reason.split(" "))
    return False, (f"run {run_id} not flushed: {reason}; the spool keeps it "
                   f"(`{flush_hint(run_id, directory, _server(prog, env), env)}`)")
