"""What the daemon says about its work: the STATUS= line for systemd (the backlog, an outage, the
size cap) and the warnings that go with it. Reads checkpoints and spool tails; sends nothing."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from ara_spool.flusher.config import Config
from ara_spool.spool import progress
from ara_spool.spool import retention as retention_mod
from ara_spool.spool import state as state_mod
from ara_spool.spool.paths import RunPaths

log = logging.getLogger("ara_spool.daemon")  # the daemon's own lines, as the journal shows them

OUTAGE_WARN_EVERY = 300.0  # seconds between WARNING lines while Ara stays unreachable
CAP_WARN_EVERY = 300.0  # seconds between WARNING lines while the spool is over its cap


class StatusReport:
    """The daemon's STATUS= text, and whether an outage began or ended since it was last made."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.cap = retention_mod.Cap.from_env()
        self.outage: str | None = None  # the error STATUS= last showed (None: Ara answers)
        self._outage_warned = 0.0
        self._cap_warned = 0.0

    def backlog(self, runs: Iterable[str], active: Collection[str]) -> tuple[int, int, state_mod.RunState | None]:
        """(runs with something pending, events pending, the state of the run failing longest),
        over `runs` (the daemon passes those not ended and shipped: 1,000 old runs cost nothing)."""
        count = pending = 0
        failing: state_mod.RunState | None = None

        def key(st: state_mod.RunState) -> tuple[bool, str]:
            # A run at work (Ara unreachable) before one paused on an error, then the oldest.
            return st.run_id not in active, st.first_error_at or ""

        for run_id in runs:
            paths = RunPaths.of(self.cfg.spool_dir, run_id)
            try:
                size = os.stat(paths.spool, follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            st = state_mod.read_state_quiet(paths, self.cfg.destination)
            if st is not None and st.last_error and st.first_error_at and (failing is None or key(st) < key(failing)):
                failing = st
            if st is not None and st.offset >= size:
                continue
            # The one progress model: lines acknowledged above the low-water mark are not backlog.
            try:
                left = progress.read(paths, self.cfg.destination).pending_lines
            except OSError:  # unreadable (the daemon says so once): not ours to ship
                continue
            if left > 0:
                count += 1
                pending += left
        return count, pending, failing

    def outage_changed(self, shippers: Mapping[str, Any]) -> bool:
        """A shipper at work began or stopped failing to reach Ara since the last text (in memory:
        cheap every poll), so that STATUS= shows an outage at once."""
        failing = any(sh.state is not None and sh.state.last_error for sh in shippers.values())
        return failing != (self.outage is not None)

    def text(self, runs: Iterable[str], active: Collection[str], shipped: int) -> str:
        count, pending, failing = self.backlog(runs, active)
        status = (f"backlog {pending} event(s) in {count} run(s); {len(active)} shipping; "
                  f"{shipped} event(s) shipped since start")
        at_work = failing is not None and failing.run_id in active
        if failing is not None:
            # An outage is what an operator must see first in `systemctl status`.
            error = " ".join((failing.last_error or "").split())
            what = "Ara unreachable" if at_work else f"run {failing.run_id} failing"
            status = f"{what} since {failing.first_error_at}: {error}; {status}"
            if at_work and time.monotonic() - self._outage_warned >= OUTAGE_WARN_EVERY:
                # Each retry is INFO (-v): the outage itself is a WARNING while it lasts.
                log.warning("%s since %s: %s; %d event(s) wait in the spool", what, failing.first_error_at,
                            error, pending)
                self._outage_warned = time.monotonic()
        self.outage = (failing.last_error or "") if failing is not None and at_work else None
        if self.cap.max_bytes is not None:
            used = retention_mod.unshipped_bytes(self.cfg.spool_dir)
            if used > self.cap.max_bytes:
                status += f"; SPOOL OVER CAP ({human(used)} unshipped > {human(self.cap.max_bytes)})"
                if time.monotonic() - self._cap_warned >= CAP_WARN_EVERY:
                    log.warning("spool %s holds %s not yet in Ara, over ARA_SPOOL_MAX_BYTES=%d (policy %s): "
                                "is Ara reachable?", self.cfg.spool_dir, human(used), self.cap.max_bytes,
                                self.cap.policy)
                    self._cap_warned = time.monotonic()
        return status


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
