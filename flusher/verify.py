"""`ara-spool verify`: check each spool (parse, schema, order, torn tail, state) and report."""

from __future__ import annotations

import fcntl
import os
from typing import Any

from flusher.config import Config
from spool import quarantine
from spool import state as state_mod
from spool.paths import RunPaths, list_runs, open_nofollow
from spool.reader import read_lines


def _terminate_torn_tail(paths: RunPaths) -> bool:
    """Under the writers' lock a tail without its newline is torn for good: end it with one, so the
    fragment becomes a bad line that the flusher quarantines whole."""
    fd = open_nofollow(paths.spool, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
            return True
        return False
    finally:
        os.close(fd)


def verify_run(cfg: Config, run_id: str, repair: bool = False) -> dict[str, Any]:
    paths = RunPaths.of(cfg.spool_dir, run_id)
    problems: list[str] = []
    good = bad = 0
    last_end = 0
    last_seq = -1
    boundaries = {0}
    for line in read_lines(paths.spool):
        boundaries.add(line.end)
        last_end = line.end
        if line.event is None:
            bad += 1
            if len(problems) < 20:
                problems.append(f"offset {line.offset}: {line.error}")
            continue
        good += 1
        seq = line.event["seq"]
        if seq != line.offset or seq <= last_seq:
            problems.append(f"offset {line.offset}: seq {seq} out of order")
        last_seq = seq
    size = os.stat(paths.spool, follow_symlinks=False).st_size
    torn = size - last_end
    repaired = False
    if torn:
        problems.append(f"torn tail of {torn} byte(s) at offset {last_end}")
        if repair:
            repaired = _terminate_torn_tail(paths)
    try:
        st = state_mod.load(paths)
    except ValueError as exc:
        problems.append(str(exc))
        st = None
    if st is not None:
        if st.offset > size:
            problems.append(f"state offset {st.offset} is past the spool's end {size}")
        elif st.offset not in boundaries:
            problems.append(f"state offset {st.offset} is not at a line boundary")
    ok = not problems
    summary = (f"{run_id}: {good} event(s), {bad} bad line(s), quarantined {quarantine.count(paths)}, "
               f"shipped to offset {st.offset if st else 0} of {size}: " + ("ok" if ok else "; ".join(problems)))
    if repaired:
        summary += " (torn tail ended; the next flush quarantines it)"
    return {"run": run_id, "events": good, "bad_lines": bad, "torn_tail_bytes": torn, "size": size,
            "offset": st.offset if st else 0, "problems": problems, "repaired": repaired, "ok": ok,
            "summary": summary}


def verify(cfg: Config, runs: list[str] | None, repair: bool = False) -> tuple[list[dict[str, Any]], bool]:
    report = [verify_run(cfg, r, repair) for r in (runs or list_runs(cfg.spool_dir))]
    return report, all(r["ok"] for r in report)
