"""`ara-spool flush --follow`: ship every run as it grows, until SIGTERM/SIGINT.

- Cheap polling: every `poll` seconds a scandir of the spool dir and a stat of each run's spool
  and state file; a run is looked at again only when one of them changed (idle CPU ~0).
- One shipper task per run with something to ship (at most `concurrency` at once). Each takes the
  run's lock (spool/lock.py), so a one-shot flush and the daemon never ship the same run at once:
  a one-shot that finds the daemon on a run waits for it (flusher/oneshot.py wait_for_holder).
- Ara down: the shipper retries without end (exponential backoff with jitter, capped at
  cfg.max_backoff), holding its place in the spool; nothing is skipped.
- Clean stop on SIGTERM/SIGINT: shippers stop at the next event boundary, so the request in
  flight finishes and the checkpoint is written; a shipper asleep in backoff (no request in
  flight) is cancelled at once, one stuck in a request 0.5 s after the stop (STOP_GRACE_SECONDS in
  flusher/retry.py: its state then says "not clean" and the next start reconciles against Ara);
  the daemon waits at most `stop_grace` seconds for them all. Exit status 0.
- systemd (Type=notify): READY=1 once running, STATUS= with the backlog (events not in Ara) and,
  during an outage, "Ara unreachable since T: <last error>"; WATCHDOG=1 at half of WatchdogSec,
  STOPPING=1. No-ops without $NOTIFY_SOCKET.
- A spool file it may not read, or a run complete in another Ara: said once (ERROR, INFO).
- Retention (spool/retention.py) every `retention_interval` seconds, in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ara_spool.flusher import orphans
from ara_spool.flusher.client import AraClient
from ara_spool.flusher.config import Config
from ara_spool.flusher.daemon_status import StatusReport
from ara_spool.flusher.ids import playbook_of
from ara_spool.flusher.shipper import Outcome, RunShipper
from ara_spool.spool import progress
from ara_spool.spool import retention as retention_mod
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import is_locked
from ara_spool.spool.paths import (
    STATE_SUFFIX,
    RunPaths,
    UnsafeSpoolPath,
    dir_fd,
    ensure_spool_dir,
    list_runs,
    open_nofollow,
    spool_entry,
)

log = logging.getLogger("ara_spool.daemon")

# Seconds the daemon waits for its shippers to save their checkpoints after SIGTERM; each cancels
# its own request in flight after retry.STOP_GRACE_SECONDS (0.5 s).
STOP_GRACE = 5.0
PAUSE_AFTER_ERROR = 60.0  # seconds before a run refused by Ara (auth) or broken (state) is retried
STATUS_EVERY = 10.0  # seconds between STATUS= updates (and over-cap checks)
SUMMARY_EVERY = 60.0  # seconds between "shipped N events" log lines
FULL_SCAN_EVERY = 5.0  # seconds between scans of every run (new runs are seen at once: dir mtime)


def sd_notify(message: str) -> bool:
    """Send a notification to systemd ($NOTIFY_SOCKET); False (no-op) outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None if systemd wants none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class _TrackedClient(AraClient):
    """AraClient that knows whether a request is in flight (to stop cleanly but at once)."""

    in_flight = 0

    async def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.in_flight += 1
        try:
            return await super().request(*args, **kwargs)
        finally:
            self.in_flight -= 1


@dataclass
class _Seen:
    """What a run's files looked like when the daemon last found nothing to do for it."""

    spool_size: int
    state_mtime: int


@dataclass
class Stats:
    shipped: int = 0
    quarantined: int = 0
    runs_ended: int = 0
    started: float = field(default_factory=time.monotonic)


class Daemon:
    """The follow-mode flusher. run() returns the exit status (0 after SIGTERM/SIGINT)."""

    def __init__(
        self,
        cfg: Config,
        *,
        poll: float = 0.5,
        retention: retention_mod.Retention | None = None,
        retention_interval: float = 3600.0,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.cfg = cfg
        self.poll = poll
        self.retention = retention or retention_mod.Retention()
        self.retention_interval = retention_interval
        self.stop_grace = stop_grace
        self.stop = asyncio.Event()
        self.active: dict[str, asyncio.Task[Outcome]] = {}
        self.shipping: dict[str, int] = {}  # run -> events its current shipper has shipped so far
        self.shippers: dict[str, RunShipper] = {}  # run -> its shipper at work (for an outage's STATUS=)
        self.paused: dict[str, float] = {}  # run -> monotonic time before which it is left alone
        self.seen: dict[str, _Seen] = {}
        self.ended: set[str] = set()  # runs whose run_end we have seen shipped
        self.dormant: set[str] = set()  # ended and wholly shipped: looked at on full scans only
        self.known: dict[str, _Seen] = {}
        self.elsewhere: set[str] = set()  # runs complete in another Ara (said once)
        self.unreadable: set[str] = set()  # runs whose spool we may not read (said once)
        self._dir_mtime = 0
        self.stats = Stats()
        self._summary_shipped = 0
        self._retention_task: asyncio.Task[retention_mod.Report] | None = None
        self.report = StatusReport(cfg)

    # -- what to ship -----------------------------------------------------------------------
    def _snapshot(self, paths: RunPaths) -> _Seen | None:
        try:
            size = os.stat(paths.spool, follow_symlinks=False).st_size
        except FileNotFoundError:
            return None
        try:
            mtime = os.stat(paths.state, follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        return _Seen(size, mtime)

    def _scan(self) -> dict[str, _Seen]:
        """Every run's snapshot from one scandir (oldest spool first), and the dir's mtime."""
        spools: list[tuple[float, str, int]] = []
        states: dict[str, int] = {}
        try:
            self._dir_mtime = os.stat(self.cfg.spool_dir).st_mtime_ns
            with os.scandir(dir_fd(self.cfg.spool_dir)) as entries:  # a dir swapped for a symlink is refused
                for entry in entries:
                    name = entry.name
                    if name.endswith(STATE_SUFFIX):
                        try:
                            states[name[: -len(STATE_SUFFIX)]] = entry.stat(follow_symlinks=False).st_mtime_ns
                        except OSError:
                            pass
                    elif (found := spool_entry(entry)) is not None:
                        run_id, st = found
                        spools.append((st.st_mtime, run_id, st.st_size))
        except FileNotFoundError:
            return {}
        except UnsafeSpoolPath as exc:
            log.error("%s", exc)
            return {}
        return {run_id: _Seen(size, states.get(run_id, 0)) for _, run_id, size in sorted(spools)}

    def candidates(self, full: bool) -> dict[str, _Seen | None]:
        """Runs to look at this poll. A full scan finds new runs (and appends to ended runs); in
        between, only runs not known to be ended and shipped are stat-ed: polling stays cheap with
        thousands of old runs in the spool."""
        if full:
            self.known = self._scan()
            return dict(self.known)
        out: dict[str, _Seen | None] = {}
        for run_id in self.known:
            if run_id not in self.dormant:
                out[run_id] = self._snapshot(RunPaths.of(self.cfg.spool_dir, run_id))
        return out

    def _dir_changed(self) -> bool:
        try:
            return os.stat(self.cfg.spool_dir).st_mtime_ns != self._dir_mtime
        except FileNotFoundError:
            return True

    def needs_work(self, run_id: str, snap: _Seen | None = None) -> bool:
        """Whether run_id has whole lines past its checkpoint, or an unclean checkpoint."""
        if snap is not None and snap == self.seen.get(run_id):
            return False  # unchanged since it had nothing to do: no path built (1,000 old runs per scan)
        paths = RunPaths.of(self.cfg.spool_dir, run_id)
        if snap is None:
            snap = self._snapshot(paths)
        if snap is None or snap == self.seen.get(run_id):
            return False
        self.dormant.discard(run_id)
        st = state_mod.read_state_quiet(paths, self.cfg.destination)
        try:
            if st is None:
                # No checkpoint yet: work if there is at least one whole line.
                return _has_newline(paths, 0)
            if st.fresh and st.others and self._complete_elsewhere(paths, snap):
                return False
            whole_tail = st.offset >= snap.spool_size or not _has_newline(paths, st.offset)
        except PermissionError as exc:
            self._unreadable(paths, exc)
            return False
        self.unreadable.discard(run_id)
        if st.clean and whole_tail:
            # Shipped up to the end, or only a growing (or torn) tail after it.
            self.seen[run_id] = snap
            if st.ended:
                self.ended.add(run_id)
                if st.offset >= snap.spool_size:
                    self.dormant.add(run_id)
            return False
        return True

    def _complete_elsewhere(self, paths: RunPaths, snap: _Seen) -> bool:
        """A run wholly in another Ara and new to this one (e.g. ARA_API_SERVER changed, or a typo)
        is not backlog here: it is left alone, and said once, not an error per run every minute."""
        done = progress.complete_in(paths)
        if done is None or done.state is None or done.state.dest == self.cfg.destination:
            return False
        self.seen[paths.run_id] = snap
        self.ended.add(paths.run_id)
        self.dormant.add(paths.run_id)
        if paths.run_id not in self.elsewhere:
            self.elsewhere.add(paths.run_id)
            log.info("run %s is complete in %s; not shipping it again to %s (`ara-spool flush --run %s` "
                     "would)", paths.run_id, done.state.dest.removesuffix("/api/v1"), self.cfg.display_server,
                     paths.run_id)
        return True

    def _unreadable(self, paths: RunPaths, exc: OSError) -> None:
        """A spool file the daemon may not read (a user's spool made without
        ARA_SPOOL_GROUP_SHARED: mode 0600) is never shipped: say so, once, until it is readable."""
        # Not marked seen: a chmod changes neither size nor mtime, the next poll tries again.
        if paths.run_id in self.unreadable:
            return
        self.unreadable.add(paths.run_id)
        try:
            st = os.stat(paths.spool, follow_symlinks=False)
            what = f"mode {st.st_mode & 0o7777:04o}, owner uid {st.st_uid}"
        except OSError:
            what = "no access"
        log.error("run %s: cannot read %s (%s): %s; it is not shipped. Spool with ARA_SPOOL_GROUP_SHARED=true "
                  "(files 0660 in the spool's group), or give this one to the group: chgrp %s %s && chmod 660 %s",
                  paths.run_id, exc.filename or paths.spool, what, exc.strerror or exc,
                  _group_of(paths.spool_dir), paths.spool, paths.spool)

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> int:
        ensure_spool_dir(self.cfg.spool_dir)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        wd_every = watchdog_interval()
        last_wd = last_status = last_retention = last_full = float("-inf")
        sem = asyncio.Semaphore(max(1, self.cfg.concurrency))
        log.info("following %s, shipping to %s (poll %.2fs, retention %s)", self.cfg.spool_dir,
                 self.cfg.display_server, self.poll,
                 "off" if self.retention.days is None else f"{self.retention.days:g} day(s), {self.retention.action}")
        async with _TrackedClient(self.cfg) as client:
            sd_notify("READY=1\nSTATUS=started")
            while not self.stop.is_set():
                now = time.monotonic()
                self._reap()
                full = now - last_full >= FULL_SCAN_EVERY or self._dir_changed()
                if full:
                    last_full = now
                    self._end_orphans()
                for run_id, snap in self.candidates(full).items():
                    if snap is None or run_id in self.active or self.paused.get(run_id, 0.0) > now:
                        continue
                    if self.needs_work(run_id, snap):
                        self.active[run_id] = asyncio.create_task(self._ship(client, sem, run_id),
                                                                  name=f"ship {run_id}")
                if wd_every is not None and now - last_wd >= wd_every:
                    sd_notify("WATCHDOG=1")
                    last_wd = now
                if now - last_status >= STATUS_EVERY or self.report.outage_changed(self.shippers):
                    self._status()
                    last_status = now
                if now - last_retention >= self.retention_interval and self.retention.days is not None \
                        and self._retention_task is None:
                    self._retention_task = asyncio.create_task(
                        asyncio.to_thread(retention_mod.apply, self.cfg.spool_dir, self.retention))
                    last_retention = now
                if self._retention_task is not None and self._retention_task.done():
                    self._retention_done(self._retention_task)
                    self._retention_task = None
                try:
                    await asyncio.wait_for(self.stop.wait(), self.poll)
                except TimeoutError:
                    pass
            await self._shutdown(client)
        self._reap()
        self._log_summary(force=True)
        sd_notify("STATUS=stopped")
        log.info("stopped")
        return 0

    def _end_orphans(self) -> None:
        """Runs shipped up to their end but not ended, whose ansible-playbook is gone (its run_end
        could not be spooled: a full disk): spool their end as expired; the next poll ships it. A
        full disk still: tried again on the next full scan."""
        for run_id in [r for r in self.seen if r not in self.ended and r not in self.active]:
            paths = RunPaths.of(self.cfg.spool_dir, run_id)
            try:
                if is_locked(paths) or not orphans.gone(orphans.recorder(paths)):
                    continue  # its own flusher follows it (and ends it), or its play goes on
                orphans.end_expired(paths)
            except OSError as exc:
                log.warning("run %s: cannot record the end of a run whose ansible-playbook is gone: %s "
                            "(tried again in %.0fs)", run_id, exc, FULL_SCAN_EVERY)

    def _on_signal(self, sig: int) -> None:
        if not self.stop.is_set():
            log.info("%s: finishing the request in flight, then stopping", signal.Signals(sig).name)
            sd_notify("STOPPING=1\nSTATUS=stopping")
        self.stop.set()

    async def _shutdown(self, client: _TrackedClient) -> None:
        pending = {t for t in self.active.values() if not t.done()}
        deadline = time.monotonic() + self.stop_grace
        idle = 0
        while pending and time.monotonic() < deadline:
            _done, pending = await asyncio.wait(pending, timeout=0.05)
            # Shippers see the stop between events; one with no request in flight for a while is
            # asleep in backoff (Ara down): nothing to finish, cancel it now.
            idle = idle + 1 if client.in_flight == 0 else 0
            if idle >= 4:
                break
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._retention_task is not None:
            # A retention pass is file work in a thread: let it finish (bounded by the files).
            await asyncio.gather(self._retention_task, return_exceptions=True)
            self._retention_done(self._retention_task)
            self._retention_task = None

    async def _ship(self, client: AraClient, sem: asyncio.Semaphore, run_id: str) -> Outcome:
        async with sem:
            if self.stop.is_set():
                return Outcome(run_id, "stopped")
            paths = RunPaths.of(self.cfg.spool_dir, run_id)
            # STATUS= counts events as they are shipped, not when the shipper returns (a long run
            # would show 0 until its end): the shipper's checkpoint counter, less what it held at
            # the start. _reap swaps this for the outcome's exact count.
            before = state_mod.read_state_quiet(paths, self.cfg.destination)
            base = before.shipped if before is not None else 0
            shipper: RunShipper | None = None

            def shipped(_run_id: str, _n: int) -> None:
                st = shipper.state if shipper is not None else None
                if st is not None:
                    self.shipping[run_id] = max(0, st.shipped - base)

            shipper = RunShipper(paths, client, self.cfg, stop=self.stop, on_progress=shipped)
            self.shippers[run_id] = shipper
            try:
                return await shipper.run()
            finally:
                self.shippers.pop(run_id, None)

    def _reap(self) -> None:
        for run_id, task in list(self.active.items()):
            if not task.done():
                continue
            del self.active[run_id]
            live = self.shipping.pop(run_id, 0)
            if task.cancelled() or task.exception() is not None:
                self.stats.shipped += live  # no outcome: keep what it was seen shipping
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                # A bug or an OS error (disk, permissions): keep the daemon alive, retry later.
                log.error("run %s: shipping failed: %s: %s", run_id, type(exc).__name__, exc,
                          exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
                self.paused[run_id] = time.monotonic() + PAUSE_AFTER_ERROR
                continue
            self._finished(run_id, task.result())
        self._log_summary()

    def _finished(self, run_id: str, outcome: Outcome) -> None:
        self.stats.shipped += outcome.shipped
        self.stats.quarantined += outcome.quarantined
        self._summary_shipped += outcome.shipped
        if outcome.status in ("auth", "error", "server"):
            log.error("run %s: %s; trying it again in %.0fs", run_id, outcome.message, PAUSE_AFTER_ERROR)
            self.paused[run_id] = time.monotonic() + PAUSE_AFTER_ERROR
            return
        if outcome.quarantined:
            log.warning("run %s: %d line(s) quarantined, see %s", run_id, outcome.quarantined,
                        RunPaths.of(self.cfg.spool_dir, run_id).rejected)
        if outcome.status == "done" and run_id not in self.ended:
            st = state_mod.read_state_quiet(RunPaths.of(self.cfg.spool_dir, run_id), self.cfg.destination)
            if st is not None and st.ended:
                self.ended.add(run_id)
                self.stats.runs_ended += 1
                log.info("run %s: finished in Ara (playbook %s, %s): %d event(s) shipped, %d quarantined",
                         run_id, playbook_of(st), st.final_status, st.shipped, st.quarantined)

    def _log_summary(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._summary_shipped and (force or now - getattr(self, "_last_summary", 0.0) >= SUMMARY_EVERY):
            log.info("shipped %d event(s) since the last report", self._summary_shipped)
            self._summary_shipped = 0
            self._last_summary = now

    def shipped_since_start(self) -> int:
        """Events shipped by this daemon: finished shippers, plus those still at work."""
        return self.stats.shipped + sum(self.shipping.values())

    def _status(self) -> None:
        # Runs ended and wholly shipped (dormant) have no backlog and no error: not read.
        runs = [r for r in self.known if r not in self.dormant] if self.known else list_runs(self.cfg.spool_dir)
        sd_notify("STATUS=" + self.report.text(runs, self.active, self.shipped_since_start()))

    def _retention_done(self, task: asyncio.Task[retention_mod.Report]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("retention pass failed: %s", exc)
            return
        report = task.result()
        for run_id in report.retired:
            self.seen.pop(run_id, None)
            self.ended.discard(run_id)
            self.dormant.discard(run_id)
            self.known.pop(run_id, None)
        if report.retired:
            log.info("retention: %d run(s) %s", len(report.retired),
                     "archived" if self.retention.action == "archive" else "removed")


def _has_newline(paths: RunPaths, offset: int) -> bool:
    """Whether the spool has a complete line after offset (reads only until the first newline)."""
    try:
        fd = open_nofollow(paths.spool, os.O_RDONLY)  # never blocks on a FIFO planted in its place
    except PermissionError:
        raise  # the caller says whose file and how to fix it
    except OSError:
        return False
    try:
        pos = offset
        while chunk := os.pread(fd, 1 << 16, pos):
            if b"\n" in chunk:
                return True
            pos += len(chunk)
        return False
    finally:
        os.close(fd)


def _group_of(path: Path) -> str:
    """The name of a directory's group (the spool's group, for a chgrp hint)."""
    import grp

    try:
        gid = os.stat(path).st_gid
        return grp.getgrgid(gid).gr_name
    except (OSError, KeyError):
        return "ara-spool"


def run_daemon(
    cfg: Config,
    *,
    poll: float = 0.5,
    retention: retention_mod.Retention | None = None,
    retention_interval: float = 3600.0,
) -> int:
    """Run the follow-mode flusher until SIGTERM/SIGINT; the process exit status."""
    return asyncio.run(Daemon(cfg, poll=poll, retention=retention, retention_interval=retention_interval).run())
