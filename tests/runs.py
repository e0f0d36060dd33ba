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


def host_of(spooled: dict[str, Any]) -> str:
    """The host of a spooled result (spool_run) or explicit event (emit_events)."""
    return spooled["event"]["host"] if "event" in spooled else spooled["host"]


def per_host(pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for host, value in pairs:
        out.setdefault(host, []).append(value)
    return out


def ara_per_host(ara: Any, run_id: str, key: str = "ended") -> dict[str, list[datetime]]:
    """Ara's results of a run, per host in id order: that host's `key` times."""
    from ara_spool.spool.schema import parse_time

    pb = ara.playbook_for(run_id)
    hosts = {h["id"]: h["name"] for h in ara.all("hosts", playbook=pb["id"])}
    return per_host([(hosts[r["host"]], parse_time(r[key])) for r in ara.results(pb["id"])])


def assert_once_in_host_order(ara: Any, run_id: str, want: list[tuple[str, str]], key: str = "ended") -> None:
    """Every spooled (host, time) is in Ara exactly once, and per host in spool order (Ara's ids
    follow it). Across hosts, a window ships in completion order: not compared."""
    from ara_spool.spool.schema import parse_time

    got = ara_per_host(ara, run_id, key)
    expected = per_host([(h, parse_time(t)) for h, t in want])
    assert sum(map(len, got.values())) == len(want), f"{run_id}: {sum(map(len, got.values()))} results for {len(want)}"
    assert got == expected, f"{run_id}: per-host order differs"
