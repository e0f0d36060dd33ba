"""A spool shared with a group (ARA_SPOOL_GROUP_SHARED, dir 2770): a second, unprivileged member
of the group plants a FIFO, symlinks, a swapped directory and files of its own. The flusher (run
as root, as the documented system daemon) refuses each with a message naming the file, never
hangs (every command is bounded by a timeout), creates nothing outside the spool dir and nothing
for a refused run, and goes on shipping the other runs. Needs root (useradd): CI runs as root.
"""

from __future__ import annotations

import grp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from ara_spool.spool import writer

from tests.runs import emit_events

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd (CI runs as root)")
BOUND = 30  # seconds any one command may take: a hang fails the test instead of stalling it


@pytest.fixture
def member():
    """(uid, gid of its own group, spool group gid): a new unprivileged user in a new spool group."""
    tag = uuid.uuid4().hex[:8]
    group, user = f"asg{tag}", f"asu{tag}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-U", "-G", group, "-s", "/usr/sbin/nologin", user], check=True)
    try:
        import pwd
        pw = pwd.getpwnam(user)
        yield pw.pw_uid, pw.pw_gid, grp.getgrnam(group).gr_gid
    finally:
        subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)


@pytest.fixture
def area(member):
    """A world-traversable base dir: base/root-only (0700 root), base/team (2770 root:spool group,
    so that a member may rename what is in it) holding the shared spool base/team/spool."""
    _, _, sgid = member
    base = Path(tempfile.mkdtemp(prefix="ara-shared-"))
    os.chmod(base, 0o711)
    root_only = base / "root-only"
    root_only.mkdir(mode=0o700)
    team = base / "team"
    spool = team / "spool"
    for d in (team, spool):
        d.mkdir()
        os.chown(d, 0, sgid)
        os.chmod(d, 0o2770)
    yield base, root_only, spool
    shutil.rmtree(base, ignore_errors=True)


def as_member(member, script: str, stdin: bytes = b"") -> None:
    """Run a shell script as the member (its own uid and group, plus the spool group)."""
    uid, gid, sgid = member
    subprocess.run(["/bin/sh", "-ec", f"umask 007; {script}"], input=stdin, user=uid, group=gid,
                   extra_groups=[sgid], check=True, timeout=BOUND)


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_ino, p.lstat().st_size) for p in d.rglob("*")}


def line(run_id: str) -> bytes:
    """One valid spool line of run_id (what `ara-spool emit` would append)."""
    from ara_spool.spool import schema

    ev = schema.make_event(run_id, "event", {"task": "t", "status": "ok", "host": "h1"})
    ev["seq"] = 0
    return writer.encode(ev)


def ara_spool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], env=env, capture_output=True,
                          text=True, timeout=BOUND)


def test_group_member_cannot_stop_redirect_or_plant(member, area, cli_env, ara, monkeypatch):
    base, root_only, spool = area
    uid, own_gid, _ = member
    env = dict(cli_env, ARA_SPOOL_DIR=str(spool), ARA_SPOOL_GROUP_SHARED="true")
    monkeypatch.setenv("ARA_SPOOL_GROUP_SHARED", "true")
    (root_only / "keep").write_text("root's")
    outside = snapshot(root_only)

    # The member's attacks, each with one valid event so that the run is listed.
    s = str(spool)
    as_member(member, f"mkfifo {s}/fifo.state; cat > {s}/fifo.jsonl", line("fifo"))
    as_member(member, f"ln -s {root_only}/planted {s}/link.state; cat > {s}/link.jsonl", line("link"))
    as_member(member, f"ln -s {root_only}/planted {s}/lk.lock; cat > {s}/lk.jsonl", line("lk"))
    as_member(member, f"cat > {s}/own.jsonl; chgrp {own_gid} {s}/own.jsonl", line("own"))
    as_member(member, f"cat > {s}/ww.jsonl; chmod 666 {s}/ww.jsonl", line("ww"))
    as_member(member, f"mkfifo {s}/pipe.jsonl")  # a FIFO as a spool file: never listed, never opened
    refused = {"fifo": "fifo.state is a FIFO", "link": "link.state is a symlink", "lk": "lk.lock is a symlink",
               "own": f"own.jsonl is in group {own_gid}", "ww": "ww.jsonl is writable by others"}
    emit_events(spool, "good-1", 6, hosts=2)  # a run of root's own, in the same spool

    # Each refused run: a message naming the file, no hang, nothing created for it.
    before = set(os.listdir(spool))
    for run_id, message in refused.items():
        t0 = time.monotonic()
        out = ara_spool(env, "flush", "--run", run_id, "--timeout", "10")
        assert out.returncode != 0 and message in out.stderr, (run_id, out.stderr)
        assert time.monotonic() - t0 < BOUND
    status = ara_spool(env, "status")
    assert status.returncode == 0, status.stderr
    assert set(os.listdir(spool)) == before, "something was created for a refused run"

    # The other runs go on: one flush of every run ships good-1 and refuses the planted ones.
    out = ara_spool(env, "flush", "--timeout", "20")
    assert ara.playbooks_for("good-1"), out.stdout + out.stderr
    assert len(ara.results(ara.playbook_for("good-1")["id"])) == 6, out.stderr
    for message in refused.values():
        assert message in out.stderr

    # The daemon: a new run ships while the plants stay; SIGTERM stops it at once.
    log = base / "daemon.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "--follow", "--poll", "0.2"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        emit_events(spool, "good-2", 4, hosts=1)
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline and not ara.playbooks_for("good-2"):
            time.sleep(0.3)
        while time.monotonic() < deadline and len(ara.results(ara.playbook_for("good-2")["id"])) < 4:
            time.sleep(0.3)
        assert len(ara.results(ara.playbook_for("good-2")["id"])) == 4, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    text = log.read_text()
    assert "fifo.state is a FIFO" in text, text
    assert snapshot(root_only) == outside, "something was written outside the spool dir"
    for run_id in refused:
        assert not (spool / f"{run_id}.state").exists() or run_id in ("fifo", "link")
        assert run_id == "lk" or not (spool / f"{run_id}.lock").exists()


def test_swapped_spool_dir_is_refused(member, area, cli_env):
    base, root_only, spool = area
    env = dict(cli_env, ARA_SPOOL_DIR=str(spool), ARA_SPOOL_GROUP_SHARED="true")
    os.environ["ARA_SPOOL_GROUP_SHARED"] = "true"
    try:
        emit_events(spool, "victim", 3, hosts=1)
    finally:
        del os.environ["ARA_SPOOL_GROUP_SHARED"]
    outside = snapshot(root_only)
    # The member swaps the spool dir for a symlink to a root-only dir (its parent is the team's).
    as_member(member, f"mv {spool} {spool}.old; ln -s {root_only} {spool}")
    for args in (("flush", "--run", "victim", "--timeout", "10"), ("flush", "--timeout", "10"), ("status",)):
        out = ara_spool(env, *args)
        assert out.returncode != 0 and "is a symlink" in out.stderr, (args, out.stderr)
    assert snapshot(root_only) == outside, "something was created in the swapped-in directory"


def test_retry_command_carries_group_shared(area, monkeypatch):
    """The play's retry command for a group-shared spool works as typed: it sets the setting."""
    from ara_spool.handlers import runtime

    _, _, spool = area
    monkeypatch.delenv("ARA_SPOOL_GROUP_SHARED", raising=False)
    hint = runtime.flush_hint("r1", spool, "http://alice:pw@127.0.0.1:9")
    assert hint.startswith("ARA_SPOOL_GROUP_SHARED=true ara-spool flush --run r1 --server http://127.0.0.1:9 ")
    assert "pw" not in hint.replace("ARA_API_PASSWORD_FILE", "") and "credentials by environment" in hint


def test_a_member_holding_a_spool_lock_does_not_hang_verify_repair(member, area, cli_env, monkeypatch):
    """`verify --repair` cuts a torn tail under the writers' lock: a member who keeps that lock
    gets the run reported as busy within seconds, not a hang."""
    _, _, spool = area
    monkeypatch.setenv("ARA_SPOOL_GROUP_SHARED", "true")
    emit_events(spool, "held", 2, hosts=1)
    with open(spool / "held.jsonl", "ab") as fh:
        fh.write(b'{"v":1,"torn')  # a writer killed mid-line
    uid, gid, sgid = member
    holder = subprocess.Popen(["flock", str(spool / "held.jsonl"), "sleep", "60"], user=uid, group=gid,
                              extra_groups=[sgid], start_new_session=True)
    try:
        time.sleep(0.5)  # the member holds the lock
        env = dict(cli_env, ARA_SPOOL_DIR=str(spool), ARA_SPOOL_GROUP_SHARED="true")
        t0 = time.monotonic()
        out = ara_spool(env, "verify", "--repair", "--run", "held")
        assert time.monotonic() - t0 < 15
        assert "torn tail not repaired" in out.stdout + out.stderr, out
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep: the group this test started
        holder.wait()
