"""How far a run is shipped: the one read model of a run's progress, and the one way to wait for it.

Everything that asks "is this run in Ara yet?" (the one-shot, status, the progress bar, the
Ansible side's checkpoints and run end, the daemon's STATUS=) reads it here. What Ara has answered
is three things: the checkpoint's low-water offset (every line before it is in Ara), the lines
acknowledged above it (a window ships hosts side by side: `done_above`), and the requests Ara has
answered (`answered`: one line can be hundreds of requests, e.g. a 200-host `host_stats`). Pending
is the whole lines past the offset less those acknowledged above it; progress is any of the three
moving. A torn tail (a writer killed mid-line) is not data and is never waited for.
Knows nothing of Ara: a destination is an opaque key (spool/state.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import is_locked
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.reader import tail_info


@dataclass
class RunProgress:
    run_id: str
    size: int  # bytes in the spool
    torn: int  # bytes of an unterminated last line (not data yet)
    offset: int  # checkpoint: everything before it is shipped or quarantined
    pending_lines: int  # whole lines after the checkpoint not acknowledged above it
    acked_above: int  # lines past the checkpoint Ara has already acknowledged
    answered: int  # requests Ara has answered for the run (saved while someone waits)
    clean: bool  # False: a flusher works on it, or died (its next one reconciles)
    ended: bool  # its run_end is shipped
    last_error: str | None
    failing_for: float  # seconds its flusher has failed to reach the destination
    state: state_mod.RunState | None

    @property
    def pending(self) -> bool:
        """Whole lines are waiting to be shipped."""
        return self.pending_lines > 0

    @property
    def needs_flush(self) -> bool:
        """A flusher has work here: lines to ship, or a dead flusher's tail to reconcile."""
        return self.pending or not self.clean

    def reached(self, target: int) -> bool:
        """Shipped up to byte `target` (or to the last whole line before it)."""
        return self.offset >= min(target, self.size - self.torn)

    @property
    def mark(self) -> tuple[int, int, int]:
        """Changes whenever Ara answers anything for the run: what a wait counts as progress."""
        return self.offset, self.acked_above, self.answered


def read(paths: RunPaths, dest: str | None = None) -> RunProgress:
    """The run's progress at dest (default: where it was shipped last)."""
    st = state_mod.read_state_quiet(paths, dest)
    offset = st.offset if st else 0
    lines, torn = tail_info(paths.spool, offset)
    # done_above holds offsets of line starts past the checkpoint (the low-water mark); any at or
    # below it are stale (the mark moved past them).
    above = sum(1 for o in st.done_above if o >= offset) if st else 0
    return RunProgress(
        run_id=paths.run_id, size=paths.spool_size(), torn=torn, offset=offset,
        pending_lines=max(0, lines - above), acked_above=above, answered=st.answered if st else 0,
        clean=st.clean if st else True, ended=st.ended if st else False,
        last_error=st.last_error if st else None, failing_for=state_mod.failing_for(st), state=st,
    )


def nudge(paths: RunPaths) -> None:
    """Tell the run's flusher someone waits: it holds nothing back and shows progress at once."""
    try:
        os.utime(paths.lock)
    except OSError:
        pass


def wait(
    paths: RunPaths,
    *,
    timeout: float | None,
    target: int | None = None,
    stall: float | None = None,
    alive: Callable[[], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dest: str | None = None,
    poll: float = 0.05,
) -> tuple[str, RunProgress]:
    """Wait until the run is shipped up to `target` (default: the spool's end now). Returns why it
    stopped waiting, with the last progress seen:
      "shipped"  reached the target
      "failing"  the flusher has failed to reach Ara for state.FAILING_GRACE seconds
      "stalled"  Ara answered nothing for the run for `stall` seconds (it hangs)
      "timeout"  `timeout` seconds passed
      "gone"     `alive()` says the flusher is gone (a process that exited, or a lock let go)
      "stopped"  `should_stop()` said so
    """
    if target is None:
        target = paths.spool_size()
    start = time.monotonic()
    last_mark: tuple[int, int, int] | None = None
    last_move = start
    while True:
        nudge(paths)
        prog = read(paths, dest)
        now = time.monotonic()
        if prog.reached(target):
            return "shipped", prog
        if prog.mark != last_mark:  # any answer from Ara counts, not only the low-water mark
            last_mark, last_move = prog.mark, now
        if prog.failing_for >= state_mod.FAILING_GRACE or (prog.last_error and stall is not None):
            return "failing", prog
        if alive is not None and not alive():
            prog = read(paths, dest)
            return ("shipped" if prog.reached(target) else "gone"), prog
        if should_stop is not None and should_stop():
            return "stopped", prog
        if timeout is not None and now - start >= timeout:
            return "timeout", prog
        if stall is not None and now - last_move >= stall:
            return "stalled", prog
        time.sleep(poll)


def flusher_holds(paths: RunPaths) -> Callable[[], bool]:
    """alive() for wait(): a flusher still holds the run's lock."""
    return lambda: is_locked(paths)


def complete(prog: RunProgress) -> bool:
    """Wholly in that Ara: its run_end shipped, nothing pending, its last flusher stopped cleanly."""
    return prog.state is not None and prog.ended and prog.clean and not prog.pending_lines and not prog.torn


def complete_in(paths: RunPaths) -> RunProgress | None:
    """The run's progress at a destination it is wholly in (the last one shipped to first), or None.
    A flush to a wrong server after the right one makes that wrong one the last: the run is still
    complete in the Ara it went to, and status and retention must say so."""
    prog = read(paths)
    if complete(prog):
        return prog
    st = prog.state
    for dest in st.others if st is not None else ():
        other = read(paths, dest)
        if complete(other):
            return other
    return None
