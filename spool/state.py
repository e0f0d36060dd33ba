"""A run's flusher checkpoint: how far the spool is shipped and the Ara ids created so far.

Replaced atomically (write a temp file, fsync, rename, fsync the dir): a crash leaves either the
old or the new checkpoint, never a mix. Events after the checkpoint are reconciled against Ara
before anything is re-sent (see flusher/shipper.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ara_spool.spool.paths import RunPaths, open_nofollow
from ara_spool.spool.schema import parse_time

STATE_VERSION = 1


@dataclass
class AraIds:
    """Ara ids of what this run created, keyed by the spool's own identities."""

    playbook: int | None = None
    plays: dict[str, int] = field(default_factory=dict)  # play uuid -> id
    tasks: dict[str, int] = field(default_factory=dict)  # task uuid -> id
    hosts: dict[str, int] = field(default_factory=dict)  # host name -> id
    files: dict[str, int] = field(default_factory=dict)  # "path\0sha1" -> id
    file_paths: dict[str, str] = field(default_factory=dict)  # path -> sha1 first stored there
    open_tasks: dict[str, int] = field(default_factory=dict)  # created "running", not yet ended
    open_plays: dict[str, int] = field(default_factory=dict)
    last_result: int = 0  # highest result id this run created


@dataclass
class RunState:
    """What the flusher has done for one run."""

    run_id: str
    offset: int = 0  # every line before this byte offset is shipped or quarantined
    shipped: int = 0  # events shipped
    quarantined: int = 0  # lines quarantined
    requests: int = 0  # HTTP requests made for this run
    ended: bool = False  # a run_end event has been shipped
    clean: bool = True  # False while a flusher works on the run: a crash leaves it False
    final_status: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    first_error_at: str | None = None
    updated: str | None = None
    ids: AraIds = field(default_factory=AraIds)

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every id map, ~6x slower on a long run's state.
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "ids"}
        return {"version": STATE_VERSION, **out, "ids": vars(self.ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        data = dict(data)
        data.pop("version", None)
        ids = AraIds(**data.pop("ids", {}))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(ids=ids, **known)


def load(paths: RunPaths) -> RunState:
    """The run's state, or a fresh one if it has none. A corrupt state file raises ValueError."""
    try:
        fd = open_nofollow(paths.state, os.O_RDONLY)
    except FileNotFoundError:
        return RunState(run_id=paths.run_id)
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    try:
        state = RunState.from_json(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"state file {paths.state} is corrupt: {exc}") from exc
    if state.run_id != paths.run_id:
        raise ValueError(f"state file {paths.state} belongs to run {state.run_id!r}")
    return state


def save(paths: RunPaths, state: RunState, *, durable: bool = True) -> None:
    """Replace the state file atomically; durable adds fsync of the file and the directory."""
    tmp = paths.state.with_name(paths.state.name + f".tmp{os.getpid()}")
    data = json.dumps(state.to_json(), separators=(",", ":")).encode()
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, paths.state)
    if durable:
        dfd = os.open(paths.spool_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_state_quiet(paths: RunPaths) -> RunState | None:
    """load() for reports: None when missing or unreadable."""
    if not Path(paths.state).exists():
        return None
    try:
        return load(paths)
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
