"""How far a run is shipped: the one read model of a run's progress, and the one way to wait for it.

Everything that asks "is this run in Ara yet?" (the one-shot, status, the progress bar, the
Ansible side's checkpoints and run end) reads it here: the checkpoint's offset against the spool's
whole lines. A torn tail (a writer killed mid-line) is not data and is never waited for.
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
    pending_lines: int  # whole lines after the checkpoint
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


def read(paths: RunPaths, dest: str | None = None) -> RunProgress:
    """The run's progress at dest (default: where it was shipped last)."""
    st = state_mod.read_state_quiet(paths, dest)
    offset = st.offset if st else 0
    lines, torn = tail_info(paths.spool, offset)
    return RunProgress(
        run_id=paths.run_id, size=paths.spool_size(), torn=torn, offset=offset, pending_lines=lines,
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
      "stalled"  no progress for `stall` seconds (Ara hangs, or is slow to answer)
      "timeout"  `timeout` seconds passed
      "gone"     `alive()` says the flusher is gone (a process that exited, or a lock let go)
      "stopped"  `should_stop()` said so
    """
    if target is None:
        target = paths.spool_size()
    start = time.monotonic()
    last_offset, last_move = -1, start
    while True:
        nudge(paths)
        prog = read(paths, dest)
        now = time.monotonic()
        if prog.reached(target):
            return "shipped", prog
        if prog.offset != last_offset:
            last_offset, last_move = prog.offset, now
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
