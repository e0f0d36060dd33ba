"""A run's checkpoints, one per destination: how far the spool is shipped there, and what the
shipper needs to go on (its `sink`: opaque here, the Ara ids to the flusher).

One file per run (`<run>.state`) holds every destination the run was shipped to, keyed by an
opaque destination string (the flusher uses the normalised Ara API URL), and which of them was
shipped to last (`current`). Shipping the same spool to a second server starts a checkpoint of its
own there: the ids of one server never leak into requests to another.

Replaced atomically (write a temp file, fsync, rename, fsync the dir): a crash leaves either the
old or the new checkpoint, never a mix. Only the flusher holding the run's lock writes it.
Version 1 files (one destination, not named) are read as the destination "" (unknown): the
flusher checks their ids against the server before it adopts them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ara_spool.spool.paths import RunPaths, exists_in_dir, fsync_dir, open_nofollow, replace_file, replace_in_dir
from ara_spool.spool.schema import parse_time

STATE_VERSION = 2
UNKNOWN_DEST = ""  # a version 1 checkpoint: shipped somewhere, not recorded where


class CorruptState(ValueError):
    """The state file cannot be read as a checkpoint."""


@dataclass
class RunState:
    """What the flusher has done for one run at one destination."""

    run_id: str
    dest: str = UNKNOWN_DEST
    offset: int = 0  # every line before this byte offset is shipped or quarantined
    done_above: list[int] = field(default_factory=list)  # offsets of lines past `offset` also done
    shipped: int = 0  # events shipped
    quarantined: int = 0  # lines quarantined
    requests: int = 0  # HTTP requests made for this run
    answered: int = 0  # requests Ara answered for this run: progress within a line (spool/progress.py)
    ended: bool = False  # a run_end event has been shipped
    clean: bool = True  # False while a flusher works on the run: a crash leaves it False
    final_status: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    first_error_at: str | None = None
    updated: str | None = None
    sink: dict[str, Any] = field(default_factory=dict)  # the shipper's own data (Ara ids)
    # The run's other destinations, as read: written back unchanged by save().
    others: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def fresh(self) -> bool:
        """Nothing shipped to this destination yet, as far as this checkpoint knows."""
        return self.offset == 0 and not any(self.sink.values())

    def _fields(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every id map, ~6x slower on a long run's state.
        return {name: getattr(self, name) for name in self.__dataclass_fields__
                if name not in ("run_id", "dest", "others")}

    def to_json(self) -> dict[str, Any]:
        dests = dict(self.others)
        dests[self.dest] = self._fields()
        return {"version": STATE_VERSION, "run_id": self.run_id, "current": self.dest, "destinations": dests}

    def destinations(self) -> list[str]:
        """Every destination this run has a checkpoint for, this one first."""
        return [self.dest, *(d for d in self.others if d != self.dest)]


def _from_fields(run_id: str, dest: str, data: dict[str, Any], others: dict[str, dict[str, Any]]) -> RunState:
    known = {k: v for k, v in data.items() if k in RunState.__dataclass_fields__
             and k not in ("run_id", "dest", "others")}
    return RunState(run_id=run_id, dest=dest, others=others, **known)


def _parse(raw: bytes, paths: RunPaths, dest: str | None) -> RunState:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError("not an object")
    run_id = data.get("run_id")
    if run_id != paths.run_id:
        raise CorruptState(f"state file {paths.state} belongs to run {run_id!r}")
    if data.get("version", 1) == 1:
        legacy = {k: v for k, v in data.items() if k not in ("version", "run_id")}
        legacy["sink"] = legacy.pop("ids", {}) or {}
        dests: dict[str, dict[str, Any]] = {UNKNOWN_DEST: legacy}
        current = UNKNOWN_DEST
    else:
        dests = data["destinations"]
        current = data.get("current", UNKNOWN_DEST)
        if not isinstance(dests, dict) or not all(isinstance(v, dict) for v in dests.values()):
            raise TypeError("destinations is not a map of objects")
    want = current if dest is None else dest
    if want not in dests and UNKNOWN_DEST in dests:
        # A version 1 checkpoint: offered to whoever ships next, who must check it (see module doc).
        want_data = dests.pop(UNKNOWN_DEST)
        return _from_fields(run_id, want, want_data, dests)
    mine = dests.pop(want, None)
    return _from_fields(run_id, want, mine or {}, dests)


def load(paths: RunPaths, dest: str | None = None) -> RunState:
    """The run's checkpoint for dest (default: the destination shipped to last), fresh if it has
    none. A corrupt state file raises CorruptState."""
    try:
        fd = open_nofollow(paths.state, os.O_RDONLY)
    except FileNotFoundError:
        return RunState(run_id=paths.run_id, dest=dest or UNKNOWN_DEST)
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    try:
        return _parse(raw, paths, dest)
    except CorruptState:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptState(f"state file {paths.state} is corrupt: {exc}") from exc


def save(paths: RunPaths, state: RunState, *, durable: bool = True) -> None:
    """Replace the state file, all or nothing: the whole buffer is written to a temp file (a short
    write is continued), fsynced when durable, then renamed over the old one (and the dir
    fsynced). On any failure (a full disk: ENOSPC) the temp file is removed, the old checkpoint
    stays, and the OSError is raised."""
    data = json.dumps(state.to_json(), separators=(",", ":")).encode()
    replace_file(paths.state, [data], durable=durable)
    if durable:
        fsync_dir(paths.spool_dir)


def set_aside(paths: RunPaths) -> Path:
    """Move an unreadable state file out of the way (kept for a post-mortem), return where."""
    dest = paths.state.with_name(paths.state.name + f".corrupt.{int(time.time())}")
    replace_in_dir(paths.state, dest)
    return dest


def read_state_quiet(paths: RunPaths, dest: str | None = None) -> RunState | None:
    """load() for reports: None when missing or unreadable (or refused: a FIFO, a symlink)."""
    try:
        if not exists_in_dir(paths.state):
            return None
        return load(paths, dest)
    except (OSError, ValueError):
        return None


# A checkpoint waiting behind a flusher that has failed to reach Ara for this long stops waiting:
# the play should not sit out its whole timeout against a dead Ara.
FAILING_GRACE = 5.0


def failing_for(st: RunState | None) -> float:
    """Seconds the run's flusher has been failing to reach Ara (0 when it is not)."""
    if st is None or not st.first_error_at or not st.last_error:
        return 0.0
    try:
        return time.time() - parse_time(st.first_error_at).timestamp()
    except ValueError:
        return 0.0
