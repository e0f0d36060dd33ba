"""Read a run's spool from an offset: whole lines only, a torn or growing tail is never data."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
from ara_spool.spool import schema
from ara_spool.spool.paths import open_nofollow
from ara_spool.spool.writer import MAX_LINE_BYTES

CHUNK = 256 * 1024


@dataclass
class Line:
    """One complete spool line: its byte range and either the event or why it is bad."""

    offset: int
    end: int
    raw: bytes
    event: dict[str, Any] | None = None
    error: str | None = None


def parse(raw: bytes, offset: int) -> Line:
    """Decode and validate one line (without its newline)."""
    end = offset + len(raw) + 1
    if len(raw) > MAX_LINE_BYTES:
        return Line(offset, end, raw, error=f"line of {len(raw)} bytes exceeds {MAX_LINE_BYTES}")
    if not raw.strip():
        return Line(offset, end, raw, error="empty line")
    if b"\x00" in raw:
        return Line(offset, end, raw, error="NUL byte in line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Line(offset, end, raw, error=f"not UTF-8 at byte {exc.start}")
    try:
        event = json.loads(text)
    except ValueError as exc:
        return Line(offset, end, raw, error=f"malformed JSON: {exc}")
    except RecursionError:
        # json raises this (not ValueError) on deep nesting: one bad line, not a dead reader.
        return Line(offset, end, raw, error="malformed JSON: nested too deeply")
    try:
        schema.validate(event)
    except schema.SchemaError as exc:
        return Line(offset, end, raw, error=str(exc))
    return Line(offset, end, raw, event=event)


class LineSplitter:
    """Turns chunks of a file into complete lines; keeps a trailing fragment until its newline.

    An over-long line is not held in memory: once it passes the limit, its bytes are dropped from
    the buffer (the line is reported with its length and the raw head kept for quarantine).
    """

    def __init__(self, offset: int, max_line: int = MAX_LINE_BYTES) -> None:
        self.offset = offset  # file offset of buf[0]
        self.buf = bytearray()
        self.max_line = max_line
        self._skipping = 0  # bytes of an over-long line already dropped

    def feed(self, chunk: bytes) -> Iterator[Line]:
        self.buf += chunk
        start = 0
        while True:
            nl = self.buf.find(b"\n", start)
            if nl < 0:
                break
            raw = bytes(self.buf[start:nl])
            if self._skipping:
                total = self._skipping + len(raw)
                line_off = self.offset + start - self._skipping
                yield Line(line_off, self.offset + nl + 1, raw[:4096],
                           error=f"line of {total} bytes exceeds {self.max_line}")
                self._skipping = 0
            else:
                yield parse(raw, self.offset + start)
            start = nl + 1
        del self.buf[:start]
        self.offset += start
        if len(self.buf) > self.max_line:
            self._skipping += len(self.buf)
            self.offset += len(self.buf)
            self.buf.clear()

    @property
    def pending(self) -> int:
        """Bytes after the last complete line (a growing or torn tail)."""
        return len(self.buf) + self._skipping


def _open(path: Path) -> int:
    return open_nofollow(path, os.O_RDONLY)


def read_lines(path: Path, offset: int = 0) -> Iterator[Line]:
    """Complete lines of path from offset (sync; for status and verify)."""
    try:
        fd = _open(path)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as fh:
        fh.seek(offset)
        splitter = LineSplitter(offset)
        while chunk := fh.read(CHUNK):
            yield from splitter.feed(chunk)


def tail_info(path: Path, offset: int = 0) -> tuple[int, int]:
    """(complete lines after offset, bytes of an unterminated tail)."""
    count = 0
    try:
        fd = _open(path)
    except FileNotFoundError:
        return 0, 0
    with os.fdopen(fd, "rb") as fh:
        fh.seek(offset)
        last = b"\n"
        pending = 0
        while chunk := fh.read(CHUNK):
            count += chunk.count(b"\n")
            last = chunk
        if last and not last.endswith(b"\n"):
            pending = len(last) - (last.rfind(b"\n") + 1)
    return count, pending


async def aread_lines(path: Path, offset: int, max_lines: int = 1000) -> AsyncIterator[Line]:
    """Complete lines of path from offset, at most max_lines (async, for the flusher)."""
    try:
        fd = _open(path)
    except FileNotFoundError:
        return
    async with aiofiles.open(fd, "rb") as fh:
        await fh.seek(offset)
        splitter = LineSplitter(offset)
        n = 0
        while chunk := await fh.read(CHUNK):
            for line in splitter.feed(chunk):
                yield line
                n += 1
                if n >= max_lines:
                    return
