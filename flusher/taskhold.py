"""Following a live run, a task's start waits a moment for its end (pure: lines in, a cut out).

A task spooled with its end is created finished (one request) instead of created and then PATCHed
(two). The hold is bounded (`task_hold_seconds`), and released at once when someone waits for the
run (a checkpoint touched the lock file after the hold began), its ansible-playbook is gone, or the
flusher stops."""

from __future__ import annotations

from collections.abc import Callable

from ara_spool.spool.reader import Line


def hold_point(lines: list[Line], held: dict[int, float], hold: float, now: float,
               released: Callable[[float], bool]) -> int:
    """How many of `lines` to ship now: all, or up to the first task_start whose task_end is not
    among them and whose hold (first seen at held[offset]) has not run out or been released."""
    if hold <= 0:
        return len(lines)
    ended = {ln.event["task"]["uuid"] for ln in lines if ln.event is not None and ln.event["kind"] == "task_end"}
    for i, line in enumerate(lines):
        ev = line.event
        if ev is None or ev["kind"] != "task_start" or ev["task"]["uuid"] in ended:
            continue
        since = held.setdefault(line.offset, now)
        if now - since < hold and not released(since):
            return i
        break
    return len(lines)
