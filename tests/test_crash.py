"""SIGKILL the flusher at random moments: after a final flush, every event is in Ara exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid

from ara_spool.spool import writer
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.faultproxy import Rule
from tests.runs import assert_once_in_host_order, emit_events, spool_run

KILLS = 12


def test_sigkill_loop_exactly_once_in_order(cli_env, ara, spool_dir):
    run_a, run_b = "crash-a", "crash-b"
    spooled_a = spool_run(spool_dir, run_a, hosts=10, tasks=40)  # 400 results + tasks, plays, ends
    spooled_b = emit_events(spool_dir, run_b, 300, hosts=10)
    rng = random.Random(1234)
    # Checkpoint rarely, so that each kill leaves a long unrecorded tail to reconcile.
    env = dict(cli_env, ARA_SPOOL_CHECKPOINT_EVERY="40")
    kills = 0
    deadline = time.monotonic() + 240
    while kills < KILLS and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--timeout", "60"],
                                env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.35, 0.8))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if load(RunPaths.of(spool_dir, run_b)).offset >= os.path.getsize(spool_dir / f"{run_b}.jsonl"):
            # The flush outran the kills (a quiet machine): give it more to ship.
            spooled_b += emit_events(spool_dir, run_b, 150, hosts=10)
    assert kills >= 10, f"only {kills} kills landed mid-flush"
    final = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--timeout", "120"], env=env,
                           capture_output=True, text=True)
    assert final.returncode == 0, final.stderr

    # The window is on (16 in flight, 10 hosts): exactly once, and per host in spool order.
    assert_once_in_host_order(ara, run_a, [(r["host"], r["started"]) for r in spooled_a], key="started")
    assert_once_in_host_order(ara, run_b, [(e["event"]["host"], e["ts"]) for e in spooled_b], key="ended")
    pb_a = ara.playbook_for(run_a)
    assert pb_a["status"] == "completed"
    assert len(ara.all("tasks", playbook=pb_a["id"])) == 40
    assert len(ara.all("plays", playbook=pb_a["id"])) == 1
    assert len(ara.all("hosts", playbook=pb_a["id"])) == 10
    print(f"kills={kills}")


def _result(spool_dir, run_id, task_uuid, play_uuid, host, started, msg):
    body = {"task_uuid": task_uuid, "play_uuid": play_uuid, "host": host, "status": "ok", "changed": False,
            "ignore_errors": False, "started": started, "ended": started, "content": {"msg": msg}}
    return writer.append(run_id, "result", body, spool_dir=spool_dir, ts=started)


async def test_a_kill_while_a_result_committed_early_is_in_flight_does_not_double_it(cli_env, ara, spool_dir,
                                                                                     proxy):
    """Ara numbers results in commit order, not spool order: host1's result j, committed while it
    hangs in flight, has a lower id than host0's result i, sent later (behind a slow one) and
    answered. The checkpoint's lookup floor must stay below j: with the highest id below the
    low-water mark as the floor (i's), the flusher after a SIGKILL did not find j and sent it
    again."""
    run_id = "floor-1"
    play = str(uuid.uuid4())
    writer.append(run_id, "run_start", {"path": "/srv/floor.yml", "name": "floor", "ansible_version": "2.19.0"},
                  spool_dir=spool_dir)
    writer.append(run_id, "play_start", {"uuid": play, "name": "p"}, spool_dir=spool_dir)
    spooled = []
    for n, (host, name) in enumerate([("host0", "k-slow"), ("host0", "i-behind-k"), ("host1", "j-hangs")]):
        task = str(uuid.uuid4())
        writer.append(run_id, "task_start", {"uuid": task, "name": f"t{n}", "action": "debug",
                                             "path": "/srv/floor.yml", "lineno": n, "handler": False,
                                             "play_uuid": play}, spool_dir=spool_dir)
        spooled.append(_result(spool_dir, run_id, task, play, host, f"2026-01-01T00:00:0{n}.000000+00:00", name))
        writer.append(run_id, "task_end", {"uuid": task, "status": "completed"}, spool_dir=spool_dir)
    j_offset = spooled[2]["seq"]
    # k is answered after 0.5 s; j is committed at once and answered after 30 s; i goes once k is
    # answered, so Ara numbers it after j.
    proxy.rules = [Rule("delay", "POST", "/api/v1/results", contains="k-slow", seconds=0.5),
                   Rule("delay", "POST", "/api/v1/results", contains="j-hangs", seconds=30)]
    env = dict(cli_env, ARA_API_SERVER=proxy.url, ARA_SPOOL_CHECKPOINT_EVERY="1", ARA_SPOOL_WINDOW="4")
    proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id],
                            env=env, stderr=subprocess.DEVNULL)
    paths = RunPaths.of(spool_dir, run_id)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until k and i are answered: the low-water mark is at j
            if paths.state.exists() and load(paths).offset >= j_offset:
                break
            await asyncio.sleep(0.05)
        assert load(paths).offset == j_offset, proxy.log
        assert proxy.count("POST", "/api/v1/results") == 3
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    proxy.rules = []  # the same Ara at the same URL: this checkpoint's floor is what decides
    final = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ara_spool.flusher", "flush", "--run",
                                                     run_id, "--timeout", "60"],
                                    env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert "no checkpoint for this Ara" not in final.stderr
    assert_once_in_host_order(ara, run_id, [(r["result"]["host"], r["result"]["started"]) for r in spooled],
                              key="started")
