"""Quarantine: bad lines and refused events go to <run>.rejected.jsonl with their reason."""

from __future__ import annotations

import base64
import fcntl
import json
import os
from typing import Any

from ara_spool.spool.paths import RunPaths, ensure_spool_dir, open_nofollow
from ara_spool.spool.schema import now_iso


def reject(paths: RunPaths, offset: int, raw: bytes, reason: str, **extra: Any) -> None:
    """Append one quarantine record, durably: the line's offset, the reason, and its bytes, kept
    whole (base64 when not text). `extra` fields go into the record as they are."""
    record: dict[str, Any] = {"run": paths.run_id, "offset": offset, "at": now_iso(), "reason": reason, **extra}
    try:
        record["raw"] = raw.decode("utf-8")
        if "\x00" in record["raw"]:
            raise UnicodeDecodeError("utf-8", raw, 0, 1, "NUL")
    except UnicodeDecodeError:
        record.pop("raw", None)
        record["raw_b64"] = base64.b64encode(raw).decode("ascii")
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    ensure_spool_dir(paths.spool_dir)
    fd = open_nofollow(paths.rejected, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def count(paths: RunPaths) -> int:
    """Quarantined records of a run."""
    try:
        fd = open_nofollow(paths.rejected, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    with os.fdopen(fd, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
