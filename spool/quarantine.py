"""Quarantine: bad lines and refused events go to <run>.rejected.jsonl with their reason; `requeue`
puts them back in line to ship, exactly once, after the cause is fixed."""

from __future__ import annotations

import base64
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ara_spool.spool import schema, writer
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import RunPaths, ensure_spool_dir, open_nofollow, replace_file, unlink_in_dir
from ara_spool.spool.reader import read_lines
from ara_spool.spool.schema import now_iso


def reject(paths: RunPaths, offset: int, raw: bytes, reason: str, *, end: int | None = None,
           **extra: Any) -> None:
    """Append one quarantine record, durably: the line's offset, the reason, and its bytes, kept
    whole (base64 when not text). A line longer than `raw` (the reader keeps only the head of one
    over MAX_LINE_BYTES; `end` says where it ends) is copied whole from the spool into a file of
    its own, named by the record (`raw_file`). `extra` fields go into the record as they are."""
    record: dict[str, Any] = {"run": paths.run_id, "offset": offset, "at": now_iso(), "reason": reason, **extra}
    whole = None if end is None else end - 1 - offset
    if whole is not None and whole > len(raw):
        record["raw_file"] = _keep_line(paths, offset, whole)
        record["raw_bytes"] = whole
    else:
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
        size = os.fstat(fd).st_size
        try:
            writer.write_all(fd, line)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # no torn record: a retry (the disk had no space) appends it whole
            raise
    finally:
        os.close(fd)


def line_file(paths: RunPaths, offset: int) -> Path:
    """Where a quarantined line too long for its record is kept whole."""
    return paths.spool_dir / f"{paths.run_id}.rejected.{offset}.line"


def _keep_line(paths: RunPaths, offset: int, size: int) -> str:
    """Copy the spool's bytes [offset, offset+size) into the line's own file (durably); its name."""
    dest = line_file(paths, offset)
    unlink_in_dir(dest)  # O_EXCL below: the file is ours, not one planted in its place
    src = open_nofollow(paths.spool, os.O_RDONLY)
    try:
        out = open_nofollow(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            done = 0
            while done < size:
                chunk = os.pread(src, min(1 << 20, size - done), offset + done)
                if not chunk:
                    raise OSError(f"{paths.spool} ends before the quarantined line's end")
                writer.write_all(out, chunk)
                done += len(chunk)
            os.fsync(out)
        finally:
            os.close(out)
    except BaseException:
        unlink_in_dir(dest)
        raise
    finally:
        os.close(src)
    return dest.name


def _raw_of(paths: RunPaths, rec: dict[str, Any]) -> str | None:
    """A record's line as text: in the record, or in its own file."""
    if isinstance(rec.get("raw"), str):
        return rec["raw"]
    name = rec.get("raw_file")
    if not isinstance(name, str) or name != line_file(paths, rec.get("offset", -1)).name:
        return None
    try:
        fd = open_nofollow(paths.spool_dir / name, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read().decode("utf-8", "replace")


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
    if not isinstance(rec.get("offset"), int):
        return None
    raw = _raw_of(paths, rec)
    if raw is None:
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
        for rec in recs:  # the lines kept in files of their own are back in the spool
            if "raw_file" in rec and rec not in keep:
                unlink_in_dir(line_file(paths, rec["offset"]))
        return result


def _rewrite(paths: RunPaths, recs: list[dict[str, Any]]) -> None:
    """Replace the quarantine file with recs, atomically (or remove it when none are left)."""
    if not recs:
        unlink_in_dir(paths.rejected)
        return
    replace_file(paths.rejected, (rec["unreadable"].encode() if "unreadable" in rec else
                                  json.dumps(rec, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
                                  for rec in recs))
