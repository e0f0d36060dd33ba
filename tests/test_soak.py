"""Kill loop and concurrent flushers against a real Ara: nothing lost, nothing doubled, order kept.

The default run is short (25 SIGKILLs over a 600-result run, < 60 s). The long soak (>= 100 SIGKILLs
over a 2100-result run on 5 hosts, a few minutes) runs only with ARA_SPOOL_SOAK=1:

    ARA_SPOOL_SOAK=1 .venv/bin/pytest -q -s tests/test_soak.py -k kill_loop_soak
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ara_spool.flusher.verify import verify
from ara_spool.spool import schema, writer
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load, read_state_quiet

from tests.runs import assert_once_in_host_order, emit_events, iso, spool_run

SOAK = os.environ.get("ARA_SPOOL_SOAK", "") == "1"


def _grow_run(spool_dir: Path, run_id: str, hosts: int, tasks: int, t0: datetime, first: int,
              ) -> list[tuple[str, str]]:
    """Append tasks first..first+tasks-1 of run_id (task_start, one result per host, task_end);
    return the results' (host, `started`) in spool order. Times are derived from the task number, so each
    result's start instant is unique in the run."""
    play_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/play"))
    out = []
    for k in range(first, first + tasks):
        task_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/task/{k}"))
        base = t0 + timedelta(seconds=k)
        writer.append(run_id, "task_start", {"uuid": task_uuid, "name": f"task {k}", "action": "command",
                                             "path": "/srv/soak.yml", "lineno": k, "play_uuid": play_uuid},
                      spool_dir=spool_dir, ts=iso(base))
        for h in range(hosts):
            started = iso(base + timedelta(milliseconds=10 * h + 1))
            ended = iso(base + timedelta(milliseconds=10 * h + 5))
            writer.append(run_id, "result", {"task_uuid": task_uuid, "play_uuid": play_uuid, "host": f"node{h}",
                                             "status": "ok" if (k + h) % 9 else "failed", "changed": h % 2 == 0,
                                             "started": started, "ended": ended,
                                             "content": {"k": k, "h": h, "stdout": "x" * (k % 200)}},
                          spool_dir=spool_dir, ts=started)
            out.append((f"node{h}", started))
        writer.append(run_id, "task_end", {"uuid": task_uuid, "status": "completed"}, spool_dir=spool_dir,
                      ts=iso(base + timedelta(milliseconds=900)))
    return out


def kill_loop(spool_dir: Path, env: dict[str, str], ara, *, kills_wanted: int, hosts: int, tasks: int,
              seed: int, budget: float) -> dict[str, float]:
    """Grow a run while flushers are SIGKILLed at random moments; then one clean flush; check Ara."""
    rng = random.Random(seed)
    run_id, side_run = f"soak-{seed}-{kills_wanted}", f"soak-side-{seed}-{kills_wanted}"
    t0 = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=seed % 1000)
    writer.append(run_id, "run_start", {"path": "/srv/soak.yml", "ansible_version": "2.19.14", "name": run_id},
                  spool_dir=spool_dir, ts=iso(t0))
    writer.append(run_id, "play_start", {"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/play")),
                                         "name": "soak"}, spool_dir=spool_dir, ts=iso(t0))
    side = emit_events(spool_dir, side_run, 100, hosts=3)  # a second run shipped by the same flushers
    want: list[str] = []
    chunk = max(1, -(-tasks // kills_wanted))  # grow the run across the whole loop
    kills = mid_flush = spawned = 0
    t_start = time.monotonic()
    while kills < kills_wanted:
        assert time.monotonic() - t_start < budget, f"only {kills} kills in {budget}s"
        if len(want) < tasks * hosts:
            n = min(chunk, tasks - len(want) // hosts)
            want += _grow_run(spool_dir, run_id, hosts, n, t0, len(want) // hosts)
            if len(want) == tasks * hosts:
                writer.append(run_id, "play_end", {"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/play")),
                                                   "status": "completed"}, spool_dir=spool_dir)
                writer.append(run_id, "run_end", {"status": "completed"}, spool_dir=spool_dir)
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--timeout", "60"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spawned += 1
        # Random moments: during start-up, mid-request, between checkpoints.
        time.sleep(rng.uniform(0.05, 1.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
            st = read_state_quiet(RunPaths.of(spool_dir, run_id))
            mid_flush += st is not None and not st.clean  # killed while it held the run
        proc.wait()
    final = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--timeout", "300"], env=env,
                           capture_output=True, text=True)
    assert final.returncode == 0, final.stderr

    pb = ara.playbook_for(run_id)
    results = ara.results(pb["id"])
    got = [schema.parse_time(r["started"]) for r in results]
    wanted = [schema.parse_time(w) for _, w in want]
    lost = len(set(wanted) - set(got))
    doubled = len(got) - len(set(got))
    assert lost == 0 and doubled == 0, f"lost {lost}, doubled {doubled}"
    assert_once_in_host_order(ara, run_id, want, key="started")  # per host, by id: spool order
    assert pb["status"] == "completed"
    assert len(ara.all("tasks", playbook=pb["id"])) == tasks
    assert len(ara.all("plays", playbook=pb["id"])) == 1
    assert len(ara.all("hosts", playbook=pb["id"])) == hosts
    assert_once_in_host_order(ara, side_run, [(e["event"]["host"], e["ts"]) for e in side])
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.clean and st.ended and st.quarantined == 0
    assert st.offset == os.path.getsize(spool_dir / f"{run_id}.jsonl")
    # verify agrees: spool well-formed, state at the end, Ara holds what the state says was shipped.
    from ara_spool.flusher.config import Config
    report, ok = verify(Config(server=env["ARA_API_SERVER"], spool_dir=spool_dir), [run_id, side_run])
    assert ok, [r["summary"] for r in report]
    figures = {"kills": kills, "kills_mid_flush": mid_flush, "flushers": spawned, "results": len(want),
               "events": sum(1 for _ in open(spool_dir / f"{run_id}.jsonl", "rb")) + len(side),
               "lost": lost, "doubled": doubled, "seconds": round(time.monotonic() - t_start, 1)}
    print(f"kill loop figures: {figures}")
    return figures


def _env(cli_env: dict[str, str]) -> dict[str, str]:
    # Checkpoint rarely: each kill leaves a long unrecorded tail to reconcile.
    return dict(cli_env, ARA_SPOOL_CHECKPOINT_EVERY="40", ARA_API_TIMEOUT="10")


def test_kill_loop_short(cli_env, ara, spool_dir):
    """25 SIGKILLs at random moments while a 600-result run on 4 hosts grows."""
    figures = kill_loop(spool_dir, _env(cli_env), ara, kills_wanted=25, hosts=4, tasks=150, seed=7, budget=90)
    assert figures["kills_mid_flush"] >= 5, figures


@pytest.mark.slow
@pytest.mark.skipif(not SOAK, reason="long soak (>= 100 SIGKILLs, >= 2000 events): set ARA_SPOOL_SOAK=1 to run it")
def test_kill_loop_soak(cli_env, ara, spool_dir):
    """>= 100 SIGKILLs at random moments while a 2100-result run on 5 hosts grows."""
    seed = int(os.environ.get("ARA_SPOOL_SOAK_SEED", "20260101"))
    figures = kill_loop(spool_dir, _env(cli_env), ara, kills_wanted=120, hosts=5, tasks=420, seed=seed, budget=900)
    assert figures["kills_mid_flush"] >= 30, figures


def test_concurrent_oneshot_flushers_make_no_duplicates(cli_env, ara, spool_dir):
    """Two `flush` processes over all runs plus a third naming two of them, started together."""
    runs = {f"conc-{i}": spool_run(spool_dir, f"conc-{i}", hosts=3, tasks=12) for i in range(3)}
    runs["conc-ev"] = emit_events(spool_dir, "conc-ev", 60, hosts=4)
    env = dict(cli_env, ARA_SPOOL_CONCURRENCY="2")
    cmds = [["flush", "--timeout", "120"], ["flush", "--timeout", "120"],
            ["flush", "--timeout", "120", "--run", "conc-1", "--run", "conc-ev"]]
    procs = [subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", *c], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    for run_id, spooled in runs.items():  # one playbook per run id, each event once, per host in order
        if run_id == "conc-ev":
            assert_once_in_host_order(ara, run_id, [(s["event"]["host"], s["ts"]) for s in spooled])
        else:
            assert_once_in_host_order(ara, run_id, [(s["host"], s["started"]) for s in spooled], key="started")
        st = load(RunPaths.of(spool_dir, run_id))
        assert st.clean and st.offset == os.path.getsize(spool_dir / f"{run_id}.jsonl")
