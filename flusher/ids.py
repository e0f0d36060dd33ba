"""The Ara ids one run created at one Ara: the flusher's half of the checkpoint.

They live in the checkpoint's opaque `sink` (spool/state.py): `AraIds.bind(state)` makes the
state's sink *be* this object's attribute dict, so saving the state saves the ids without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AraIds:
    """Ara ids of what this run created, keyed by the spool's own identities."""

    playbook: int | None = None
    # play uuid -> id of its latest batch (serial: one Ara play per batch); "uuid#n" -> batch n's id
    plays: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)  # task uuid -> id
    hosts: dict[str, int] = field(default_factory=dict)  # host name -> id
    files: dict[str, int] = field(default_factory=dict)  # "path\0sha1" -> id
    file_paths: dict[str, str] = field(default_factory=dict)  # path -> sha1 first stored there
    open_tasks: dict[str, int] = field(default_factory=dict)  # created "running", not yet ended
    task_plays: dict[str, int] = field(default_factory=dict)  # task uuid -> its play's id (its results')
    task_ends: dict[str, list[Any]] = field(default_factory=dict)  # task uuid -> [ends applied, status]
    # host -> counters of its explicit events (ara_spool_event, ara-spool emit): Ansible's stats do
    # not count them, so a host only they name gets these at the run's end.
    event_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stats_sent: bool = False  # a host_stats event was shipped (else run_end sends event_counts)
    open_plays: dict[str, int] = field(default_factory=dict)
    last_result: int = 0  # highest result id this run created
    # A create's outcome is unknown (a lost answer, an empty body, a restart): the run is not
    # done until a read-back (flusher/readback.py) has compared Ara's rows with the spool.
    unconfirmed: bool = False

    @classmethod
    def bind(cls, state: Any) -> AraIds:
        """The ids in state.sink, tied to it: later changes to the ids are in state.sink."""
        known = {k: v for k, v in (state.sink or {}).items() if k in cls.__dataclass_fields__}
        ids = cls(**known)
        state.sink = vars(ids)
        return ids


def playbook_of(state: Any) -> int | None:
    """The Ara playbook id a checkpoint recorded, if any (for reports)."""
    return (state.sink or {}).get("playbook") if state is not None else None
