"""The import's driver: import each run pass by pass, shipping after each pass with the flusher.

Without --follow: one pass. With it, passes every `poll` seconds: a run still being written is
imported again until its status file says it ended (or, `stall`, it had no new event that long),
and the private data dirs (or artifacts dirs) given are watched, so a run that appears under them
later is imported and followed too. Following only artifact dirs ends when each of them ended;
watching a directory ends on SIGTERM/SIGINT only.

A signal stops the work in hand between two runs' passes, or cuts the shipping short with every
checkpoint saved (oneshot's stop): what is spooled and not shipped stays in the spool, and the
next import (its cursor) or `ara-spool flush` goes on from there. Nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ara_spool.flusher import importer
from ara_spool.flusher.config import Config
from ara_spool.flusher.shipper import Outcome
from ara_spool.spool.paths import UnsafeRunId, check_run_id

FATAL = ("auth", "server")  # nothing a later pass fixes


@dataclass
class Stopper:
    """Set by SIGTERM/SIGINT; read between steps (a handler that only sets an int is safe anywhere)."""

    signal: int = 0

    def __call__(self, signum: int, _frame: object) -> None:
        self.signal = signum

    @property
    def stopped(self) -> bool:
        return self.signal != 0


@contextmanager
def stop_on_signals(stopper: Stopper) -> Iterator[None]:
    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, stopper)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@dataclass
class ImportSession:
    cfg: Config
    paths: list[Path]
    follow: bool = False
    ship: bool = True
    poll: float = 1.0
    timeout: float | None = 60.0
    stall: float | None = None
    report: Callable[[importer.RunImport, int], None] | None = None
    warn: Callable[[str], None] | None = None
    imports: list[importer.RunImport] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    stopper: Stopper = field(default_factory=Stopper)
    _watched: list[Path] = field(default_factory=list)
    _known: set[Path] = field(default_factory=set)
    _unshipped: set[str] = field(default_factory=set)  # runs whose spool may hold lines not in Ara
    _progress: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for imp in importer.imports_for(self.paths, self.cfg.spool_dir, watch=self.follow):
            self._add(imp)  # an unsafe run id named on the command line is the caller's error
        if self.follow:
            self._watched = importer.watched_dirs(self.paths)

    @property
    def watching(self) -> bool:
        return bool(self._watched)

    def _add(self, imp: importer.RunImport) -> None:
        self._known.add(imp.artifact_dir.resolve())
        self.imports.append(imp)
        self._unshipped.add(imp.run_id)  # an earlier --no-ship import may have left its spool unshipped
        self._progress[imp.run_id] = time.monotonic()

    def discover(self) -> None:
        """Runs that appeared under the watched dirs since the last look."""
        for root in self._watched:
            for path in importer.runs_under(root):
                if path.resolve() in self._known:
                    continue
                imp = importer.run_import(path, self.cfg.spool_dir)
                try:
                    check_run_id(imp.run_id)
                except UnsafeRunId as exc:
                    self._known.add(path.resolve())
                    if self.warn is not None:
                        self.warn(f"{path}: not imported: {exc}")
                    continue
                self._add(imp)

    def _step(self, imp: importer.RunImport) -> None:
        written = imp.step()
        now = time.monotonic()
        if written:
            self._progress[imp.run_id] = now
            self._unshipped.add(imp.run_id)
        elif self.follow and self.stall is not None and not imp.done and now - self._progress[imp.run_id] > self.stall:
            # Its ansible-runner was killed (the status file says running forever), or it hangs.
            imp.done = imp.stalled = True
        if imp.done:
            imp.translator = None  # a long follow keeps no ended run's state
        if self.report is not None:
            self.report(imp, written)

    async def _flush(self, run_ids: list[str]) -> list[Outcome]:
        from ara_spool.flusher import oneshot

        stop = asyncio.Event()

        async def relay() -> None:  # our handler stays installed: pass its flag on to the shippers
            while not self.stopper.stopped:
                await asyncio.sleep(0.1)
            stop.set()

        relay_task = asyncio.create_task(relay())
        try:
            return await oneshot.flush(self.cfg, run_ids, timeout=self.timeout, stop=stop)
        finally:
            relay_task.cancel()

    def _ship(self) -> bool:
        """Ship the runs with new lines; False when a run cannot be shipped (auth, not Ara) or a
        signal stopped it."""
        for o in asyncio.run(self._flush(sorted(self._unshipped))):
            self.outcomes[o.run_id] = o
            if o.status == "done":
                self._unshipped.discard(o.run_id)
            if o.status in FATAL or o.status == "stopped":
                return False
        return True

    def _sleep(self) -> None:
        deadline = time.monotonic() + self.poll
        while not self.stopper.stopped and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def run(self) -> list[Outcome]:
        """Import and ship until done (see the module's docstring); the outcome of each run's last ship."""
        with stop_on_signals(self.stopper):
            while self._pass() and self.follow and not self.stopper.stopped:
                if not self.watching and all(i.done for i in self.imports):
                    break
                self._sleep()
                if not self.stopper.stopped:
                    self.discover()
        return list(self.outcomes.values())

    def _pass(self) -> bool:
        for imp in self.imports:
            if self.stopper.stopped:
                return False
            if not imp.done:
                self._step(imp)
        if self.ship and self._unshipped:
            return self._ship()
        return True
