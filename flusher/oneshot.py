"""One-shot flush: ship what is pending for all runs (or the named ones), then return.

Bounded: `timeout` seconds without progress (Ara down, hanging, or another flusher stuck on it)
end a run's shipping; what is left stays in the spool. SIGTERM/SIGINT cancel the requests in
flight and save every checkpoint at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable

from ara_spool.flusher.client import AraClient
from ara_spool.flusher.config import Config
from ara_spool.flusher.ids import playbook_of
from ara_spool.flusher.shipper import Outcome, RunShipper
from ara_spool.spool import progress
from ara_spool.spool.paths import RunPaths, UnsafeSpoolPath, ensure_spool_dir, list_runs

DEFAULT_TIMEOUT = 60.0  # seconds without progress before a one-shot gives a run up


def pending_runs(cfg: Config) -> list[str]:
    """Runs with whole lines past their checkpoint here, or a dead flusher's tail to reconcile."""
    return [run_id for run_id in list_runs(cfg.spool_dir) if _needs_flush(cfg, run_id)]


def _needs_flush(cfg: Config, run_id: str) -> bool:
    try:
        return progress.read(RunPaths.of(cfg.spool_dir, run_id), cfg.destination).needs_flush
    except UnsafeSpoolPath:
        return True  # its shipper refuses it with a message naming the file; the other runs go on


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop`: requests in flight are cancelled, checkpoints saved."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


async def wait_for_holder(paths: RunPaths, cfg: Config, timeout: float | None, stop: asyncio.Event) -> Outcome:
    """Another flusher holds the run: wait until it has passed the spool's end as it is now, while
    it makes progress (bounded by timeout), or until it lets go (then: "retry")."""
    why, prog = await asyncio.to_thread(
        progress.wait, paths, timeout=None, stall=timeout, alive=progress.flusher_holds(paths),
        should_stop=stop.is_set, dest=cfg.destination, poll=0.1)
    if why == "shipped":
        return Outcome(paths.run_id, "done", message="shipped by another flusher", playbook=playbook_of(prog.state))
    if why == "gone":
        return Outcome(paths.run_id, "retry")
    if why == "stopped":
        return Outcome(paths.run_id, "stopped", message="stopped while another flusher held the run")
    if prog.last_error:
        # The holder is stuck on Ara, not slow: say what it sees.
        return Outcome(paths.run_id, "unreachable", message=f"(shipping flusher) {prog.last_error}")
    return Outcome(paths.run_id, "busy", message="another flusher holds the run and made no progress "
                   f"for {timeout:.0f}s" if timeout else "another flusher holds the run")


async def flush(
    cfg: Config,
    run_ids: Iterable[str] | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    wait_if_busy: bool = True,
    on_progress: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
    quiet_retries: bool = True,
) -> list[Outcome]:
    """Ship the named runs (default: every run with something pending), several at once.
    `quiet_retries=False` (a terminal): an outage is logged as it begins, not only at the end."""
    ensure_spool_dir(cfg.spool_dir)
    runs = list(run_ids) if run_ids else pending_runs(cfg)
    sem = asyncio.Semaphore(max(1, cfg.concurrency))
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)

    async with AraClient(cfg) as client:
        async def one(paths: RunPaths) -> Outcome:
            async with sem:
                while True:
                    outcome = await RunShipper(paths, client, cfg, timeout=timeout, stop=stop,
                                               on_progress=on_progress, quiet_retries=quiet_retries).run()
                    if outcome.status != "busy" or not wait_if_busy:
                        return outcome
                    outcome = await wait_for_holder(paths, cfg, timeout, stop)
                    if outcome.status != "retry":
                        return outcome

        return list(await asyncio.gather(*(one(RunPaths.of(cfg.spool_dir, r)) for r in runs)))
