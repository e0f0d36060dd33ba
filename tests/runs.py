"""Spool whole runs the way the callback does, to test the flusher without Ansible."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ara_spool.spool import writer

STATUSES = ["ok", "ok", "ok", "failed", "skipped", "ok", "unreachable"]


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")


def spool_run(spool_dir: Path, run_id: str, *, hosts: int = 3, tasks: int = 5, plays: int = 1,
              end: str | None = "completed", start: datetime | None = None, start_run: bool = True,
              ) -> list[dict[str, Any]]:
    """Append a run (run_start, file, plays, tasks, results, ends); return the result events."""
    t = start or datetime.now(UTC)
    results = []

    def tick() -> str:
        nonlocal t
        t += timedelta(milliseconds=3)
        return iso(t)

    path = f"/srv/playbooks/{run_id}.yml"
    if start_run:
        writer.append(run_id, "run_start", {"path": path, "name": f"flow {run_id}", "ansible_version": "2.19.14",
                                            "labels": ["env:test"], "metadata": {"branch": "main"}},
                      spool_dir=spool_dir, ts=tick())
        writer.append(run_id, "file", {"path": path, "content": "- hosts: all\n  tasks: []\n"},
                      spool_dir=spool_dir, ts=tick())
    for p in range(plays):
        play_uuid = str(uuid.uuid4())
        writer.append(run_id, "play_start", {"uuid": play_uuid, "name": f"play {p}"}, spool_dir=spool_dir, ts=tick())
        for k in range(tasks):
            task_uuid = str(uuid.uuid4())
            name = f"p{p} task {k}"
            writer.append(run_id, "task_start", {"uuid": task_uuid, "name": name, "action": "debug", "path": path,
                                                 "lineno": 10 + k, "handler": False, "play_uuid": play_uuid},
                          spool_dir=spool_dir, ts=tick())
            for h in range(hosts):
                started = tick()
                status = STATUSES[(p * tasks + k + h) % len(STATUSES)]
                body = {"task_uuid": task_uuid, "play_uuid": play_uuid, "host": f"host{h}", "status": status,
                        "changed": (k + h) % 2 == 0 and status == "ok", "ignore_errors": status == "failed" and h == 0,
                        "started": started, "ended": tick(),
                        "content": {"msg": f"{name} on host{h}", "n": len(results)}}
                ev = writer.append(run_id, "result", body, spool_dir=spool_dir, ts=body["ended"])
                results.append({**ev["result"], "task_name": name, "seq": ev["seq"]})
            writer.append(run_id, "task_end", {"uuid": task_uuid, "status": "completed"},
                          spool_dir=spool_dir, ts=tick())
        writer.append(run_id, "play_end", {"uuid": play_uuid, "status": "completed"}, spool_dir=spool_dir, ts=tick())
    if end:
        writer.append(run_id, "host_stats", {f"host{h}": {"ok": tasks, "changed": 1, "failed": 0, "skipped": 0,
                                                            "unreachable": 0} for h in range(hosts)},
                      spool_dir=spool_dir, ts=tick())
        writer.append(run_id, "run_end", {"status": end}, spool_dir=spool_dir, ts=tick())
    return results


def emit_events(spool_dir: Path, run_id: str, n: int, hosts: int = 3) -> list[dict[str, Any]]:
    """n explicit events (the seed's payload) over `hosts` hosts; return them as spooled."""
    out = []
    for i in range(n):
        ev = writer.append(run_id, "event", {"task": f"step {i % 7}", "status": "ok" if i % 5 else "failed",
                                             "host": f"h{i % hosts}", "duration": 0.25,
                                             "details": {"i": i, "message": "task finished"}},
                           spool_dir=spool_dir)
        out.append(ev)
    return out
