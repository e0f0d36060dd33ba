"""One flusher per run: an exclusive flock on <run>.lock, held while a run is shipped."""

from __future__ import annotations

import fcntl
import os

from ara_spool.spool.paths import RunPaths, UnsafeSpoolPath, open_nofollow


class RunLock:
    """A held run lock; released by close() or when the process dies (the kernel drops flocks)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_run_files(paths: RunPaths) -> None:
    """Refuse (UnsafeSpoolPath naming the file) a run whose spool or state file is a symlink, a FIFO
    or device, or not owned as expected, before anything is created for it."""
    for path in (paths.spool, paths.state):
        try:
            os.close(open_nofollow(path, os.O_RDONLY))
        except FileNotFoundError:
            pass


def try_lock(paths: RunPaths) -> RunLock | None:
    """Take the run's lock without waiting; None if another flusher holds it. A refused run gets
    no lock file (check_run_files first)."""
    check_run_files(paths)
    fd = open_nofollow(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return RunLock(fd)


def is_locked(paths: RunPaths) -> bool:
    """Whether a flusher holds the run's lock right now (creates nothing: no lock file, no flusher)."""
    try:
        fd = open_nofollow(paths.lock, os.O_RDONLY)
    except (FileNotFoundError, UnsafeSpoolPath):  # no lock file, or not one a flusher could hold
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
