"""`ara-spool status`: per run, what is pending, shipped, quarantined, and where it is in Ara."""

from __future__ import annotations

import os
import shutil
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
    rows = []
    for run_id in runs or list_runs(cfg.spool_dir):
        try:
            rows.append(_row(cfg, run_id))
        except UnsafeSpoolPath as exc:  # a planted FIFO, symlink, foreign file: say so, go on
            rows.append(_refused_row(cfg, run_id, exc))
    return rows


def _refused_row(cfg: Config, run_id: str, exc: OSError) -> dict[str, Any]:
    return {"run": run_id, "pending": 0, "pending_tail_bytes": 0, "shipped": 0, "quarantined": 0, "ended": False,
            "final_status": "refused", "flushing": False, "age_seconds": None, "requests": 0,
            "last_error": str(exc), "last_error_at": None, "failing_since": None, "playbook_id": None,
            "ara_server": None, "ara_url": None, "destinations": [],
            "spool": str(RunPaths.of(cfg.spool_dir, run_id).spool)}


def _row(cfg: Config, run_id: str) -> dict[str, Any]:
    paths = RunPaths.of(cfg.spool_dir, run_id)
    check_run_files(paths)  # a planted FIFO or symlink is reported, never opened as the run's file
    # Where the run was shipped last: that Ara's checkpoint, and a link into it.
    prog = progress.read(paths)
    st = prog.state or state_mod.RunState(run_id)
    try:
        mtime = os.stat(paths.spool, follow_symlinks=False).st_mtime
    except FileNotFoundError:
        mtime = None
    pb = playbook_of(st)
    base = ara_base(st.dest)
    return {
        "run": run_id,
        "pending": prog.pending_lines,
        "pending_tail_bytes": prog.torn,
        "shipped": st.shipped,
        "quarantined": quarantine.count(paths),
        "ended": st.ended,
        "final_status": st.final_status,
        "flushing": is_locked(paths),
        "age_seconds": round(time.time() - mtime, 1) if mtime else None,
        "requests": st.requests,
        "last_error": st.last_error,
        "last_error_at": st.last_error_at,
        "failing_since": st.first_error_at,
        "playbook_id": pb,
        "ara_server": base,
        "ara_url": f"{base}/playbooks/{pb}.html" if pb and base else None,
        "destinations": [ara_base(d) or "(unknown)" for d in st.destinations() if d or st.sink],
        "spool": str(paths.spool),
    }


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
        if r["flushing"]:
            state = "flushing"
        elif r["pending"]:
            state = "pending"
        else:
            state = r["final_status"] or ("shipped" if r["shipped"] else "-")
        table.append([
            r["run"], str(r["pending"]), str(r["shipped"]), str(r["quarantined"]), _age(r["age_seconds"]),
            state, r["ara_url"] or "-", " ".join((r["last_error"] or "-").split()),
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
