"""A full spool disk is a pause, not an error: what a flusher does when a write is refused for lack
of space (ENOSPC, EDQUOT). It says so once, waits, retries, and says so again once space is back
(the first warning went to a log on that same full disk, and may be lost)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable

log = logging.getLogger("ara_spool.shipper")

# A write refused for lack of space is retried this often.
RETRY_SECONDS = 1.0
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


class DiskPause:
    """One run's view of its spool disk: full since when, and why."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.since: float | None = None
        self.why = ""

    def note(self, exc: OSError, what: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.why = f"{what}: {exc.strerror or exc}"
            log.warning("run %s: spool disk full (%s: %s): paused writes, retrying every %.0fs until space frees",
                        self.run_id, what, exc.strerror or exc, RETRY_SECONDS)

    def back(self) -> None:
        if self.since is not None:
            log.warning("run %s: spool disk full for %.0fs (%s), paused until now; it has space again: going on",
                        self.run_id, time.monotonic() - self.since, self.why)
            self.since = None

    async def wait(self, exc: OSError, what: str, stop: asyncio.Event, past_deadline: Callable[[], bool]) -> None:
        """Wait RETRY_SECONDS (or a stop) after a write refused for lack of space; past the
        deadline or after a stop, the error is raised."""
        self.note(exc, what)
        if stop.is_set() or past_deadline():
            raise exc
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
