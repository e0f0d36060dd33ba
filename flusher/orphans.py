"""Runs whose ansible-playbook is gone without a spooled end (its run_end could not be written:
a full disk). The daemon records them as `expired`, as the play's own flusher does, so that the
playbook does not stay `running` in Ara forever.

A run's run_start names the process that records it (pid, boot id, host: spool/process.py's
`process_identity`); it is gone when it ran on this host since this boot and no such pid exists.
A run from another host or boot (a spool on shared storage, a reboot) is never guessed about.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ara_spool.spool import writer
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.process import process_identity
from ara_spool.spool.reader import read_lines

log = logging.getLogger("ara_spool.orphans")


def recorder(paths: RunPaths) -> dict[str, Any] | None:
    """The `process` of the run's run_start (its first line), or None."""
    first = next(read_lines(paths.spool), None)
    if first is None or first.event is None or first.event["kind"] != "run_start":
        return None
    proc = first.event["playbook"].get("process")
    return proc if isinstance(proc, dict) else None


def gone(proc: dict[str, Any] | None) -> bool:
    """Whether the recording ansible-playbook is known to be gone (never a guess)."""
    me = process_identity()
    if not proc or proc.get("host") != me["host"] or proc.get("boot_id") != me["boot_id"] or not me["boot_id"]:
        return False
    pid = proc.get("pid")
    return isinstance(pid, int) and pid > 0 and not os.path.exists(f"/proc/{pid}")


def end_expired(paths: RunPaths) -> None:
    """Spool the run's end as `expired` (an OSError, e.g. ENOSPC, is the caller's: retry later)."""
    writer.append(paths.run_id, "run_end", {"status": "expired"}, spool_dir=paths.spool_dir)
    log.warning("run %s: its ansible-playbook is gone without ending the run; recorded the run as expired",
                paths.run_id)
