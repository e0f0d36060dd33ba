"""SIGKILL the flusher at random moments: after a final flush, every event is in Ara exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

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
