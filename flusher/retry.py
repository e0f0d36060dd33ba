"""How one run's requests are retried and stopped: backoff on transient errors until the run's
deadline, a stop's grace, and each kind of failure turned into the run's Stop (flusher/recovery.py).

Kept apart from the shipper, which decides what to send; this decides how long to keep trying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import backoff
from ara_spool.flusher.client import AuthError, ServerError, StaleIdError, TransientError
from ara_spool.flusher.recovery import Stop

log = logging.getLogger("ara_spool.shipper")

T = TypeVar("T")
# A stop lets the request in flight finish for this long (a working Ara answers in milliseconds:
# the checkpoint then stays clean); a request still hanging after it is cancelled.
STOP_GRACE_SECONDS = 0.5


class Retrier:
    """Runs a run's requests. `remaining()`: seconds left before giving up for lack of progress
    (None: no limit); `on_retry(exc)`: told of each failure that will be retried (the run records
    it where status and followers see it); `quiet`: only the first retry of an outage is a
    WARNING unless this is a one-shot that sums up at its end."""

    def __init__(self, run_id: str, stop: asyncio.Event, max_backoff: float,
                 remaining: Callable[[], float | None], on_retry: Callable[[Exception], None],
                 quiet: bool = False) -> None:
        self.run_id = run_id
        self.stop = stop
        self.max_backoff = max_backoff
        self.remaining = remaining
        self.on_retry = on_retry
        self.quiet = quiet
        self._with_retries: Callable[..., Awaitable[Any]] | None = None
        self._stop_waiter: asyncio.Future[Any] | None = None
        self._cut_later: asyncio.TimerHandle | None = None
        # Tasks awaiting a request (with its retries), and those the stop's grace cut short.
        self._requesting: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()

    def past_deadline(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0.001

    def close(self) -> None:
        """The run is over: drop the stop watcher and a pending cut."""
        if self._stop_waiter is not None:
            self._stop_waiter.cancel()
        if self._cut_later is not None:
            self._cut_later.cancel()

    async def __call__(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """attempt(), retried with backoff on transient errors. A stop gives what is in flight, or
        queued in a lane before the stop, STOP_GRACE_SECONDS after the stop to finish; then it is
        cancelled. Nothing new starts after a stop."""
        if self.stop.is_set():
            raise Stop("stopped", "stopped")
        if self._with_retries is None:  # decorated once: per call it would cost ~0.1 ms of CPU
            self._with_retries = backoff.on_exception(
                backoff.expo, TransientError, max_time=self.remaining, max_value=self.max_backoff,
                jitter=backoff.full_jitter, giveup=self._give_up, on_backoff=self._on_backoff, logger=None,
            )(self._retried)
        if self._stop_waiter is None:
            # One watcher for the run, not a task and a wait per request (~30 us of CPU each).
            self._stop_waiter = asyncio.ensure_future(self.stop.wait())
            self._stop_waiter.add_done_callback(self._on_stop)
        task = asyncio.current_task()
        assert task is not None
        self._requesting.add(task)
        try:
            try:
                return await attempt()  # most requests succeed at once: no retry machinery for them
            except TransientError as exc:
                if self._give_up(exc):
                    raise
                return await self._with_retries(attempt, [exc])
        except asyncio.CancelledError:
            if task in self._cut and task.uncancel() == 0:  # cut by the grace alone, not abandoned
                raise Stop("stopped", "stopped") from None
            raise
        except TransientError as exc:
            if self.stop.is_set():
                raise Stop("stopped", "stopped") from None
            raise Stop("unreachable", str(exc)) from None
        except StaleIdError as exc:
            raise Stop("stale", str(exc)) from None
        except AuthError as exc:
            raise Stop("auth", str(exc)) from None
        except ServerError as exc:
            raise Stop("server", str(exc)) from None
        finally:
            self._requesting.discard(task)
            self._cut.discard(task)

    @staticmethod
    async def _retried(attempt: Callable[[], Awaitable[T]], failed: list[Exception]) -> T:
        if failed:  # backoff's first try is the attempt that already failed: it waits, then retries
            raise failed.pop()
        return await attempt()

    def _give_up(self, _exc: Exception) -> bool:
        return self.stop.is_set() or self.past_deadline()

    def _on_backoff(self, details: dict[str, Any]) -> None:
        exc = details.get("exception")
        assert isinstance(exc, Exception)
        self.on_retry(exc)
        first = details["tries"] == 1 and not self.quiet
        log.log(logging.WARNING if first else logging.INFO, "run %s: %s; retry %d in %.1fs",
                self.run_id, exc, details["tries"], details["wait"])

    def _on_stop(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.cancelled():
            self._cut_later = asyncio.get_running_loop().call_later(STOP_GRACE_SECONDS, self._cut_requests)

    def _cut_requests(self) -> None:
        """The stop's grace is over: cancel every request still in flight or waiting to retry."""
        for task in list(self._requesting):
            self._cut.add(task)
            task.cancel()
