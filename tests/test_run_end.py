"""The run's end waits while Ara answers, however slowly: a real ansible-playbook against a real Ara
behind a Basic-auth gate that answers one request at a time (an Ara spending its CPU on password
hashes, 2-4 requests a second). It gave up after 1.5 s while Ara was still answering: one
host_stats line is a PATCH per host, and the low-water mark does not move until all are answered."""

from __future__ import annotations

import time

from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.ansible_run import BIN, ansible_env
from tests.ara import free_port
from tests.authgate import AuthGate, basic

HOSTS = 12


def _playbook(tmp_path, hosts: int):
    inv = tmp_path / "hosts.ini"
    names = "\n".join(f"h{i}" for i in range(hosts))
    inv.write_text(f"[all]\n{names}\n[all:vars]\nansible_connection=local\n")
    book = tmp_path / "one.yml"
    book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: hello\n"
                    "      ansible.builtin.debug: {msg: hi}\n")
    return inv, book


def _run(env, inv, book, run_id):
    import subprocess

    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(book), "-e", "ara_enabled=true",
                           "-e", f"ara_run_id={run_id}"], env=env, capture_output=True, text=True, timeout=300)


def _complete_at_exit(ara, spool_dir, run_id, proc, hosts):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "not in Ara yet" not in out, out[-3000:]
    # No flush after exit: what Ara holds now is what the run left there.
    pb = ara.playbook_for(run_id)
    assert pb["status"] == "completed", pb["status"]
    rows = ara.all("hosts", playbook=pb["id"])
    assert len(rows) == hosts and all(h["ok"] == 1 for h in rows), [(h["name"], h["ok"]) for h in rows if h["ok"] != 1]
    assert len(ara.results(pb["id"])) == hosts
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.ended and st.answered >= 3 * hosts, st.answered  # every answer counted (progress)
    return st


def test_a_slow_basic_auth_ara_has_the_whole_run_at_ansible_exit(tmp_path, spool_dir, ara, ara_server):
    gate = AuthGate(ara_server.url, free_port()).start()
    gate.accept = {basic("ansible", "s3cret")}
    gate.delay, gate.serial = 0.2, True  # HOSTS PATCHes of host_stats: 2.4 s with no line done
    try:
        inv, book = _playbook(tmp_path, HOSTS)
        env = ansible_env(tmp_path, spool_dir, gate.url, ARA_API_USERNAME="ansible", ARA_API_PASSWORD="s3cret",
                          ANSIBLE_FORKS="12")
        run_id = f"slow-auth-{time.time_ns()}"
        proc = _run(env, inv, book, run_id)
        assert gate.seen["ok Basic"] > 2 * HOSTS and not gate.seen["refused Basic"], gate.seen
        _complete_at_exit(ara, spool_dir, run_id, proc, HOSTS)
    finally:
        gate.close()


def test_200_hosts_forks_50_complete_at_ansible_exit(tmp_path, spool_dir, ara, ara_server):
    """200 hosts (forks 50) against a busy Ara: the play ended "6 event(s) not in Ara yet" with 57
    hosts without counters and the playbook left running: host_stats is 200 PATCHes in one line,
    16 at a time, ~2 s with no line done when each answer takes 0.15 s."""
    gate = AuthGate(ara_server.url, free_port()).start()
    gate.accept = {""}  # an open Ara, each answer 0.15 s (side by side)
    gate.delay = 0.15
    try:
        inv, book = _playbook(tmp_path, 200)
        env = ansible_env(tmp_path, spool_dir, gate.url, ANSIBLE_FORKS="50")
        run_id = f"wide-{time.time_ns()}"
        _complete_at_exit(ara, spool_dir, run_id, _run(env, inv, book, run_id), 200)
    finally:
        gate.close()
