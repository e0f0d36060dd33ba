"""The window's bookkeeping, apart from the reading and the sending (as Vector keeps its ledger
apart from its reader and writer): which lines are answered, the low-water mark, and the result-id
floor a later lookup may trust. Pure: no I/O, no asyncio.

Lines are handed out in spool order and answered in any order. The low-water mark is the end of
the longest answered prefix: the checkpoint's offset. Lines answered above it are kept as
`done_above` (a next flusher skips them, they are not sent twice). A result create in flight was
sent when the highest result id known was `above`: Ara gives it a higher id, but ids follow
commit order, not spool order, so the floor a checkpoint records is the lowest such `above` of
the creates still unanswered.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class Entry:
    """A line handed out: its byte range, whether it is answered, the id floor of its result."""

    offset: int
    end: int
    line: Any = None  # the caller's own (the shipper's spool line)
    done: bool = False
    sent_above: int | None = None


class Ledger:
    def __init__(self, low_water: int = 0, done_above: list[int] | None = None) -> None:
        self.low_water = low_water
        self.skip: set[int] = set(done_above or ())  # answered by an earlier flusher, not reached yet
        self._lines: deque[Entry] = deque()

    def open(self, offset: int, end: int, line: Any = None) -> Entry:
        """A line is handed out (in spool order)."""
        entry = Entry(offset, end, line)
        self._lines.append(entry)
        return entry

    def skipped(self, offset: int) -> bool:
        """Whether the line at offset was answered by an earlier flusher (then it is passed)."""
        if offset in self.skip:
            self.skip.discard(offset)
            return True
        return False

    def done(self, entry: Entry) -> int:
        """A line is answered; returns how many lines the low-water mark passed."""
        entry.done = True
        moved = 0
        while self._lines and self._lines[0].done:
            self.low_water = self._lines.popleft().end
            moved += 1
        return moved

    @property
    def reach(self) -> int:
        """The end of the last line handed out (the low-water mark if none is in flight)."""
        return self._lines[-1].end if self._lines else self.low_water

    def done_above(self) -> list[int]:
        """Lines answered above the low-water mark: in this window, or by an earlier flusher."""
        return sorted({e.offset for e in self._lines if e.done} | self.skip)

    def floor(self, highest: int) -> int:
        """The result-id floor a checkpoint may record, `highest` being the highest id known."""
        return min([e.sent_above for e in self._lines if not e.done and e.sent_above is not None],
                   default=highest)

    def rewind(self, highest: int) -> tuple[int, int]:
        """Everything in flight is given up (a restart): answered lines become skipped ones, the
        low-water mark stays. Returns (reach, floor): lines before reach may be in Ara with a
        result id above floor."""
        reach, floor = self.reach, self.floor(highest)
        self.skip |= {e.offset for e in self._lines if e.done}
        self._lines.clear()
        return reach, floor
