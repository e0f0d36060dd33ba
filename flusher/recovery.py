"""A run's identity at its Ara, and the read-back pass: the shipper's recovery from faults that
may mean another database or a late commit (see flusher/identity.py and flusher/readback.py).

`Recovery` works for one RunShipper (flusher/shipper.py), through its requests (retried, stopped
and counted there) and its checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ara_spool.flusher import identity, readback
from ara_spool.flusher.client import StaleIdError
from ara_spool.flusher.ids import AraIds
from ara_spool.flusher.ledger import Ledger
from ara_spool.flusher.mapping import Hints, plan
from ara_spool.flusher.reconcile import Reconciler
from ara_spool.spool import quarantine
from ara_spool.spool.reader import Line, aread_lines, read_lines

if TYPE_CHECKING:
    from ara_spool.flusher.shipper import RunShipper

log = logging.getLogger("ara_spool.shipper")

# After an ambiguous failure the read-back waits this many API timeouts (at most LATE_MAX seconds)
# after it: a create Ara still held then (a late commit) has landed, and its double is seen.
LATE_TIMEOUTS = 2
LATE_MAX = 60.0
# Re-establishing the run's identity this many times in a row without shipping a line in between
# stops the run (exit 7, spool kept): Ara keeps refusing an id it just confirmed.
MAX_RESTARTS = 3


class Stop(Exception):
    """How shipping a run stops (Outcome.status), or restarts ("stale", "refault")."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Recovery:
    """Restarts after a fault that may mean another database, checks the run's identity, and
    reads the run back; for one RunShipper, through its requests and its checkpoint."""

    def __init__(self, shipper: RunShipper) -> None:
        self.s = shipper
        self.ambiguous_at: float | None = None  # when a create's outcome was last left unknown
        self.report: readback.Report | None = None  # the last read-back pass's findings

    async def ship(self) -> None:
        """First contact, then the spool; a fault that may mean another database (a stale id, an
        outage) stops every write and starts again from the low-water mark once the run's
        identity is established again."""
        s = self.s
        restarts, shipped_at = 0, -1
        await self.first_contact()
        while True:
            try:
                await s._loop()
                await self.confirm()
                return
            except Stop as stop:
                if stop.status not in ("stale", "refault"):
                    raise
                if stop.status == "stale":  # an outage is bounded by the timeout; a stale id by this
                    restarts = restarts + 1 if s._shipped == shipped_at else 1
                    shipped_at = s._shipped
                    if restarts > MAX_RESTARTS:
                        raise Stop("server", stop.message) from None
                log.warning("run %s: %s: no Ara id of the run is trusted until its identity is checked again",
                            s.paths.run_id, stop.message)
                await s._restart()
                await self.first_contact(parents=True)

    async def first_contact(self, parents: bool = False) -> None:
        """The URL is Ara's API, and the ids this checkpoint holds are this run's there: its
        playbook carries the run's label (each pass: one GET), and after any fault each cached
        parent id is a row of that playbook."""
        s = self.s
        await s._retrying(s.client.check_server)
        pb = s.ids.playbook
        if pb is None:
            return
        key = (s.paths.run_id, pb)
        faults = s.client.faults
        parents = parents or s.client.checked_playbooks.get(key) != faults

        async def why_not() -> str | None:  # a coroutine function: backoff retries it
            return await identity.check(s.client, s.paths.run_id, s.ids, parents=parents)

        why = await s._retrying(why_not)
        if why is None:
            s.client.checked_playbooks[key] = s.client.faults
            return
        st = s.state
        assert st is not None
        log.warning("run %s: %s at %s (a reset database, or another Ara): shipping the whole run there again",
                    st.run_id, why, s.config.display_server)
        st.offset = st.shipped = 0
        st.ended, st.final_status, st.sink, st.done_above = False, None, {}, []
        s.ledger = Ledger()
        s.ids = AraIds.bind(st)
        s.reconciler = Reconciler(st.run_id, fresh=True, until=s.paths.spool_size())

    async def confirm(self) -> None:
        """The read-back pass, when the run ended in this pass or a create's outcome is unknown:
        Ara's rows of the run against its spool; doubles deleted, missing lines shipped again."""
        s = self.s
        st = s.state
        assert st is not None
        if s.ids.playbook is None or not (s.ids.unconfirmed or (st.ended and s._shipped)):
            return
        if self.ambiguous_at is not None:
            grace = min(LATE_MAX, LATE_TIMEOUTS * s.config.timeout)
            wait = self.ambiguous_at + grace - time.monotonic()
            if wait > 0:
                log.info("run %s: waiting %.1fs for a late commit before reading the run back", st.run_id, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.stop.wait(), wait)
                if s.stop.is_set():
                    raise Stop("stopped", "stopped")
        skip = {rec["offset"] for rec in quarantine.records(s.paths) if isinstance(rec.get("offset"), int)}
        wants = readback.expected(
            (ln for ln in read_lines(s.paths.spool, 0) if ln.end <= st.offset), skip)
        pb = s.ids.playbook

        async def read() -> readback.Report:  # a coroutine function: backoff retries it
            return await readback.read_back(s.client, pb, wants, s.ids)

        t0 = time.monotonic()
        await self._one_playbook(pb)
        report = await s._retrying(read)
        s._requests += report.requests
        diff = report.diff
        s.reconciler = Reconciler(st.run_id)  # what the read-back found missing is not in Ara
        for offset in diff.missing:
            [line] = [ln async for ln in aread_lines(s.paths.spool, offset, 1)]
            await self._reship(line)
        self.report = report
        log.log(logging.WARNING if diff.missing or diff.doubles else logging.INFO,
                "run %s: read back %d results of playbook %d in %d requests (%.2fs): %d missing shipped "
                "again, %d doubles deleted%s", st.run_id, diff.rows, pb, report.requests, time.monotonic() - t0,
                len(diff.missing), report.deleted,
                f", {diff.out_of_order} out of their host's order" if diff.out_of_order else "")
        s.ids.unconfirmed = False
        s._save()

    async def _one_playbook(self, pb: int) -> None:
        """Two flushers that shipped one run at once (copies of its spool) may each have made a
        playbook: the lowest id is kept, the others are deleted (their flusher finds its ids gone
        and ships into the kept one, looking up each create). If ours is not the lowest, this
        flusher does that itself."""
        s = self.s

        async def labelled() -> list[int]:
            return [p["id"] for p in await identity.run_playbooks(s.client, s.paths.run_id)]

        found = await s._retrying(labelled)
        keep = min([pb, *found])
        s._requests += 1
        for other in found:
            if other == keep:
                continue
            log.warning("run %s: playbooks %d and %d both carry this run's label (two flushers shipped it at "
                        "once): keeping %d, deleting %d", s.paths.run_id, keep, other, keep, other)

            async def delete(other: int = other) -> None:
                with contextlib.suppress(StaleIdError):  # already deleted by the other flusher
                    await s.client.request("DELETE", f"/api/v1/playbooks/{other}")

            await s._retrying(delete)
            s._requests += 1
        if keep != pb:
            raise Stop("stale", f"playbook {pb} was deleted for playbook {keep}")

    async def _reship(self, line: Line) -> None:
        """A line the read-back found missing in Ara: its calls, sent again."""
        s = self.s
        assert line.event is not None
        gen = plan(line.event, s.ids, Hints())
        try:
            call = next(gen)
            while True:
                call = gen.send(await s._execute(call, line.offset))
        except StopIteration:
            pass

    def unknown_outcome(self) -> None:
        """A create's outcome is unknown: the run is not done until a read-back confirms it."""
        s = self.s
        self.ambiguous_at = time.monotonic()
        if not s.ids.unconfirmed:
            s.ids.unconfirmed = True
            s._save(durable=False)
