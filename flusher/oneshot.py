"""One-shot flush: ship what is pending for all runs (or the named ones), then return."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable

from ara_spool.flusher.client import AraClient
from ara_spool.flusher.config import Config
from ara_spool.flusher.shipper import Outcome, RunShipper
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import is_locked
from ara_spool.spool.paths import RunPaths, ensure_spool_dir, list_runs
from ara_spool.spool.state import FAILING_GRACE, failing_for


def pending_runs(cfg: Config) -> list[str]:
    """Runs with lines past their checkpoint, or a run_end not yet shipped."""
    out = []
    for run_id in list_runs(cfg.spool_dir):
        paths = RunPaths.of(cfg.spool_dir, run_id)
        st = state_mod.read_state_quiet(paths)
        if st is None or st.offset < paths.spool_size() or not st.clean:
            out.append(run_id)
    return out


async def wait_for_holder(paths: RunPaths, deadline: float | None, until_end: bool,
                          stop: asyncio.Event | None = None) -> Outcome:
    """Another flusher holds the run: wait (bounded) until it has passed the spool's current end."""
    target = paths.spool_size()
    try:
        os.utime(paths.lock)  # tell the holder someone waits: hold nothing back (shipper._hold_point)
    except OSError:
        pass
    while True:
        st = state_mod.read_state_quiet(paths)
        # Following a run to its end: take over once the holder lets go, whatever it shipped.
        if not until_end and st is not None and st.offset >= target:
            return Outcome(paths.run_id, "done", message="shipped by another flusher", playbook=st.ids.playbook)
        failing = failing_for(st)
        if (deadline is not None and time.monotonic() >= deadline) or failing >= FAILING_GRACE:
            if st is not None and st.last_error:
                # The holder is stuck on Ara, not slow: say what it sees.
                return Outcome(paths.run_id, "unreachable", message=f"(shipping flusher) {st.last_error}")
            return Outcome(paths.run_id, "busy",
                           message="another flusher holds the run and had not shipped it all in time")
        if not is_locked(paths):
            return Outcome(paths.run_id, "retry")
        if stop is not None and stop.is_set():
            return Outcome(paths.run_id, "stopped", message="stopped while another flusher held the run")
        await asyncio.sleep(0.1)


async def flush(
    cfg: Config,
    run_ids: Iterable[str] | None = None,
    *,
    timeout: float | None = None,
    until_end: bool = False,
    wait_if_busy: bool = True,
    on_progress: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
    parent_pid: int | None = None,
) -> list[Outcome]:
    """Ship the named runs (default: every run with something pending), several at once."""
    ensure_spool_dir(cfg.spool_dir)
    runs = list(run_ids) if run_ids else pending_runs(cfg)
    paths_list = [RunPaths.of(cfg.spool_dir, r) for r in runs]
    deadline = time.monotonic() + timeout if timeout else None
    sem = asyncio.Semaphore(max(1, cfg.concurrency))
    if stop is None:
        # SIGTERM/SIGINT: finish the request in flight, write the checkpoint, return.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    async with AraClient(cfg) as client:
        async def one(paths: RunPaths) -> Outcome:
            async with sem:
                while True:
                    shipper = RunShipper(paths, client, cfg, deadline=deadline, until_end=until_end,
                                         stop=stop, parent_pid=parent_pid, on_progress=on_progress)
                    outcome = await shipper.run()
                    if outcome.status != "busy":
                        return outcome
                    if not wait_if_busy:
                        return outcome
                    outcome = await wait_for_holder(paths, deadline, until_end, stop)
                    if outcome.status != "retry":
                        return outcome

        return list(await asyncio.gather(*(one(p) for p in paths_list)))
