"""Ship one run's spool to Ara: strictly in spool order, exactly once, resumable after any crash.

Exactly once, without help from Ara (it has no idempotency key):
- The checkpoint (spool/state.py) holds the spool offset and every Ara id created so far; it is
  saved durably every `checkpoint_every` events or `checkpoint_seconds`, and on every exit.
- While a flusher works, the state says `clean: false`. A flusher that finds it so (the last one
  died) starts in *reconcile* mode: before each create after the checkpoint, it looks the row up in
  Ara (plays and tasks by uuid; results by task, host, start instant and an id above the highest
  result it knows). Shipping is sequential, so what the dead flusher did is a prefix of the tail:
  the first create not found in Ara ends reconcile mode, and from there creates go straight out.
- A create whose response was lost (timeout, reset, 5xx) is looked up the same way before it is
  sent again. Hosts and files are get-or-create in Ara, PATCHes are idempotent: both are replayed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import backoff
from ara_spool.flusher.client import AraClient, AraError, AuthError, PermanentError, TransientError
from ara_spool.flusher.config import Config
from ara_spool.flusher.mapping import Call, Hints, plan
from ara_spool.spool import quarantine, writer
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.reader import Line, aread_lines
from ara_spool.spool.schema import now_iso

log = logging.getLogger("ara_spool.shipper")

BATCH_LINES = 500


@dataclass
class Outcome:
    """How shipping one run ended."""

    run_id: str
    status: str  # done | unreachable | auth | busy | stopped | error
    shipped: int = 0  # events shipped by this call
    quarantined: int = 0  # lines quarantined by this call
    message: str | None = None
    playbook: int | None = None


class _Stop(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RunShipper:
    """Ships one run. `until_end`: keep following the spool until its run_end is shipped."""

    def __init__(
        self,
        paths: RunPaths,
        client: AraClient,
        config: Config,
        *,
        deadline: float | None = None,
        until_end: bool = False,
        stop: asyncio.Event | None = None,
        poll: float = 0.05,
        parent_pid: int | None = None,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.paths = paths
        self.client = client
        self.config = config
        self.deadline = deadline  # time.monotonic() by which a one-shot gives up
        self.until_end = until_end
        self.stop = stop or asyncio.Event()
        self.poll = poll
        self.parent_pid = parent_pid  # following a run for this process: stop when it is gone
        self.on_progress = on_progress
        self.state: state_mod.RunState | None = None
        self.reconciling = False
        self.uncertain = False  # a create may have reached Ara without us knowing its id
        self._shipped = 0
        self._quarantined = 0
        self._since_ckpt = 0
        self._last_ckpt = time.monotonic()
        self._requests = 0  # HTTP requests this shipper made (the client is shared by many runs)
        self._requests_saved = 0
        self._held: dict[int, float] = {}  # offset of a held task_start -> when first held
        self._ended_for_parent = False

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> Outcome:
        # OSError here and below: a run file refused (symlink, foreign owner, writable by others)
        # or the disk is full. That run stops with a clear error; the other runs go on.
        try:
            lock = try_lock(self.paths)
        except OSError as exc:
            return Outcome(self.paths.run_id, "error", message=str(exc))
        if lock is None:
            return Outcome(self.paths.run_id, "busy", message="another flusher is shipping this run")
        with lock:
            try:
                self.state = state_mod.load(self.paths)
            except (ValueError, OSError) as exc:
                return Outcome(self.paths.run_id, "error", message=str(exc))
            st = self.state
            self.reconciling = not st.clean
            if self.reconciling:
                log.info("run %s: last flusher did not stop cleanly; reconciling from offset %d",
                         st.run_id, st.offset)
            st.clean = False
            try:
                state_mod.save(self.paths, st)
            except OSError as exc:
                return Outcome(self.paths.run_id, "error", message=f"cannot save the run's state: {exc}")
            outcome: Outcome
            try:
                await self._loop()
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
                st.clean = not self.uncertain
                st.requests += self._requests - self._requests_saved
                self._requests_saved = self._requests
                st.updated = now_iso()
                try:
                    state_mod.save(self.paths, st)
                except OSError as exc:
                    # The last durable checkpoint says clean=false: the next flusher reconciles.
                    log.error("run %s: cannot save the run's state: %s", st.run_id, exc)
                    save_error: OSError | None = exc
                else:
                    save_error = None
            if save_error is not None and outcome.status == "done":
                outcome = Outcome(st.run_id, "error", message=f"cannot save the run's state: {save_error}")
            outcome.shipped, outcome.quarantined = self._shipped, self._quarantined
            outcome.playbook = st.ids.playbook
            return outcome

    async def _loop(self) -> None:
        st = self.state
        assert st is not None
        while True:
            if self.stop.is_set():
                raise _Stop("stopped", "stopped")
            lines = [line async for line in aread_lines(self.paths.spool, st.offset, BATCH_LINES)]
            if self.until_end and len(lines) < BATCH_LINES:
                lines = lines[: self._hold_point(lines)]
            if not lines:
                if self.until_end and not st.ended and self._orphaned() and not self._ended_for_parent:
                    # The run's ansible-playbook died (SIGKILL) without a run_end: record that it
                    # ended, as Ara's "expired", so the playbook does not stay "running" forever.
                    self._ended_for_parent = True
                    writer.append(st.run_id, "run_end", {"status": "expired"}, spool_dir=self.paths.spool_dir)
                    log.warning("run %s: its ansible-playbook (pid %s) is gone without ending the run; "
                                "recorded the run as expired", st.run_id, self.parent_pid)
                    continue
                if self.until_end and not st.ended and not self._orphaned():
                    if self._past_deadline():
                        raise _Stop("unreachable", "timed out waiting for the run to end")
                    self._checkpoint(force=self._since_ckpt > 0)
                    try:
                        await asyncio.wait_for(self.stop.wait(), self.poll)
                    except TimeoutError:
                        pass
                    continue
                return
            hints = Hints({
                ln.event["task"]["uuid"]: ln.event
                for ln in lines if ln.event is not None and ln.event["kind"] == "task_end"
            })
            for line in lines:
                if self.stop.is_set():
                    raise _Stop("stopped", "stopped")
                await self._handle(line, hints)
                st.offset = line.end
                self._since_ckpt += 1
                self._checkpoint()

    def _hold_point(self, lines: list[Line]) -> int:
        """Following a live run: stop before a task whose end is not spooled yet, for at most
        `task_hold_seconds`, so that the task is created finished (one request) instead of created
        and then PATCHed (two). A one-shot waiting for this run (an ara_flush checkpoint) touches
        the lock file: then nothing is held."""
        hold = self.config.task_hold_seconds
        if hold <= 0:
            return len(lines)
        ended = {ln.event["task"]["uuid"] for ln in lines if ln.event is not None and ln.event["kind"] == "task_end"}
        for i, line in enumerate(lines):
            ev = line.event
            if ev is None or ev["kind"] != "task_start" or ev["task"]["uuid"] in ended:
                continue
            now = time.time()
            since = self._held.setdefault(line.offset, now)
            try:
                nudged = os.stat(self.paths.lock).st_mtime >= since
            except OSError:
                nudged = True
            if now - since < hold and not nudged and not self._orphaned() and not self.stop.is_set():
                return i
            break
        return len(lines)

    def _orphaned(self) -> bool:
        # The run's ansible-playbook died without a run_end (SIGKILL): ship what is there, then
        # stop following; the run's end never comes.
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _checkpoint(self, force: bool = False) -> None:
        st = self.state
        assert st is not None
        now = time.monotonic()
        if force or self._since_ckpt >= self.config.checkpoint_every or (
            self._since_ckpt and now - self._last_ckpt >= self.config.checkpoint_seconds
        ):
            st.requests += self._requests - self._requests_saved
            self._requests_saved = self._requests
            st.updated = now_iso()
            state_mod.save(self.paths, st)
            self._since_ckpt = 0
            self._last_ckpt = now

    # -- one line ---------------------------------------------------------------------------
    async def _handle(self, line: Line, hints: Hints) -> None:
        st = self.state
        assert st is not None
        if line.event is None:
            self._quarantine(line, line.error or "bad line")
            return
        event = line.event
        if event["run"] != st.run_id:
            self._quarantine(line, f"event of run {event['run']!r} in the spool of run {st.run_id!r}")
            return
        gen = plan(event, st.ids, hints)
        try:
            call = next(gen)
            while True:
                response = await self._execute(call)
                call = gen.send(response)
        except StopIteration:
            pass
        except PermanentError as exc:
            self._quarantine(line, f"Ara refused it: {exc}")
            return
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            # ArithmeticError: e.g. a duration of 1e400 or one that reaches before year 1.
            self._quarantine(line, f"cannot map event to Ara: {type(exc).__name__}: {exc}")
            return
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

    def _quarantine(self, line: Line, reason: str) -> None:
        st = self.state
        assert st is not None
        quarantine.reject(self.paths, line.offset, line.raw, reason)
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

    # -- one call, with retries -------------------------------------------------------------
    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.001, self.deadline - time.monotonic())

    def _on_backoff(self, details: dict[str, Any]) -> None:
        exc = details.get("exception")
        self._record_error(str(exc))
        if self.state is not None:
            # Let status, checkpoints and waiting one-shots see the trouble while we retry.
            state_mod.save(self.paths, self.state, durable=False)
        log.warning("run %s: %s; retry %d in %.1fs", self.paths.run_id, exc, details["tries"], details["wait"])

    async def _execute(self, call: Call) -> dict[str, Any]:
        ambiguous = False

        @backoff.on_exception(
            backoff.expo,
            TransientError,
            max_time=self._remaining,
            max_value=self.config.max_backoff,
            jitter=backoff.full_jitter,
            giveup=lambda _exc: self.stop.is_set(),
            on_backoff=self._on_backoff,
            logger=None,
        )
        async def attempt() -> dict[str, Any]:
            nonlocal ambiguous
            if call.lookup is not None and (call.lookup_first or ambiguous or self.reconciling):
                self._requests += 1
                found = await self.client.find(call.lookup)
                if found is not None:
                    self.uncertain = False
                    return found
                if self.reconciling and not call.lookup_first:
                    # Shipping is sequential: the dead flusher got no further than this.
                    self.reconciling = False
                    log.info("run %s: reconciled; resuming normal shipping", self.paths.run_id)
            self.uncertain = call.creates
            try:
                self._requests += 1
                response = await self.client.request(call.method, call.path, call.body)
            except TransientError as exc:
                ambiguous = ambiguous or exc.ambiguous
                self.uncertain = call.creates and ambiguous
                raise
            except AraError:
                self.uncertain = False
                raise
            self.uncertain = False
            if self.state is not None and self.state.last_error:
                # Ara answers again: followers and waiting checkpoints must not see a stale error.
                self.state.last_error = self.state.first_error_at = None
                state_mod.save(self.paths, self.state, durable=False)
            return response

        try:
            return await attempt()
        except TransientError as exc:
            if self.stop.is_set():
                raise _Stop("stopped", "stopped") from None
            raise _Stop("unreachable", str(exc)) from None
        except AuthError as exc:
            raise _Stop("auth", str(exc)) from None
