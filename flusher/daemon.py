"""`ara-spool flush --follow`: ship every run as it grows, until SIGTERM/SIGINT.

Cheap polling of the spool dir (a stat per run file each `poll` seconds; idle CPU ~0), one shipper
task per run with new lines, the per-run lock shared with one-shot flushes, retries without end
while Ara is down, and a clean stop: the in-flight request finishes, the checkpoint is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time

from flusher.client import AraClient
from flusher.config import Config
from flusher.shipper import Outcome, RunShipper
from spool import state as state_mod
from spool.paths import RunPaths, ensure_spool_dir, list_runs
from spool.reader import tail_info

log = logging.getLogger("ara_spool.daemon")

STOP_GRACE = 5.0  # seconds for in-flight work after SIGTERM before it is cancelled
AUTH_PAUSE = 60.0  # seconds before a run refused by Ara is tried again


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness, status or the watchdog; no-op elsewhere."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


class Daemon:
    def __init__(self, cfg: Config, poll: float = 0.5) -> None:
        self.cfg = cfg
        self.poll = poll
        self.stop = asyncio.Event()
        self.active: dict[str, asyncio.Task[Outcome]] = {}
        self.paused: dict[str, float] = {}  # run -> monotonic time to retry after an auth refusal
        self.seen: dict[str, int] = {}  # run -> spool size when it was last fully shipped

    def _needs_work(self, run_id: str) -> bool:
        paths = RunPaths.of(self.cfg.spool_dir, run_id)
        try:
            size = os.stat(paths.spool, follow_symlinks=False).st_size
        except FileNotFoundError:
            return False
        if self.seen.get(run_id) == size:
            return False
        st = state_mod.read_state_quiet(paths)
        if st is not None and st.offset >= size and st.clean:
            self.seen[run_id] = size
            return False
        if st is not None and tail_info(paths.spool, st.offset)[0] == 0 and st.clean:
            return False  # only a growing (or torn) tail: nothing whole to ship yet
        return True

    def backlog(self) -> int:
        total = 0
        for run_id in list_runs(self.cfg.spool_dir):
            paths = RunPaths.of(self.cfg.spool_dir, run_id)
            st = state_mod.read_state_quiet(paths)
            total += tail_info(paths.spool, st.offset if st else 0)[0]
        return total

    async def run(self) -> int:
        ensure_spool_dir(self.cfg.spool_dir)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        watchdog_every = watchdog_usec / 2e6 if watchdog_usec else None
        last_watchdog = last_status = 0.0
        sem = asyncio.Semaphore(max(1, self.cfg.concurrency))
        log.info("following %s, shipping to %s", self.cfg.spool_dir, self.cfg.display_server)
        sd_notify("READY=1\nSTATUS=started")
        async with AraClient(self.cfg) as client:
            while not self.stop.is_set():
                now = time.monotonic()
                for run_id in list_runs(self.cfg.spool_dir):
                    if run_id in self.active or self.paused.get(run_id, 0) > now:
                        continue
                    if self._needs_work(run_id):
                        self.active[run_id] = asyncio.create_task(self._ship(client, sem, run_id))
                for run_id, task in list(self.active.items()):
                    if task.done():
                        del self.active[run_id]
                        self._finished(run_id, task.result())
                if watchdog_every and now - last_watchdog >= watchdog_every:
                    sd_notify("WATCHDOG=1")
                    last_watchdog = now
                if now - last_status >= 10:
                    sd_notify(f"STATUS=backlog {self.backlog()} event(s), {len(self.active)} run(s) shipping")
                    last_status = now
                try:
                    await asyncio.wait_for(self.stop.wait(), self.poll)
                except TimeoutError:
                    pass
            sd_notify("STOPPING=1\nSTATUS=stopping")
            log.info("stopping: finishing in-flight requests")
            if self.active:
                _done, pending = await asyncio.wait(self.active.values(), timeout=STOP_GRACE)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        return 0

    async def _ship(self, client: AraClient, sem: asyncio.Semaphore, run_id: str) -> Outcome:
        async with sem:
            paths = RunPaths.of(self.cfg.spool_dir, run_id)
            return await RunShipper(paths, client, self.cfg, stop=self.stop).run()

    def _finished(self, run_id: str, outcome: Outcome) -> None:
        if outcome.status == "auth":
            log.error("run %s: %s; pausing it for %.0fs", run_id, outcome.message, AUTH_PAUSE)
            self.paused[run_id] = time.monotonic() + AUTH_PAUSE
        elif outcome.status == "error":
            log.error("run %s: %s", run_id, outcome.message)
            self.paused[run_id] = time.monotonic() + AUTH_PAUSE
        elif outcome.shipped or outcome.quarantined:
            log.info("run %s: shipped %d, quarantined %d", run_id, outcome.shipped, outcome.quarantined)


def run_daemon(cfg: Config) -> int:
    return asyncio.run(Daemon(cfg).run())
