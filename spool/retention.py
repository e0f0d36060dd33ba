"""Retention of shipped runs, and the spool size cap.

A run is *retired* once it is wholly in Ara (its run_end shipped, its checkpoint at the end of the
spool, the last flusher stopped cleanly) and nothing touched it for `days`: its files are removed
(`delete`) or moved to `<spool>/archive/` with the spool, the quarantine and the in-play flusher's
log gzipped (`archive`). Runs that are not wholly shipped are never retired, whatever their age:
an audit trail is not dropped silently. The daemon (flusher/daemon.py) calls apply() once an hour;
`ara-spool prune` calls it once, for one-shot and timer users (ara-spool-flush.service).

The size cap (ARA_SPOOL_MAX_BYTES) is checked by spool/writer.py append(): over the cap the
append warns (policy `warn`, the default: nothing is lost) or raises SpoolFull (policy `refuse`:
the caller sees the error and reports it, e.g. the play fails with ara_fail_on_error).
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ara_spool.spool import progress, settings
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import (
    REJECTED_SUFFIX,
    STATE_SUFFIX,
    RunPaths,
    UnsafeSpoolPath,
    dir_fd,
    ensure_spool_dir,
    exists_in_dir,
    list_runs,
    open_nofollow,
    replace_in_dir,
    unlink_in_dir,
)

log = logging.getLogger("ara_spool.retention")

ARCHIVE_DIR = "archive"
ACTIONS = ("delete", "archive")
FULL_POLICIES = ("warn", "refuse")
# After a spool file is moved away, how long a writer that had opened it just before may still
# take to write its line into the moved file (it then gets put back: see _retire).
_LATE_WRITER_GRACE = 0.05


class SpoolFull(OSError):
    """The spool is over ARA_SPOOL_MAX_BYTES and the policy is `refuse`: the event was not written."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


class RetentionConfigError(settings.SettingError):
    """A retention or cap setting that cannot work; the message names the variable."""


def parse_size(raw: str, name: str = "ARA_SPOOL_MAX_BYTES") -> int:
    """'500000', '200M', '2G' (powers of 1024) -> bytes."""
    text = raw.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if text and text[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    try:
        value = float(text) * mult
    except ValueError:
        raise RetentionConfigError(f"{name}={raw!r} is not a size (e.g. 500M, 2G)") from None
    if value <= 0:
        raise RetentionConfigError(f"{name}={raw!r} must be positive")
    return int(value)


@dataclass
class Cap:
    """The spool size cap: max_bytes (None: no cap) and what to do over it."""

    max_bytes: int | None = None
    policy: str = "warn"

    @classmethod
    def from_env(cls) -> Cap:
        raw = (settings.env_str("ARA_SPOOL_MAX_BYTES") or "").strip()
        try:
            policy = settings.env_choice("ARA_SPOOL_FULL_POLICY", FULL_POLICIES, "warn")
        except settings.SettingError as exc:
            raise RetentionConfigError(str(exc)) from None
        return cls(parse_size(raw) if raw else None, policy)


@dataclass
class Retention:
    """Retire wholly shipped runs untouched for `days` (None: keep them forever)."""

    days: float | None = None
    action: str = "delete"

    @classmethod
    def from_env(cls) -> Retention:
        try:
            days = settings.env_number("ARA_SPOOL_RETENTION_DAYS", None, minimum=0.0, inclusive=True)
        except settings.SettingError as exc:
            raise RetentionConfigError(str(exc)) from None
        action = (settings.env_str("ARA_SPOOL_RETENTION_ACTION") or "delete").strip().lower()
        r = cls(days, action)
        r.check()
        return r

    def check(self) -> None:
        if self.action not in ACTIONS:
            raise RetentionConfigError(f"retention action {self.action!r}: use one of {', '.join(ACTIONS)}")
        if self.days is not None and self.days < 0:
            raise RetentionConfigError("retention days must not be negative")


@dataclass
class Report:
    retired: list[str] = field(default_factory=list)
    kept: int = 0  # runs not retired (pending, recent, busy, failed)
    failed: list[str] = field(default_factory=list)  # runs whose retirement hit an error (logged)


def spool_usage(spool_dir: Path | str) -> int:
    """Bytes of the regular files directly in the spool dir (archive/ is not counted)."""
    total = 0
    try:
        with os.scandir(spool_dir) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    except FileNotFoundError:
        return 0
    return total


def unshipped_bytes(spool_dir: Path | str) -> int:
    """Bytes of the runs' spools not yet in Ara (past each run's checkpoint where it was shipped
    last): what the cap is about. Shipped runs waiting for retention do not count."""
    total = 0
    for run_id in list_runs(spool_dir):
        paths = RunPaths.of(spool_dir, run_id)
        st = state_mod.read_state_quiet(paths)
        total += max(0, _size(paths.spool) - (st.offset if st is not None else 0))
    return total


def check_cap(spool_dir: Path | str, adding: int, cap: Cap | None = None) -> None:
    """Before an append of `adding` bytes: warn, or raise SpoolFull, if the bytes not yet in Ara go
    over the cap."""
    cap = cap or Cap.from_env()
    if cap.max_bytes is None:
        return
    if spool_usage(spool_dir) + adding <= cap.max_bytes:
        return  # the cheap bound (every file): no need to read the checkpoints
    used = unshipped_bytes(spool_dir)
    if used + adding <= cap.max_bytes:
        return
    message = (f"spool {spool_dir} holds {used} bytes not yet in Ara, over ARA_SPOOL_MAX_BYTES={cap.max_bytes}: "
               "is the flusher running and Ara reachable? (`ara-spool status`)")
    if cap.policy == "refuse":
        raise SpoolFull(message + "; event refused (ARA_SPOOL_FULL_POLICY=refuse)")
    log.warning("%s; event kept anyway (ARA_SPOOL_FULL_POLICY=warn)", message)


def _size(path: Path) -> int:
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0


def idle_for(paths: RunPaths, now: float | None = None) -> float:
    """Seconds since any of the run's files changed."""
    last = max(_mtime(paths.spool), _mtime(paths.state), _mtime(paths.rejected), _mtime(paths.flusher_log))
    return (now if now is not None else time.time()) - last


def retirable(paths: RunPaths, max_age_s: float, now: float | None = None) -> bool:
    """Whether the run is wholly in an Ara it was shipped to (not only the last one: a flush to a
    wrong server afterwards does not keep it forever) and untouched for max_age_s (no lock taken)."""
    try:
        if progress.complete_in(paths) is None:
            return False
    except OSError:  # a file this user may not read: not known to be in Ara
        return False
    return idle_for(paths, now) >= max_age_s


def _gzip_into(src: Path, dest: Path) -> None:
    """src -> dest.gz, written to a temp name then renamed (a crash leaves no half archive)."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    fd = open_nofollow(src, os.O_RDONLY)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # an archive is as private as the file it keeps
    # Through the archive dir's handle (opened without following a link), never its path again.
    unlink_in_dir(tmp)
    try:
        out_fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.fchmod(out_fd, mode)  # not the umask's
    except BaseException:
        os.close(fd)
        raise
    try:
        with os.fdopen(fd, "rb") as fin, os.fdopen(out_fd, "wb") as raw_out:
            with gzip.GzipFile(fileobj=raw_out, mode="wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            raw_out.flush()
            os.fsync(raw_out.fileno())
        replace_in_dir(tmp, dest)
    except BaseException:
        unlink_in_dir(tmp)
        raise


def _retire(paths: RunPaths, action: str) -> bool:
    """Remove or archive one run's files; False if a writer got in the way (nothing removed)."""
    archive = paths.spool_dir / ARCHIVE_DIR
    if action == "archive":
        ensure_spool_dir(archive)
    try:
        fd = open_nofollow(paths.spool, os.O_RDONLY)
    except FileNotFoundError:
        fd = None
    hidden = paths.spool_dir / f".{paths.run_id}.retiring"
    if fd is not None:
        try:
            # The writer appends under this flock: no append can start while we check and move.
            # Not waiting: a flock held by someone else (a stuck writer, a group member) must not
            # stop the daemon; the run is tried again on the next pass.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if progress.complete_in(paths) is None:  # checked again, no append can start now
                return False
            size = os.fstat(fd).st_size
            replace_in_dir(paths.spool, hidden)
        finally:
            os.close(fd)  # releases the flock
        # A writer that opened the file just before the rename writes into the moved file once we
        # release the flock: then the file goes back and the run stays for the flusher.
        time.sleep(_LATE_WRITER_GRACE)
        if _size(hidden) != size:
            try:
                dfd = dir_fd(paths.spool_dir)  # fails if a new spool file exists: keep both then
                os.link(hidden.name, paths.spool.name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                unlink_in_dir(hidden)
            except FileExistsError:
                log.error("run %s: a late event landed in %s while it was being retired; keep that file "
                          "and ship it by hand", paths.run_id, hidden)
            return False
    if action == "archive":
        if fd is not None:
            _gzip_into(hidden, archive / (paths.run_id + ".jsonl.gz"))
        if exists_in_dir(paths.rejected):
            _gzip_into(paths.rejected, archive / (paths.run_id + REJECTED_SUFFIX + ".gz"))
        if exists_in_dir(paths.flusher_log):
            _gzip_into(paths.flusher_log, archive / (paths.flusher_log.name + ".gz"))
        if exists_in_dir(paths.state):
            os.replace(paths.state.name, paths.run_id + STATE_SUFFIX,
                       src_dir_fd=dir_fd(paths.spool_dir), dst_dir_fd=dir_fd(archive))
    # Quarantined lines too long for their record, kept whole in files of their own.
    with os.scandir(dir_fd(paths.spool_dir)) as entries:
        lines = [paths.spool_dir / e.name for e in entries
                 if e.name.startswith(paths.run_id + ".rejected.") and e.name.endswith(".line")]
    if action == "archive":
        for path in lines:
            _gzip_into(path, archive / (path.name + ".gz"))
    for path in (hidden, paths.rejected, paths.flusher_log, paths.state, *lines):
        unlink_in_dir(path)
    return True


def apply(spool_dir: Path | str, retention: Retention, now: float | None = None) -> Report:
    """Retire every run that qualifies; runs held by a flusher are left for the next pass."""
    report = Report()
    if retention.days is None:
        return report
    spool_dir = Path(spool_dir)
    max_age = retention.days * 86400.0
    for run_id in list_runs(spool_dir):
        paths = RunPaths.of(spool_dir, run_id)
        idle = idle_for(paths, now)
        if not retirable(paths, max_age, now):
            report.kept += 1
            continue
        lock = try_lock(paths)
        if lock is None:  # a flusher is on it: not idle after all
            report.kept += 1
            continue
        try:
            with lock:
                done = _retire(paths, retention.action)
                if done:
                    # Unlinked while held: a flusher that opens the name now gets a fresh lock
                    # file and finds nothing to ship.
                    unlink_in_dir(paths.lock)
        except (OSError, UnsafeSpoolPath) as exc:
            log.error("run %s: retention failed: %s", run_id, exc)
            report.failed.append(run_id)
            done = False
        if done:
            report.retired.append(run_id)
            log.info("run %s: in Ara and idle for %.1f day(s) (over %g): %s", run_id, idle / 86400.0,
                     retention.days, "archived" if retention.action == "archive" else "removed")
        else:
            report.kept += 1
    return report

