"""The Ansible side, continued: the collection by FQCN, secrets, and ansible-playbook killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from ara_spool.spool.reader import read_lines

from tests.ansible_run import BIN, ansible_env, playbook_cmd, run_playbook, wait_for_task_start

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-SECRET-4f9a1c"
PASSWORD = "pw-SECRET-77e2b0"


@pytest.mark.ansible_matrix
def test_collection_by_fqcn(tmp_path, spool_dir, ara_server, ara):
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT / "handlers"), "--output-path",
                    str(tmp_path)], check=True, capture_output=True)
    [tarball] = tmp_path.glob("ara_spool-spool-*.tar.gz")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(tmp_path / "coll"), str(tarball)],
                   check=True, capture_output=True)
    env = ansible_env(tmp_path, spool_dir, ara_server.url)
    for name in ("ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_ACTION_PLUGINS", "ANSIBLE_ROLES_PATH"):
        env.pop(name)
    env.update(ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "coll"), ANSIBLE_CALLBACKS_ENABLED="ara_spool.spool.ara_spool")
    run_id = f"coll-{uuid.uuid4()}"
    proc = run_playbook(env, "collection.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pb = ara.playbook_for(run_id)
    assert pb["status"] == "completed"
    tasks = {t["id"]: t["name"] for t in ara.all("tasks", playbook=pb["id"])}
    names = [tasks[r["task"]] for r in ara.results(pb["id"])]
    assert names.count("a task") == 3 and names.count("pr_status_check") == 3


@pytest.mark.ansible_matrix
def test_secrets_never_reach_spool_argv_logs_or_output(tmp_path, spool_dir, ara_server, ara):
    secret_vars = tmp_path / "secret.yml"
    secret_vars.write_text(f"ara_api_token: {TOKEN}\n")
    env = ansible_env(tmp_path, spool_dir, ara_server.url, ARA_API_USERNAME="ara", ARA_API_PASSWORD=PASSWORD)
    run_id = f"sec-{uuid.uuid4()}"
    proc = subprocess.Popen(playbook_cmd("secrets.yml", "-vvvv", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}",
                                         "-e", f"@{secret_vars}"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cmdlines = []
    while proc.poll() is None:  # every process we start, while it runs
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                except OSError:
                    pass
        time.sleep(0.05)
    out = proc.stdout.read()
    assert proc.returncode == 0, out
    assert any("ara_spool.flusher" in c and run_id in c for c in cmdlines), "the background flusher was not seen"
    leaks = [c for c in cmdlines if TOKEN in c or PASSWORD in c]
    assert not leaks
    assert TOKEN not in out and PASSWORD not in out
    for f in spool_dir.iterdir():
        data = f.read_bytes()
        assert TOKEN.encode() not in data and PASSWORD.encode() not in data, f
    # The token was used: the run is in Ara (Bearer is ignored by an open Ara, as a proxy would take it).
    assert ara.playbook_for(run_id)["status"] == "completed"


@pytest.mark.ansible_matrix
def test_ansible_playbook_killed_loses_nothing_spooled(tmp_path, spool_dir, ara_server, ara, cli_env):
    env = ansible_env(tmp_path, spool_dir, ara_server.url)
    run_id = f"kill-{uuid.uuid4()}"
    proc = subprocess.Popen(playbook_cmd("slow.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spool = spool_dir / f"{run_id}.jsonl"
    wait_for_task_start(spool, "long")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-KILL", "-f", "^sleep 67$"], check=False)  # the orphaned worker's command
    # Its background flusher notices the run's process is gone, ships what is spooled, and exits.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", f"ara_spool.flusher .*{run_id}"],
                                                         capture_output=True).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", f"ara_spool.flusher .*{run_id}"], capture_output=True).returncode != 0
    flush = subprocess.run([str(BIN / "ara-spool"), "flush", "--run", run_id, "--timeout", "30"], env=cli_env,
                           capture_output=True, text=True)
    assert flush.returncode == 0, flush.stderr
    spooled = [ln.event for ln in read_lines(spool) if ln.event and ln.event["kind"] == "result"]
    pb = ara.playbook_for(run_id)
    results = ara.results(pb["id"])
    assert len(results) == len(spooled) == 4  # the role's register step and "quick" on 3 hosts, once each
    # Its flusher recorded the run's end for it: expired, as Ara marks interrupted runs.
    assert pb["status"] == "expired"
    assert [ln.event["end"]["status"] for ln in read_lines(spool) if ln.event["kind"] == "run_end"] == ["expired"]


def test_a_read_only_spool_dir_never_claims_events_are_kept(tmp_path, ara_server):
    """The spool dir on a read-only file system (a real ro tmpfs): the play ends as without
    ara-spool, and what it says is true: nothing spooled, no "events stay spooled"."""
    ro = tmp_path / "ro-spool"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,mode=0700,size=64k", "tmpfs", str(ro)], check=True)
    try:
        env = ansible_env(tmp_path, ro, ara_server.url)
        plain = run_playbook(dict(env), "end_play.yml")
        proc = run_playbook(env, "end_play.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id=ro-{uuid.uuid4()}")
        files = list(ro.iterdir())
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == plain.returncode == 0, out
    # The play's own tasks end as without ara-spool (web1 also runs the role's register step).
    def recap(stdout: str) -> list[list[str]]:
        return [ln.split() for ln in stdout.split("PLAY RECAP")[1].splitlines() if ln.startswith(("web2", "web3"))]
    assert recap(proc.stdout) == recap(plain.stdout) and len(recap(plain.stdout)) == 2
    assert proc.stdout.split("TASK [before]")[1].split("PLAY RECAP")[0] == \
        plain.stdout.split("TASK [before]")[1].split("PLAY RECAP")[0]
    assert "Read-only file system" in out and "nothing of this run is spooled" in out, out
    assert "nothing could be spooled either" in out and "could not be spooled" in out, out
    assert "events stay spooled" not in out and "earlier events are kept" not in out, out
    assert files == []


def test_spool_full_warns_and_the_play_goes_on(tmp_path, spool_dir, ara_server):
    """A refused append (here the size cap with the refuse policy, as ENOSPC) never breaks the play."""
    env = ansible_env(tmp_path, spool_dir, ara_server.url, ARA_SPOOL_MAX_BYTES="3000",
                      ARA_SPOOL_FULL_POLICY="refuse", ARA_SPOOL_FLUSHER="false")
    run_id = f"full-{uuid.uuid4()}"
    proc = run_playbook(env, "end_play.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "cannot write the spool" in out and "could not be spooled" in out
    lines = list(read_lines(spool_dir / f"{run_id}.jsonl"))
    assert lines and all(ln.event is not None for ln in lines)  # what was written is whole
    assert (spool_dir / f"{run_id}.jsonl").stat().st_size <= 3000
