"""Ship one run's spool to one Ara: in spool order per host, exactly once, resumable after any crash.

- The checkpoint (spool/state.py) is kept per destination (the normalised API URL): its offset and
  every Ara id created there. It is saved durably every `checkpoint_every` events or
  `checkpoint_seconds`, and on every exit; while a flusher works it says `clean: false`.
- No Ara id is trusted across a fault (flusher/recovery.py): each pass checks that the playbook
  the checkpoint names carries the run's label; a stale id (400 "Invalid pk", a 404 on a row of
  the run) or the first write after a failed request stops every write, and the run goes on from
  the low-water mark once its ids are checked again (or is shipped again, whole, if they are not
  its own: a reset database reuses ids). The window's bookkeeping is flusher/ledger.py.
- A read-back pass (flusher/readback.py) ends each run, and follows any create whose outcome is
  unknown: doubles a late commit made are deleted, missing lines shipped again.
- When a create may already be in Ara (a dead flusher, no checkpoint for this Ara, a lost
  response) it is looked up before it is sent: flusher/reconcile.py holds that policy.
- Errors: a transient one (down, timeout, 5xx) is retried with backoff until `timeout` seconds pass
  without progress; a wrong server (not Ara, 404/405, a redirect) or refused auth stops the run
  and keeps every event; only what a working Ara refused for the event's own content is
  quarantined. A stop (SIGTERM) cancels the request in flight and saves the checkpoint at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ara_spool.flusher.client import AraClient, AraError, PermanentError, ServerError, TransientError
from ara_spool.flusher.config import Config
from ara_spool.flusher.diskpause import DiskPause, disk_full
from ara_spool.flusher.ids import AraIds
from ara_spool.flusher.ledger import Entry, Ledger
from ara_spool.flusher.mapping import Call, Hints, host_stats_plans, plan
from ara_spool.flusher.reconcile import Reconciler, find
from ara_spool.flusher.recovery import Recovery
from ara_spool.flusher.recovery import Stop as _Stop
from ara_spool.flusher.retry import Retrier
from ara_spool.flusher.taskhold import hold_point
from ara_spool.spool import quarantine, writer
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.reader import Line, aread_lines
from ara_spool.spool.schema import now_iso

log = logging.getLogger("ara_spool.shipper")

BATCH_LINES = 500
# While a checkpoint waits on this run (it touches the lock file), progress is saved this often.
WATCHED_SAVE_SECONDS = 0.2
# Lines a window may read ahead of the oldest unanswered one, per request it may have in flight: the
# dispatcher creates the next tasks' rows while the lanes still ship the last ones' results.
READ_AHEAD = 4


API = "/api/v1"
RESULTS = f"{API}/results"
HOSTS = f"{API}/hosts"
HOST_PATHS = (HOSTS, RESULTS)  # a result's own calls: its host (get-or-create) and itself
# What a malformed but valid-looking event raises while it is mapped. ArithmeticError: e.g. a
# duration of 1e400, or one that reaches before year 1.
MAPPING_ERRORS: tuple[type[Exception], ...] = (KeyError, TypeError, ValueError, ArithmeticError)
LANED = ("result", "event")  # events that ship in their host's lane when the window is > 1


def _lane_of(event: dict[str, Any]) -> str:
    body = event["result"] if event["kind"] == "result" else event["event"]
    return str(body["host"])


@dataclass
class Outcome:
    """How shipping one run ended."""

    run_id: str
    # done | unreachable (down, timed out) | server (not a working Ara there) | auth | busy
    # | stopped (SIGTERM/SIGINT) | error (local: files, disk) | retry (the holder let go: try again)
    status: str
    shipped: int = 0  # events shipped by this call
    quarantined: int = 0  # lines quarantined by this call
    message: str | None = None
    playbook: int | None = None
    destination: str | None = None


class RunShipper:
    """Ships one run. `until_end`: keep following the spool until its run_end is shipped.
    `timeout`: give up after this many seconds without progress (None: never); a follower whose
    ansible-playbook still runs never gives up, one left behind by it (detached) does."""

    def __init__(
        self,
        paths: RunPaths,
        client: AraClient,
        config: Config,
        *,
        timeout: float | None = None,
        until_end: bool = False,
        stop: asyncio.Event | None = None,
        poll: float = 0.05,
        parent_pid: int | None = None,
        on_progress: Callable[[str, int], None] | None = None,
        quiet_retries: bool = False,
    ) -> None:
        self.paths = paths
        self.client = client
        self.config = config
        self.timeout = timeout or None
        self.until_end = until_end
        self.stop = stop or asyncio.Event()
        self.poll = poll
        self.parent_pid = parent_pid  # following a run for this process: stop when it is gone
        self.on_progress = on_progress
        self.state: state_mod.RunState | None = None
        self.ids = AraIds()
        self.reconciler = Reconciler(paths.run_id)
        self._shipped = 0
        self._quarantined = 0
        self._since_ckpt = 0
        self._last_ckpt = time.monotonic()
        self._last_progress = time.monotonic()
        self._answer_saved = 0.0  # when an answer alone last saved the checkpoint for a waiter
        self._orphaned_at: float | None = None
        self._requests = 0  # HTTP requests this shipper made (the client is shared by many runs)
        self._requests_saved = 0
        self._held: dict[int, float] = {}  # offset of a held task_start -> when first held
        self._ended_for_parent = False
        # A one-shot sums up how it ended in one line; a daemon or follower logs an outage as it
        # begins (each further retry only with -v).
        self._retrying = Retrier(paths.run_id, self.stop, config.max_backoff, self._remaining, self._on_retry,
                                 quiet=quiet_retries)
        # The window (window > 1): lines in flight in spool order, lanes by host, a stop from a lane.
        self.window = max(1, config.window)
        self.ledger = Ledger()  # lines in flight, the low-water mark, the result-id floor
        self._slots = asyncio.Semaphore(self.window)  # requests in flight
        self._ahead = asyncio.Semaphore(READ_AHEAD * self.window)  # lines handed to lanes, unanswered
        self._lanes: dict[str, asyncio.Future[None]] = {}
        self._running: set[asyncio.Future[None]] = set()
        self._halt: _Stop | None = None
        self._shipping = False  # mid-run: a checkpoint refused for lack of space is deferred
        self.disk = DiskPause(paths.run_id)
        self.recovery = Recovery(self)  # the run's identity at this Ara, and the read-back

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> Outcome:
        # OSError here and below: a run file refused (symlink, foreign owner, writable by others)
        # or the disk is full. That run stops with a clear error; the other runs go on.
        dest = self.config.destination
        try:
            lock = try_lock(self.paths)
        except OSError as exc:
            return Outcome(self.paths.run_id, "error", message=str(exc), destination=dest)
        if lock is None:
            return Outcome(self.paths.run_id, "busy", message="another flusher is shipping this run",
                           destination=dest)
        with lock:
            try:
                self.state = self._load(dest)
            except OSError as exc:
                return Outcome(self.paths.run_id, "error", message=str(exc), destination=dest)
            st = self.state
            fresh = st.fresh
            self.ids = AraIds.bind(st)
            self.ledger = Ledger(st.offset, st.done_above)  # done_above: shipped by an earlier flusher
            self.reconciler = Reconciler(st.run_id, after_crash=not st.clean, fresh=fresh,
                                         until=self.paths.spool_size(), floor=self.ids.last_result)
            if not st.clean:
                log.info("run %s: last flusher did not stop cleanly; reconciling from offset %d",
                         st.run_id, st.offset)
            st.clean = False
            try:
                await self._save_when_space()  # a crash from here on must make the next flusher reconcile
            except OSError as exc:
                return Outcome(self.paths.run_id, "error", message=f"cannot save the run's state: {exc}",
                               destination=dest)
            outcome: Outcome
            self._shipping = True
            try:
                await self.recovery.ship()
                outcome = Outcome(st.run_id, "done")
                st.last_error = st.first_error_at = None
            except _Stop as stop:
                outcome = Outcome(st.run_id, stop.status, message=stop.message)
                if stop.status != "stopped":
                    self._record_error(stop.message)
            except OSError as exc:
                outcome = Outcome(st.run_id, "error", message=str(exc))
                self._record_error(str(exc))
            finally:
                self._shipping = False
                await self._abandon()
                self._retrying.close()
                # Lines done above the low-water mark are in the checkpoint (done_above); only a
                # create that may be in Ara unknown to us makes the next flusher reconcile.
                st.clean = not self.reconciler.uncertain
                st.requests += self._requests - self._requests_saved
                self._requests_saved = self._requests
                st.updated = now_iso()
                try:
                    await self._save_when_space()
                except OSError as exc:
                    # The last durable checkpoint says clean=false: the next flusher reconciles.
                    log.error("run %s: cannot save the run's state: %s", st.run_id, exc)
                    save_error: OSError | None = exc
                else:
                    save_error = None
            if save_error is not None and outcome.status == "done":
                outcome = Outcome(st.run_id, "error", message=f"cannot save the run's state: {save_error}")
            outcome.shipped, outcome.quarantined = self._shipped, self._quarantined
            outcome.playbook = self.ids.playbook
            outcome.destination = dest
            return outcome

    def _load(self, dest: str) -> state_mod.RunState:
        try:
            return state_mod.load(self.paths, dest)
        except state_mod.CorruptState as exc:
            moved = state_mod.set_aside(self.paths)
            log.warning("run %s: %s; moved it to %s and reconciling the whole run against Ara",
                        self.paths.run_id, exc, moved.name)
            return state_mod.RunState(self.paths.run_id, dest=dest)

    async def _restart(self) -> None:
        """Stop writing: cancel what is in flight, and go back to the low-water mark. The lines
        dispatched above it may be in Ara (each of their creates is looked up); those answered
        are skipped."""
        if self.reconciler.uncertain:
            self.recovery.unknown_outcome()
        await self._abandon()
        until, floor = self.ledger.rewind(self.ids.last_result)
        self._lanes.clear()
        self._running.clear()
        self._halt = None
        self._slots = asyncio.Semaphore(self.window)
        self._ahead = asyncio.Semaphore(READ_AHEAD * self.window)
        st = self.state
        assert st is not None
        self.reconciler = Reconciler(st.run_id, after_crash=True, until=until, floor=floor)

    async def _loop(self) -> None:
        st = self.state
        assert st is not None
        cursor = st.offset  # the next line to read: ahead of st.offset while a window is in flight
        while True:
            if self.stop.is_set():
                await self._settle()
                raise _Stop("stopped", "stopped")
            lines = [line async for line in aread_lines(self.paths.spool, cursor, BATCH_LINES)]
            if self.until_end and len(lines) < BATCH_LINES:
                lines = lines[: self._hold_point(lines)]
            if not lines:
                await self._settle()
                if self.until_end and not st.ended and self._orphaned() and not self._ended_for_parent:
                    # The run's ansible-playbook died (SIGKILL) without a run_end: record that it
                    # ended, as Ara's "expired", so the playbook does not stay "running" forever.
                    try:
                        writer.append(st.run_id, "run_end", {"status": "expired"}, spool_dir=self.paths.spool_dir)
                    except OSError as exc:
                        if not disk_full(exc):
                            raise
                        await self.disk.wait(exc, "cannot spool the run's end", self.stop, self._past_deadline)
                        continue
                    self._ended_for_parent = True
                    log.warning("run %s: its ansible-playbook (pid %s) is gone without ending the run; "
                                "recorded the run as expired", st.run_id, self.parent_pid)
                    continue
                if self.until_end and not st.ended and not self._orphaned():
                    self._checkpoint(force=self._since_ckpt > 0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), self.poll)
                    continue
                return
            hints = Hints()
            for ln in lines:  # a task's first end: the one it is created with (later ends PATCH it)
                if ln.event is not None and ln.event["kind"] == "task_end":
                    hints.task_ends.setdefault(ln.event["task"]["uuid"], ln.event)
            for line in lines:
                if self.stop.is_set():
                    await self._settle()
                    raise _Stop("stopped", "stopped")
                if self.ledger.skipped(line.offset):
                    self._passed(line)
                elif self.window > 1:
                    await self._dispatch(line, hints)
                else:
                    entry = self.ledger.open(line.offset, line.end, line)
                    await self._handle(line, hints)
                    self._complete(entry)
                cursor = line.end

    def _hold_point(self, lines: list[Line]) -> int:
        return hold_point(lines, self._held, self.config.task_hold_seconds, time.time(),
                          lambda since: self._watched_since() >= since or self._orphaned() or self.stop.is_set())

    def _watched_since(self) -> float:
        """When a checkpoint last touched the run's lock file to say it waits (epoch seconds)."""
        try:
            return os.stat(self.paths.lock).st_mtime
        except OSError:
            return time.time()

    def _orphaned(self) -> bool:
        # The run's ansible-playbook is gone (it ended, or died without a run_end): ship what is
        # there, then stop following.
        gone = self.parent_pid is not None and os.getppid() != self.parent_pid
        if gone and self._orphaned_at is None:
            self._orphaned_at = time.monotonic()
        return gone

    def _past_deadline(self) -> bool:
        return self._retrying.past_deadline()

    def _remaining(self) -> float | None:
        """Seconds left before giving up for lack of progress; None: no limit (yet)."""
        if self.timeout is None:
            return None
        if self.until_end and not self._orphaned():
            return None  # the play is still running: its flusher waits for Ara as long as it does
        since = max(self._last_progress, self._orphaned_at or 0.0)
        return max(0.001, self.timeout - (time.monotonic() - since))

    def _save(self, durable: bool = True) -> None:
        """Write the checkpoint. With a window, the result id it records (a later lookup's floor)
        is below every result that may be in Ara unknown to it: those in flight are reconciled
        after a crash, and a lookup only matches results above the floor."""
        st = self.state
        assert st is not None
        moving = self.ids.last_result
        # Lines done above the low-water mark: answered in this window, or by an earlier flusher
        # and not reached yet (dropping those would send them again).
        st.done_above = self.ledger.done_above()
        # The floor of a later lookup: ids follow commit order, not spool order, so a result in
        # flight may get a lower id than one answered since; each is above what was known when it
        # was sent.
        self.ids.last_result = self.ledger.floor(moving)
        try:
            state_mod.save(self.paths, st, durable=durable)
        except OSError as exc:
            if not disk_full(exc) or not self._shipping:
                raise
            # Mid-run, a full disk defers the checkpoint: the one on disk says clean=false, so a
            # crash now makes the next flusher reconcile. The run's last save waits for space.
            self.disk.note(exc, "cannot save the checkpoint")
        else:
            self.disk.back()
        finally:
            self.ids.last_result = moving

    async def _save_when_space(self) -> None:
        """A durable checkpoint that must land (the run's first and last): a full disk is waited out."""
        was, self._shipping = self._shipping, False
        try:
            while True:
                try:
                    self._save()
                    return
                except OSError as exc:
                    if not disk_full(exc):
                        raise
                    await self.disk.wait(exc, "cannot save the checkpoint", self.stop, self._past_deadline)
        finally:
            self._shipping = was

    def _checkpoint(self, force: bool = False) -> None:
        st = self.state
        assert st is not None
        now = time.monotonic()
        due = force or self._since_ckpt >= self.config.checkpoint_every or (
            self._since_ckpt and now - self._last_ckpt >= self.config.checkpoint_seconds)
        watched = not due and self._since_ckpt and now - self._last_ckpt >= WATCHED_SAVE_SECONDS \
            and time.time() - self._watched_since() < 1.0
        if due or watched:
            st.requests += self._requests - self._requests_saved
            self._requests_saved = self._requests
            st.updated = now_iso()
            # A waiting checkpoint sees progress at once; durability stays on the regular cadence.
            self._save(durable=bool(due))
            if due:
                self._since_ckpt = 0
            self._last_ckpt = now

    # -- one line ---------------------------------------------------------------------------
    async def _handle(self, line: Line, hints: Hints) -> None:
        st = self.state
        assert st is not None
        if line.event is None:
            await self._quarantine(line, line.error or "bad line")
            return
        event = line.event
        if event["run"] != st.run_id:
            await self._quarantine(line, f"event of run {event['run']!r} in the spool of run {st.run_id!r}")
            return
        gen = plan(event, self.ids, hints)
        try:
            call = next(gen)
            while True:
                response = await self._execute(call, line.offset)
                call = gen.send(response)
        except StopIteration:
            pass
        except (PermanentError, *MAPPING_ERRORS) as exc:
            await self._reject(line, exc)
            return
        self._count_shipped(event)

    def _count_shipped(self, event: dict[str, Any]) -> None:
        st = self.state
        assert st is not None
        st.shipped += 1
        self._shipped += 1
        if event["kind"] == "run_end":
            st.ended = True
            st.final_status = event["end"]["status"]
        elif event["kind"] == "run_start":  # a re-run with the same id: it has not ended yet
            st.ended = False
            st.final_status = None
        if self.on_progress:
            self.on_progress(st.run_id, 1)

    # -- a window of lines in flight (window > 1) ---------------------------------------------
    # Lines are read and planned in spool order by the loop (the dispatcher). A result's shared
    # parents (playbook, play, file, task) are created by the dispatcher itself, before the
    # result goes out: every task's and play's row precedes its results. The result (with its
    # host) then ships in its host's lane: one request in flight per host, a host's results in
    # spool order. At most `window` requests of the run are in flight (the dispatcher's own
    # included); a result queued behind its host's earlier one holds no slot, and the dispatcher
    # reads up to READ_AHEAD windows of lines ahead of the oldest unanswered. A PATCH (a task's,
    # play's, host's or the run's end) waits until every result in flight is answered. The
    # checkpoint's offset is the low-water mark: every line before it is answered; after a crash,
    # the lines above it are reconciled (flusher/reconcile.py looks up every create of them, not
    # only up to a miss).

    def _passed(self, line: Line) -> None:
        """A line an earlier flusher shipped above its low-water mark: done, nothing to send."""
        entry = self.ledger.open(line.offset, line.end, line)
        self._complete(entry)

    async def _dispatch(self, line: Line, hints: Hints) -> None:
        if self._halt is not None:
            await self._settle()
        st = self.state
        assert st is not None
        entry = self.ledger.open(line.offset, line.end, line)
        event = line.event
        if event is None or event["run"] != st.run_id:
            why = line.error or "bad line" if event is None else \
                f"event of run {event['run']!r} in the spool of run {st.run_id!r}"
            await self._quarantine(line, why)
            self._complete(entry)
            return
        if event["kind"] == "host_stats":
            await self._dispatch_host_stats(entry)
            return
        gen = plan(event, self.ids, hints)
        try:
            call = next(gen)
            while True:
                if event["kind"] in LANED and call.method == "POST" and call.path in HOST_PATHS:
                    await self._spawn(_lane_of(event), entry, gen, call, hints)
                    return
                if call.method == "PATCH":
                    await self._settle()
                async with self._slots:  # the dispatcher's own requests count in the window too
                    response = await self._execute(call, line.offset)
                call = gen.send(response)
        except StopIteration:
            self._count_shipped(event)
        except (PermanentError, *MAPPING_ERRORS) as exc:
            await self._reject(line, exc)
        self._complete(entry)

    async def _dispatch_host_stats(self, entry: Entry) -> None:
        """Each host's counters are independent: after every result is answered, they go out side
        by side, `window` at a time (one by one, a 200-host run spent 200 round trips here)."""
        await self._settle()
        event = entry.line.event
        assert event is not None

        async def one(host_plan: Any) -> None:
            async with self._slots:
                call = next(host_plan)
                try:
                    while True:
                        call = host_plan.send(await self._execute(call, entry.line.offset))
                except StopIteration:
                    pass

        try:
            results = await asyncio.gather(*(one(hp) for hp in host_stats_plans(event, self.ids)),
                                           return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
        except (PermanentError, *MAPPING_ERRORS, AttributeError) as exc:  # stats, or a host's counters, not an object
            await self._reject(entry.line, exc)
        else:
            self._count_shipped(event)
        self._complete(entry)

    async def _spawn(self, lane: str, entry: Entry, gen: Any, call: Call, hints: Hints) -> None:
        await self._ahead.acquire()  # the dispatcher waits while this many lines are in the lanes
        task = asyncio.ensure_future(self._lane(self._lanes.get(lane), entry, gen, call, hints))
        self._lanes[lane] = task
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _lane(self, before: asyncio.Future[None] | None, entry: Entry, gen: Any, call: Call,
                    hints: Hints) -> None:
        try:
            if before is not None and not before.done():  # this host's earlier result goes first
                turn = asyncio.get_running_loop().create_future()  # cheaper than asyncio.wait per line
                before.add_done_callback(lambda _: turn.done() or turn.set_result(None))
                await turn
            if self._halt is not None or self.stop.is_set():
                return  # nothing new starts after a stop: this line stays for the next flusher
            if call.path == HOSTS:
                # Planned while this host's first result was still in flight: now its row may exist.
                gen.close()
                assert entry.line.event is not None
                gen = plan(entry.line.event, self.ids, hints)
                call = next(gen)
            async with self._slots:  # the window: at most this many requests of the run in flight
                while True:
                    if call.path == RESULTS:
                        entry.sent_above = self.ids.last_result
                    response = await self._execute(call, entry.line.offset)
                    call = gen.send(response)
        except StopIteration:
            assert entry.line.event is not None
            self._count_shipped(entry.line.event)
            self._complete(entry)
        except (PermanentError, *MAPPING_ERRORS) as exc:
            await self._reject(entry.line, exc)
            self._complete(entry)
        except _Stop as stop:
            self._halt = self._halt or stop
        except OSError as exc:
            self._halt = self._halt or _Stop("error", str(exc))
        finally:
            self._ahead.release()

    async def _settle(self) -> None:
        """Wait until every line in flight is answered; a lane's stop becomes the run's."""
        while self._running:
            await asyncio.wait(set(self._running))
        if self._halt is not None:
            raise self._halt

    async def _abandon(self) -> None:
        """The run stops: cancel what is still in flight (its creates count as uncertain)."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _complete(self, entry: Entry) -> None:
        moved = self.ledger.done(entry)
        if moved:
            st = self.state
            assert st is not None
            st.offset = self.ledger.low_water
            self._since_ckpt += moved
        self._checkpoint()

    async def _reject(self, line: Line, exc: Exception) -> None:
        """A line Ara refused (PermanentError) or that cannot be mapped: quarantined, the run goes on."""
        if isinstance(exc, PermanentError):
            await self._quarantine(line, f"Ara refused it: {exc}")
        else:
            await self._quarantine(line, f"cannot map event to Ara: {type(exc).__name__}: {exc}")

    async def _quarantine(self, line: Line, reason: str) -> None:
        st = self.state
        assert st is not None
        while True:
            try:
                quarantine.reject(self.paths, line.offset, line.raw, reason, end=line.end)
                break
            except OSError as exc:
                if not disk_full(exc):
                    raise
                await self.disk.wait(exc, "cannot quarantine a line", self.stop, self._past_deadline)
        self.disk.back()
        st.quarantined += 1
        self._quarantined += 1
        log.warning("run %s: quarantined the line at offset %d: %s", st.run_id, line.offset, reason)
        if self.on_progress:
            self.on_progress(st.run_id, 1)

    def _record_error(self, message: str) -> None:
        st = self.state
        assert st is not None
        st.last_error = message
        st.last_error_at = now_iso()
        st.first_error_at = st.first_error_at or st.last_error_at

    # -- requests: retries, stop, progress ------------------------------------------------------
    def _on_retry(self, exc: Exception) -> None:
        self._record_error(str(exc))
        # Let status, followers and waiting checkpoints see the trouble while we retry.
        self._save(durable=False)

    def _answered(self) -> None:
        self._last_progress = now = time.monotonic()
        st = self.state
        if st is None:
            return
        st.answered += 1
        if st.last_error:
            # Ara answers again: followers and waiting checkpoints must not see a stale error.
            st.last_error = st.first_error_at = None
            self._save(durable=False)
        elif now - self._answer_saved >= WATCHED_SAVE_SECONDS:
            # Someone waits (the run's end): every answer is progress, also within one line of
            # hundreds of requests (a 200-host host_stats), so they see it (spool/progress.py).
            self._answer_saved = now  # the lock file is stat-ed at most this often
            if time.time() - self._watched_since() < 1.0:
                self._save(durable=False)

    async def _execute(self, call: Call, offset: int) -> dict[str, Any]:
        """One call of the line at `offset`: looked up first when it may be in Ara already."""
        rec = self.reconciler
        ambiguous = faulted = False

        async def attempt() -> dict[str, Any]:
            nonlocal ambiguous, faulted
            if faulted:
                # The first request after an outage: the server may have come back with another
                # database. Nothing is written until the run's ids are checked again.
                raise _Stop("refault", f"{call.method} {call.path} failed")
            if rec.look_first(call, ambiguous, offset):
                self._requests += 1
                found = await find(self.client, rec.lookup(call, offset))
                self._answered()
                if found is not None:
                    rec.found(call)
                    if ambiguous and call.creates:
                        rec.resolved()
                    return found
                rec.missed(call)
            rec.sending(call)
            try:
                self._requests += 1
                response = await self.client.request(call.method, call.path, call.body)
            except (TransientError, ServerError) as exc:
                rec.answered(call, stored_unknown=exc.ambiguous and not ambiguous)
                ambiguous = ambiguous or exc.ambiguous
                faulted = True
                if exc.ambiguous and call.creates:
                    self.recovery.unknown_outcome()
                raise
            except AraError:
                rec.answered(call)
                if ambiguous and call.creates:
                    rec.resolved()
                raise
            rec.answered(call)
            if ambiguous and call.creates:
                rec.resolved()
            self._answered()
            return response

        return await self._retrying(attempt)
