"""The play never waits on Ara (issue 10): a real 3-play ansible-playbook against Ara up, down
(connection refused) and hanging (accepts, never answers); the events are shipped later, once."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from ara_spool.spool.lock import is_locked
from ara_spool.spool.paths import RunPaths

from tests.ansible_run import ansible_env, run_playbook
from tests.ara import free_port
from tests.test_destinations import Hanging

RESULTS = 15  # 3 plays x 5 debug tasks on localhost


def timed(env, *args):
    t0 = time.monotonic()
    proc = run_playbook(env, "three_plays.yml", *args)
    return time.monotonic() - t0, proc


@pytest.mark.parametrize("mode", ["down", "hanging"])
def test_run_ends_within_seconds_of_the_same_run_unrecorded(mode, tmp_path, spool_dir, ara_server, ara):
    hang = Hanging() if mode == "hanging" else None
    server = hang.url if hang else f"http://127.0.0.1:{free_port()}"
    env = ansible_env(tmp_path, spool_dir, server, ARA_API_TIMEOUT="30")
    run_id = f"wait-{mode}-{uuid.uuid4()}"
    try:
        off, p_off = timed(env, "-e", "ara_enabled=false")
        on, p_on = timed(env, "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    finally:
        if hang:
            hang.close()
    assert p_off.returncode == 0 and p_on.returncode == 0, p_on.stdout + p_on.stderr
    print(f"{mode}: off {off:.1f}s, recording {on:.1f}s")
    assert on - off < 4.0, f"recording against an Ara {mode} took {on:.1f}s, {off:.1f}s without"
    out = " ".join((p_on.stdout + p_on.stderr).split())
    assert "event(s) not in Ara yet" in out and f"--server {server}" in out, out[-2000:]
    # The events wait in the spool; shipped later to the real Ara, each arrives once.
    paths = RunPaths.of(spool_dir, run_id)
    deadline = time.monotonic() + 10
    while is_locked(paths) and time.monotonic() < deadline:
        time.sleep(0.1)  # the stopped in-play flusher saves its checkpoint and lets go
    flush = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id,
                            "--server", ara_server.url], env=env, capture_output=True, text=True, timeout=120)
    assert flush.returncode == 0, flush.stderr
    pb = ara.playbook_for(run_id)
    assert len(ara.results(pb["id"])) == RESULTS and pb["status"] == "completed"


def test_run_with_ara_up_is_in_ara_when_it_ends(tmp_path, spool_dir, ara_server, ara):
    env = ansible_env(tmp_path, spool_dir, ara_server.url)
    run_id = f"wait-up-{uuid.uuid4()}"
    off, p_off = timed(env, "-e", "ara_enabled=false")
    on, p_on = timed(env, "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    assert p_off.returncode == 0 and p_on.returncode == 0, p_on.stdout + p_on.stderr
    print(f"up: off {off:.1f}s, recording {on:.1f}s")
    assert "not in Ara yet" not in p_on.stdout + p_on.stderr
    pb = ara.playbook_for(run_id)
    assert len(ara.results(pb["id"])) == RESULTS and pb["status"] == "completed"
