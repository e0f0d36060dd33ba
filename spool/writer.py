"""Append events to a run's spool: safe for many processes at once, one whole line per event.

Ansible runs action plugins in a fresh forked worker per (host, task), so nothing can be buffered:
each append opens the file, takes an exclusive flock, writes one whole line with O_APPEND, and
closes. The lock also lets the writer assign `seq` (the line's byte offset) and heal a torn tail.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ara_spool.spool import schema, settings
from ara_spool.spool.paths import RunPaths, default_spool_dir, dir_fd, ensure_spool_dir, open_nofollow

# Larger events are cut down (content replaced by a marker with its head) before they are spooled.
MAX_LINE_BYTES = 8 * 1024 * 1024
# What each truncated content keeps, in characters of its JSON text.
TRUNCATED_HEAD_CHARS = 64 * 1024


# One encoder, built once: json.dumps with options builds a JSONEncoder on every call.
_line_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def encode(event: dict[str, Any]) -> bytes:
    """One event as one spool line (compact JSON, UTF-8, trailing newline)."""
    return _line_json(event).encode("utf-8") + b"\n"


def truncate_content(value: Any, limit_bytes: int) -> Any:
    """value if its JSON fits in limit_bytes, else a marker that says so and keeps its head."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    size = len(text.encode("utf-8"))
    if size <= limit_bytes:
        return value
    return {
        "ara_spool_truncated": True,
        "original_bytes": size,
        "head": text[: min(TRUNCATED_HEAD_CHARS, max(0, limit_bytes // 4))],
    }


def _shrink(event: dict[str, Any], line: bytes) -> bytes:
    body_key = schema.REQUIRED[event["kind"]][0]
    body = dict(event[body_key])
    for field in ("content", "details"):
        if field in body:
            body[field] = truncate_content(body[field], MAX_LINE_BYTES // 2)
    event = {**event, body_key: body}
    line = encode(event)
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"{event['kind']} event is {len(line)} bytes even after truncating its content")
    return line


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def open_locked(path: Path) -> int:
    """Open the spool for append and take its lock, making sure the file locked is still the one
    at `path`: retention may have moved it away between our open and our flock."""
    while True:
        fd = open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                parent, name = os.path.split(path)
                same = os.stat(name, dir_fd=dir_fd(parent), follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


def append(
    run_id: str,
    kind: str,
    body: dict[str, Any],
    *,
    spool_dir: Path | str | None = None,
    ts: str | None = None,
    fsync: bool | None = None,
    requeued_from: int | None = None,
) -> dict[str, Any]:
    """Append one event of `kind` to run_id's spool; return the event as written (with its seq).

    fsync defaults to $ARA_SPOOL_FSYNC (off): an appended line survives a crash of any process
    without it; fsync is only for power loss, at the cost of a disk flush per event.
    With $ARA_SPOOL_MAX_BYTES set, a spool over that size warns, or raises SpoolFull (an OSError,
    ENOSPC) when $ARA_SPOOL_FULL_POLICY=refuse.
    """
    paths = RunPaths.of(spool_dir or default_spool_dir(), run_id)
    ensure_spool_dir(paths.spool_dir)
    event = schema.make_event(run_id, kind, body, ts)
    if requeued_from is not None:  # `ara-spool requeue`: the quarantined line this one replays
        event["requeued_from"] = requeued_from
    if settings.env_str("ARA_SPOOL_MAX_BYTES"):
        # Size cap (spool/retention.py): warn, or refuse with SpoolFull before anything is written.
        from ara_spool.spool.retention import check_cap

        check_cap(paths.spool_dir, len(encode(event)) + 64)
    if fsync is None:
        fsync = settings.env_bool("ARA_SPOOL_FSYNC")
    fd = open_locked(paths.spool)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        # A writer killed mid-line left a tail without its newline: end it, so that the torn
        # fragment becomes one bad line (quarantined) and this event stays whole.
        if size and os.pread(fd, 1, size - 1) != b"\n":
            prefix = b"\n"
        event["seq"] = size + len(prefix)
        line = encode(event)
        if len(line) > MAX_LINE_BYTES:
            line = _shrink(event, line)
        try:
            write_all(fd, prefix + line)
        except OSError:
            # A full disk (ENOSPC) or a short write: take back the part written, so that no torn
            # line is left for the next writer to end (it would be quarantined).
            os.ftruncate(fd, size)
            raise
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)  # releases the flock
    return event
