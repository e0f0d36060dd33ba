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


def test_a_slow_basic_auth_ara_has_the_whole_run_at_ansible_exit(tmp_path, spool_dir, ara, ara_server):
    import subprocess

    gate = AuthGate(ara_server.url, free_port()).start()
    gate.accept = {basic("ansible", "s3cret")}
    gate.delay, gate.serial = 0.2, True  # HOSTS PATCHes of host_stats: 2.4 s with no line done
    try:
        inv = tmp_path / "hosts.ini"
        names = "\n".join(f"h{i}" for i in range(HOSTS))
        inv.write_text(f"[all]\n{names}\n[all:vars]\nansible_connection=local\n")
        book = tmp_path / "one.yml"
        book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: hello\n"
                        "      ansible.builtin.debug: {msg: hi}\n")
        env = ansible_env(tmp_path, spool_dir, gate.url, ARA_API_USERNAME="ansible", ARA_API_PASSWORD="s3cret",
                          ANSIBLE_FORKS="12")
        run_id = f"slow-auth-{time.time_ns()}"
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(book), "-e", "ara_enabled=true",
                               "-e", f"ara_run_id={run_id}"], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "not in Ara yet" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert gate.seen["ok Basic"] > 2 * HOSTS and not gate.seen["refused Basic"], gate.seen
        # No flush after exit: what Ara holds now is what the run left there.
        pb = ara.playbook_for(run_id)
        assert pb["status"] == "completed", pb["status"]
        hosts = ara.all("hosts", playbook=pb["id"])
        assert len(hosts) == HOSTS and all(h["ok"] == 1 for h in hosts), [(h["name"], h["ok"]) for h in hosts]
        assert len(ara.results(pb["id"])) == HOSTS
        st = load(RunPaths.of(spool_dir, run_id))
        assert st.ended and st.answered >= 3 * HOSTS
    finally:
        gate.close()
