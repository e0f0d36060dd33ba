"""Quarantine: bad lines and refused events go to <run>.rejected.jsonl with their reason; `requeue`
puts them back in line to ship, exactly once, after the cause is fixed."""

from __future__ import annotations

import base64
import fcntl
import json
import os
from dataclasses import dataclass
from typing import Any

from ara_spool.spool import schema, writer
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import RunPaths, ensure_spool_dir, open_nofollow
from ara_spool.spool.reader import read_lines
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
        writer.write_all(fd, line)
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


def records(paths: RunPaths) -> list[dict[str, Any]]:
    """The run's quarantine records, in order (a line that is not a record is kept as-is)."""
    try:
        fd = open_nofollow(paths.rejected, os.O_RDONLY)
    except FileNotFoundError:
        return []
    out = []
    with os.fdopen(fd, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            out.append(rec if isinstance(rec, dict) else {"unreadable": raw.decode("utf-8", "replace")})
    return out


@dataclass
class Requeued:
    requeued: int = 0  # records whose event is back in the spool
    kept: int = 0  # records that stay (not a valid event of this run)
    busy: bool = False  # a flusher holds the run: nothing done


def _event_of(paths: RunPaths, rec: dict[str, Any]) -> dict[str, Any] | None:
    raw = rec.get("raw")
    if not isinstance(raw, str) or not isinstance(rec.get("offset"), int):
        return None
    try:
        event = schema.validate(json.loads(raw))
    except (ValueError, schema.SchemaError):
        return None
    return event if event["run"] == paths.run_id else None


def requeue(paths: RunPaths) -> Requeued:
    """Append each quarantined event again (marked `requeued_from` its old offset) and drop its
    record. Exactly once: an offset already replayed in the spool is never appended again, so a
    requeue killed between the append and the rewrite of the quarantine is finished by the next.
    Holds the run's lock: the flusher, which writes the quarantine, is not shipping meanwhile."""
    lock = try_lock(paths)
    if lock is None:
        return Requeued(busy=True)
    with lock:
        recs = records(paths)
        if not recs:
            return Requeued()
        done = {line.event["requeued_from"] for line in read_lines(paths.spool)
                if line.event is not None and isinstance(line.event.get("requeued_from"), int)}
        result, keep = Requeued(), []
        for rec in recs:
            event = _event_of(paths, rec)
            if event is None:
                keep.append(rec)
                result.kept += 1
                continue
            if rec["offset"] not in done:
                body_key = schema.REQUIRED[event["kind"]][0]
                writer.append(paths.run_id, event["kind"], event[body_key], spool_dir=paths.spool_dir,
                              ts=event["ts"], requeued_from=rec["offset"], fsync=True)
                done.add(rec["offset"])
            result.requeued += 1
        _rewrite(paths, keep)
        return result


def _rewrite(paths: RunPaths, recs: list[dict[str, Any]]) -> None:
    """Replace the quarantine file with recs, atomically (or remove it when none are left)."""
    if not recs:
        paths.rejected.unlink(missing_ok=True)
        return
    tmp = paths.rejected.with_name(paths.rejected.name + f".tmp{os.getpid()}")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for rec in recs:
            writer.write_all(fd, rec["unreadable"].encode() if "unreadable" in rec else
                             json.dumps(rec, separators=(",", ":"), ensure_ascii=True).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, paths.rejected)
