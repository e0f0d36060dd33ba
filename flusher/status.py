"""`ara-spool status`: per run, what is pending, shipped, quarantined, and where it is in Ara."""

from __future__ import annotations

import os
import shutil
import stat
import textwrap
import time
from typing import Any

from ara_spool.flusher.config import Config
from ara_spool.flusher.ids import playbook_of
from ara_spool.spool import progress, quarantine
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import check_run_files, is_locked
from ara_spool.spool.paths import RunPaths, UnsafeSpoolPath, list_runs


def ara_base(dest: str) -> str | None:
    """The server's URL from a destination (its API URL), for links to Ara's UI."""
    return dest[: -len("/api/v1")] if dest.endswith("/api/v1") else None


def collect(cfg: Config, runs: list[str] | None = None) -> list[dict[str, Any]]:
    """Per run: the Ara it is complete in; else the one it was shipped to last and what is pending
    there. Reads the spool dir only (no server, no request): `cfg` gives the spool dir."""
    rows = []
    for run_id in runs or list_runs(cfg.spool_dir):
        try:
            rows.append(_row(cfg, run_id))
        except UnsafeSpoolPath as exc:  # a planted FIFO, symlink, foreign file: say so, go on
            rows.append(_refused_row(cfg, run_id, exc))
    return rows


def _refused_row(cfg: Config, run_id: str, exc: OSError) -> dict[str, Any]:
    paths = RunPaths.of(cfg.spool_dir, run_id)
    return {"run": run_id, "pending": None, "pending_tail_bytes": None, "shipped": 0, "quarantined": 0,
            "ended": False, "final_status": "refused", "flushing": False, "age_seconds": None, "requests": 0,
            "last_error": _advice(paths, str(exc)), "last_error_at": None, "failing_since": None, "playbook_id": None,
            "ara_server": None, "ara_url": None, "complete_in": None, "destinations": [],
            "spool": str(paths.spool)}


def _row(cfg: Config, run_id: str) -> dict[str, Any]:
    paths = RunPaths.of(cfg.spool_dir, run_id)
    check_run_files(paths)  # a planted FIFO or symlink is reported, never opened as the run's file
    # A flush to a wrong server after the right one must not hide where the run is whole.
    problem = None
    try:
        done = progress.complete_in(paths)
        prog: progress.RunProgress | None = done or progress.read(paths)
    except (OSError, UnsafeSpoolPath) as exc:  # a file this user may not read, or refused: say so
        done, prog, problem = None, None, str(exc)
    st = (prog.state if prog is not None else state_mod.read_state_quiet(paths)) or state_mod.RunState(run_id)
    try:
        mtime = os.stat(paths.spool, follow_symlinks=False).st_mtime
    except FileNotFoundError:
        mtime = None
    pb = playbook_of(st)
    base = ara_base(st.dest)
    return {
        "run": run_id,
        "pending": prog.pending_lines if prog is not None else None,  # None: unknown (unreadable)
        "pending_tail_bytes": prog.torn if prog is not None else None,
        "shipped": st.shipped,
        "quarantined": quarantine.count(paths),
        "ended": st.ended,
        "final_status": st.final_status,
        "flushing": is_locked(paths),
        "age_seconds": round(time.time() - mtime, 1) if mtime else None,
        "requests": st.requests,
        "last_error": _unshippable(paths) or _advice(paths, problem or st.last_error),
        "last_error_at": st.last_error_at,
        "failing_since": st.first_error_at,
        "playbook_id": pb,
        "ara_server": base,
        "ara_url": f"{base}/playbooks/{pb}.html" if pb and base else None,
        "complete_in": (base or "(unknown)") if done else None,
        "destinations": [ara_base(d) or "(unknown)" for d in st.destinations() if d or st.sink],
        "spool": str(paths.spool),
    }


def _unshippable(paths: RunPaths) -> str | None:
    """In a group-shared spool (a setgid dir: the daemon's), a spool file its group cannot read is
    never shipped by the daemon: say so, with the fix (never `chmod 600`: that is the cause)."""
    try:
        d = os.stat(paths.spool_dir)
        f = os.stat(paths.spool, follow_symlinks=False)
    except OSError:
        return None
    if not d.st_mode & stat.S_ISGID or f.st_mode & 0o040:
        return None
    return (f"the spool's group cannot read {paths.spool} (mode {stat.S_IMODE(f.st_mode):04o}): the daemon "
            f"cannot ship it; chgrp the file to the spool's group and chmod 660 it, and spool with "
            "ARA_SPOOL_GROUP_SHARED=true")


def _advice(paths: RunPaths, error: str | None) -> str | None:
    """A flusher's error as status shows it. In a group-shared spool (a setgid dir), a 0660 file
    refused by a process without ARA_SPOOL_GROUP_SHARED is fixed by that setting, never by the
    `chmod 600` the error suggests: that stops the daemon reading it."""
    if not error or "chmod 600" not in error:
        return error
    try:
        shared = bool(os.stat(paths.spool_dir).st_mode & stat.S_ISGID)
    except OSError:
        return error
    if not shared:
        return error
    return (error.replace(" (chmod 600 it if its content is trusted)", "")
            + "; this spool is group-shared: set ARA_SPOOL_GROUP_SHARED=true for whoever ran that flush")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


ERROR_MIN_WIDTH = 40  # LAST ERROR gets what the terminal leaves, but never less than this
ERROR_MAX_LINES = 4  # then shortened, at a word, with " ..."


def render_table(rows: list[dict[str, Any]], width: int | None = None) -> str:
    """One line per run; a long LAST ERROR wraps at word boundaries onto continuation lines under
    its column (at most ERROR_MAX_LINES, then shortened at a word). `width`: the terminal's."""
    if not rows:
        return "no runs in the spool"
    header = ["RUN", "PENDING", "SHIPPED", "QUARANTINED", "AGE", "STATE", "ARA", "LAST ERROR"]
    table = [header]
    for r in rows:
        if r.get("complete_in"):
            state = r["final_status"] or "shipped"
        elif r["flushing"]:
            state = "flushing"
        elif r["pending"]:
            state = "pending"
        else:
            state = r["final_status"] or ("shipped" if r["shipped"] else "-")
        pending = "?" if r["pending"] is None else str(r["pending"])  # ?: the spool could not be read
        table.append([
            r["run"], pending, str(r["shipped"]), str(r["quarantined"]), _age(r["age_seconds"]),
            state, r["ara_url"] or r.get("ara_server") or "-", " ".join((r["last_error"] or "-").split()),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    indent = sum(w + 2 for w in widths)
    if width is None:
        width = shutil.get_terminal_size((120, 24)).columns
    room = max(ERROR_MIN_WIDTH, width - indent)
    out = []
    for row in table:
        lines = textwrap.wrap(row[-1], room, max_lines=ERROR_MAX_LINES, placeholder=" ...", break_long_words=False,
                              break_on_hyphens=False) or [""]
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + lines[0])
        out += [" " * indent + more for more in lines[1:]]
    return "\n".join(line.rstrip() for line in out)
