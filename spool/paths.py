"""Where a run's files live, and the checks that keep them inside the spool dir."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ara_spool.spool import settings

# A run id becomes a file name: keep it to a portable, unambiguous alphabet. No path separators,
# no leading dot or dash (hidden files, option injection), bounded length.
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,127}$")

SPOOL_SUFFIX = ".jsonl"
STATE_SUFFIX = ".state"
REJECTED_SUFFIX = ".rejected.jsonl"
LOCK_SUFFIX = ".lock"
FLUSHER_LOG_SUFFIX = ".flusher.log"


class UnsafeRunId(ValueError):
    """A run id that cannot be used as a file name safely."""


class UnsafeSpoolPath(OSError):
    """A spool dir or file that is a symlink, not ours, or has unsafe permissions."""


def check_run_id(run_id: str) -> str:
    """Return run_id if it is safe as a file name, else raise UnsafeRunId with the reason."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or ".." in run_id:
        raise UnsafeRunId(
            f"unsafe run id {run_id!r}: use 1-128 characters of A-Z a-z 0-9 _ . : @ + = -, "
            "not starting with '.' or '-', without '..'"
        )
    return run_id


def default_spool_dir() -> Path:
    """$ARA_SPOOL_DIR, else $XDG_STATE_HOME/ara-spool, else ~/.local/state/ara-spool."""
    env = settings.env_str("ARA_SPOOL_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")  # the XDG base directory, not a setting of ours
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "ara-spool"


def group_shared() -> bool:
    """$ARA_SPOOL_GROUP_SHARED: the spool is shared by a group (ansible users + the flusher service).

    Then a new spool dir is 2770 (setgid: files inherit the dir's group) and files we create are
    0660 whatever the umask, so that every member can append, ship and checkpoint any run.
    """
    return settings.env_bool("ARA_SPOOL_GROUP_SHARED")


def ensure_spool_dir(path: Path, mode: int | None = None) -> Path:
    """Create the spool dir (0700, or 2770 when group-shared); refuse a symlink in its place."""
    path = Path(path)
    shared = group_shared()
    if mode is None:
        mode = 0o2770 if shared else 0o700
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        # No setgid bit in mkdir's mode: systemd's RestrictSUIDSGID=yes (our units) refuses it with
        # EPERM. Under a setgid parent (the shared spool) the new dir inherits the bit anyway.
        path.mkdir(mode=mode & 0o777, parents=True, exist_ok=True)
        st = os.lstat(path)
        if shared and stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
            _chmod_dir(path, mode, st)  # the umask masked the mode, or no setgid was inherited
            st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeSpoolPath(f"spool dir {path} is a symlink; refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeSpoolPath(f"spool dir {path} is not a directory")
    return path


def _chmod_dir(path: Path, mode: int, st: os.stat_result) -> None:
    """chmod a dir we just made; where setting setgid is refused (RestrictSUIDSGID=yes: EPERM),
    set the permission bits alone, keeping a setgid bit the dir inherited."""
    try:
        os.chmod(path, mode)
    except PermissionError:
        if st.st_mode & stat.S_ISGID:
            return  # inherited: chmod without the bit would clear it, chmod with it is refused
        os.chmod(path, mode & 0o777)


@dataclass(frozen=True)
class RunPaths:
    """The files of one run inside a spool dir."""

    spool_dir: Path
    run_id: str

    @classmethod
    def of(cls, spool_dir: Path | str, run_id: str) -> RunPaths:
        return cls(Path(spool_dir), check_run_id(run_id))

    @property
    def spool(self) -> Path:
        return self.spool_dir / (self.run_id + SPOOL_SUFFIX)

    @property
    def state(self) -> Path:
        return self.spool_dir / (self.run_id + STATE_SUFFIX)

    @property
    def rejected(self) -> Path:
        return self.spool_dir / (self.run_id + REJECTED_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.spool_dir / (self.run_id + LOCK_SUFFIX)

    @property
    def flusher_log(self) -> Path:
        """The log of the flusher an Ansible run starts for itself (handlers/runtime.py)."""
        return self.spool_dir / (self.run_id + FLUSHER_LOG_SUFFIX)

    def spool_size(self) -> int:
        """Bytes in the run's spool file (0 when it has none yet)."""
        try:
            return os.stat(self.spool, follow_symlinks=False).st_size
        except FileNotFoundError:
            return 0


def spool_entry(entry: os.DirEntry[str]) -> tuple[str, os.stat_result] | None:
    """(run id, lstat) when a spool dir entry is a run's spool file: a safe name, a regular file."""
    name = entry.name
    if not name.endswith(SPOOL_SUFFIX) or name.endswith(REJECTED_SUFFIX):
        return None
    run_id = name[: -len(SPOOL_SUFFIX)]
    try:
        check_run_id(run_id)
        st = entry.stat(follow_symlinks=False)
    except (UnsafeRunId, OSError):
        return None
    return (run_id, st) if stat.S_ISREG(st.st_mode) else None


def list_runs(spool_dir: Path | str) -> list[str]:
    """Run ids that have a spool file in spool_dir, oldest file first. Unsafe names are skipped."""
    spool_dir = Path(spool_dir)
    runs: list[tuple[float, str]] = []
    try:
        with os.scandir(dir_fd(spool_dir)) as it:  # through the handle: a symlinked dir is refused
            entries = list(it)
    except FileNotFoundError:
        return []
    for entry in entries:
        found = spool_entry(entry)
        if found is not None:
            runs.append((found[1].st_mtime, found[0]))
    return [r for _, r in sorted(runs)]


# Every file in a spool dir is opened relative to a handle on the dir itself (opened without
# following a link), never by a path walked again: a dir swapped for a symlink after it was
# checked cannot redirect a create. O_NOFOLLOW: a file that is a symlink is refused. O_NONBLOCK:
# a FIFO, device or socket planted in place of a file cannot block the open (it is then refused
# by fstat, before any read or write).
OPEN_FLAGS_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_SAFE_FLAGS = OPEN_FLAGS_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _SAFE_FLAGS

# Spool dir handles, opened once per dir and process: path -> (fd, st_dev, st_ino).
_DIR_FDS: dict[str, tuple[int, int, int]] = {}


def dir_fd(directory: Path | str) -> int:
    """A handle on the spool dir, opened once without following a link. Each use checks that the
    name still is that dir: a dir swapped for a symlink is refused (nothing is created there); a
    dir removed and made again (a real dir) gets a new handle."""
    key = os.fspath(directory) or "."
    st = os.lstat(key)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeSpoolPath(f"spool dir {key} is a symlink (swapped for one?); refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeSpoolPath(f"spool dir {key} is not a directory; refusing it")
    cached = _DIR_FDS.get(key)
    # Same inode, and not removed meanwhile (a removed dir's inode number may come back for a new one).
    if cached is not None and cached[1:] == (st.st_dev, st.st_ino) and os.fstat(cached[0]).st_nlink > 0:
        return cached[0]
    try:
        fd = os.open(key, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeSpoolPath(f"spool dir {key} was swapped while opened; refusing it") from exc
        raise
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise UnsafeSpoolPath(f"spool dir {key} was swapped while opened; refusing it")
    if cached is not None:
        os.close(cached[0])
    _DIR_FDS[key] = (fd, fst.st_dev, fst.st_ino)
    return fd


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def open_nofollow(path: Path | str, flags: int, mode: int = 0o600) -> int:
    """Open a file of a spool dir relative to the dir's handle (dir_fd), refusing a symlink, a
    FIFO, device or socket (without blocking on it), and a file not owned as expected; returns the
    fd. A refusal raises UnsafeSpoolPath naming the file."""
    parent, name = os.path.split(os.fspath(path))  # not pathlib: this runs for every append
    dfd = dir_fd(parent)
    try:
        fd = os.open(name, flags | _SAFE_FLAGS, mode, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafeSpoolPath(f"{path} is a symlink; refusing to follow it") from exc
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EISDIR):  # a FIFO without reader, a socket, a dir
            raise UnsafeSpoolPath(f"{path} is not a regular file; refusing it") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeSpoolPath(f"{path} is {_kind(st.st_mode)}, not a regular file; refusing it")
        # O_NONBLOCK stays: a regular file's reads and writes ignore it.
        if flags & os.O_CREAT and mode == 0o600 and group_shared() and st.st_uid == os.geteuid() \
                and stat.S_IMODE(st.st_mode) != 0o660:
            # Group-shared spool: a file we own becomes group read-write (the umask may have masked it).
            os.fchmod(fd, 0o660)
        problem = _owner_problem(st, dfd)
        if problem:
            raise UnsafeSpoolPath(f"{path} {problem}; refusing it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _owner_problem(st: os.stat_result, dfd: int) -> str | None:
    """Why a spool file is not owned as expected (None: it is).

    A spool line becomes an audit record in Ara under the flusher's credentials: refuse a file
    others could have forged events into (created 0600 by us, so only one changed or planted after
    the fact). Readable by others is a leak, not a forgery: `ara-spool verify` warns."""
    if group_shared():
        if st.st_mode & 0o002:
            return f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}), so its events could be forged"
        dst = os.fstat(dfd)
        if dst.st_mode & stat.S_ISGID and st.st_gid != dst.st_gid:
            # A setgid spool dir gives each file its group: another group means a member made it
            # private to itself (or linked it in from elsewhere).
            return (f"is in group {st.st_gid}, not the spool's group {dst.st_gid} (made by a member "
                    "outside the shared spool's rules)")
        if st.st_nlink > 1 and st.st_uid != os.geteuid():
            return f"has {st.st_nlink} links (a hard link to a file elsewhere?)"
        return None
    if st.st_uid not in (os.geteuid(), 0):
        return (f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root "
                "(run ara-spool as its owner, or share the spool with ARA_SPOOL_GROUP_SHARED)")
    if st.st_mode & 0o022:
        return (f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}), so its events could be "
                "forged (chmod 600 it if its content is trusted)")
    return None


def exists_in_dir(path: Path | str) -> bool:
    """Whether the spool dir (through its handle) has an entry of that name (any type)."""
    path = Path(path)
    try:
        os.stat(path.name, dir_fd=dir_fd(path.parent), follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def replace_in_dir(src: Path | str, dst: Path | str) -> None:
    """os.replace of two names of one spool dir, through the dir's handle."""
    src, dst = Path(src), Path(dst)
    dfd = dir_fd(dst.parent)
    os.replace(src.name, dst.name, src_dir_fd=dfd, dst_dir_fd=dfd)


def replace_file(path: Path, chunks: Iterable[bytes], *, durable: bool = True) -> None:
    """Replace a file of the spool dir, all or nothing: the chunks go whole (a short write is
    continued) into a temp file made by us (O_EXCL, a name planted there removed first), fsynced
    when durable, renamed over `path`. On any failure (a full disk) the temp file is removed, the
    old file stays, and the error is raised."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    unlink_in_dir(tmp)
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        replace_in_dir(tmp, path)
    except BaseException:
        unlink_in_dir(tmp)
        raise


def unlink_in_dir(path: Path | str) -> None:
    """Remove a name of a spool dir (missing is fine), through the dir's handle."""
    path = Path(path)
    try:
        os.unlink(path.name, dir_fd=dir_fd(path.parent))
    except FileNotFoundError:
        pass


def fsync_dir(directory: Path | str) -> None:
    """fsync the spool dir (a rename in it becomes durable)."""
    os.fsync(dir_fd(directory))


# Below this much free space the spool's disk counts as full: writers and flushers pause.
DISK_FULL_BYTES = 64 << 10


def disk_free(directory: Path | str) -> int | None:
    """Bytes free for us on the spool dir's filesystem (None when it cannot be told)."""
    try:
        st = os.fstatvfs(dir_fd(directory))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(directory: Path | str) -> bool:
    free = disk_free(directory)
    return free is not None and free < DISK_FULL_BYTES
