"""Who records a run: the ansible-playbook process named in its run_start (`playbook.process`),
so that a flusher can tell when it is gone (flusher/orphans.py)."""

from __future__ import annotations

import os
import socket


def boot_id() -> str:
    """This boot's id (Linux), "" where there is none: a pid is only meaningful within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> dict[str, object]:
    """{"pid", "boot_id", "host"} of this process (or of pid, on this host)."""
    return {"pid": os.getpid() if pid is None else pid, "boot_id": boot_id(), "host": socket.gethostname()}
