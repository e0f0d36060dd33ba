"""The in-play flusher: follows one live run while its ansible-playbook runs, then finishes it.

Started by the ara_spool callback (`ara-spool flush --run ID --until-end --parent PID`) in a
session of its own. While the playbook runs it ships each event as it is spooled and never gives
up (the play does not wait on it). Once the playbook has ended, or died without a run_end (then it
records the run as expired), it keeps going detached until the run is shipped, or until
`timeout` seconds pass without progress: what is left stays in the spool for the next flush, the
daemon or the timer.
"""

from __future__ import annotations

import asyncio

from ara_spool.flusher.client import AraClient
from ara_spool.flusher.config import Config
from ara_spool.flusher.oneshot import stop_on_signals
from ara_spool.flusher.shipper import Outcome, RunShipper
from ara_spool.spool.lock import is_locked
from ara_spool.spool.paths import RunPaths, ensure_spool_dir

DETACHED_TIMEOUT = 300.0  # seconds without progress, after the playbook ended, before giving up


async def follow(cfg: Config, run_id: str, *, parent_pid: int | None, timeout: float | None = DETACHED_TIMEOUT,
                 stop: asyncio.Event | None = None) -> Outcome:
    ensure_spool_dir(cfg.spool_dir)
    paths = RunPaths.of(cfg.spool_dir, run_id)
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    async with AraClient(cfg) as client:
        while True:
            outcome = await RunShipper(paths, client, cfg, timeout=timeout, until_end=True, stop=stop,
                                       parent_pid=parent_pid).run()
            if outcome.status != "busy":
                return outcome
            # Another flusher (a daemon, a one-shot) holds the run: take over once it lets go.
            while is_locked(paths):
                if stop.is_set():
                    return Outcome(run_id, "stopped")
                await asyncio.sleep(0.2)
