"""Disk full (ENOSPC) on a small tmpfs: the writer fails clearly, keeps earlier lines and leaves
no torn line; a flusher that cannot checkpoint pauses (and says why) and goes on when space frees;
checkpoint writes are all or nothing; a real play that fills the disk still ends in Ara.

Needs `mount -t tmpfs` (root, as in CI); where mounting is not allowed, the writer's os.write is
made to fail with ENOSPC after a short write instead, which is what a full disk does.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.spool import writer
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.process import process_identity
from ara_spool.spool.reader import read_lines, tail_info
from ara_spool.spool.state import RunState, load, save

from tests.ansible_run import PLAYBOOKS, ansible_env, playbook_cmd
from tests.runs import per_host

BIG = "d" * 6000  # each event ~6 KB: a few dozen fill the 256 KiB tmpfs


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(dir on a 256 KiB tmpfs, fill(), free()). fill() leaves < 16 KiB; free() gives it back."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    filler = mnt / "filler"
    state = {"full": False}

    def fill() -> None:
        if mounted:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                while True:
                    os.write(fd, b"f" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
            # Leave 3 pages, so that a spool line gets partly written, as on a real full disk.
            with open(filler, "rb+") as fh:
                fh.truncate(max(0, os.path.getsize(filler) - 3 * 4096))
        state["full"] = True

    def free() -> None:
        filler.unlink(missing_ok=True)
        state["full"] = False

    if not mounted:
        real_write = os.write

        def fake_write(fd: int, data) -> int:  # a short write, then ENOSPC, like a full disk
            if state["full"] and str(mnt) in os.readlink(f"/proc/self/fd/{fd}"):
                if len(data) > 1000 and not state.get("short"):
                    state["short"] = True
                    return real_write(fd, bytes(data[:700]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", fake_write)
    yield mnt, fill, free, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_is_a_pause_no_torn_line_no_temp_file(small_disk, cfg, ara, caplog):
    mnt, fill, free, mounted = small_disk
    spool_dir = mnt / "spool"
    run_id = "enospc-1"
    ok_events = [writer.append(run_id, "event", {"task": "t", "status": "ok", "host": f"h{i % 2}",
                                                  "details": {"i": i}}, spool_dir=spool_dir) for i in range(5)]
    fill()
    err = None
    for i in range(100):
        try:
            ok_events.append(writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h0",
                                                             "details": {"i": 100 + i, "pad": BIG}},
                                           spool_dir=spool_dir))
        except OSError as exc:
            err = exc
            break
    assert err is not None and err.errno == errno.ENOSPC, "the disk never filled"
    assert "No space left" in str(err)
    # Every line appended before the failure is intact; the failed one left nothing (its part
    # written, a short write, was taken back): no torn line to quarantine later.
    spool = spool_dir / f"{run_id}.jsonl"
    lines = list(read_lines(spool))
    assert [ln.event["seq"] for ln in lines if ln.event] == [e["seq"] for e in ok_events]
    assert all(ln.event is not None for ln in lines)
    assert tail_info(spool)[1] == 0
    # Still full: the flusher cannot checkpoint, so it pauses (and says why), and goes on once space frees.
    fcfg = Config(server=cfg.server, spool_dir=spool_dir, timeout=30, max_backoff=0.3)
    asyncio.get_running_loop().call_later(2.5, free)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ara_spool.shipper"):
        [outcome] = await oneshot.flush(fcfg, [run_id], timeout=30)
    assert outcome.status == "done" and outcome.quarantined == 0, outcome
    assert time.monotonic() - t0 >= 2.0, "the flusher did not wait for space"
    assert "spool disk full" in caplog.text and "it has space again" in caplog.text, caplog.text
    results = ara.results(ara.playbook_for(run_id)["id"])
    assert len(results) == len(ok_events)
    hosts = {h["id"]: h["name"] for h in ara.all("hosts", playbook=ara.playbook_for(run_id)["id"])}
    got = per_host([(hosts[r["host"]], ara.result(r["id"])["content"]["i"]) for r in results])
    assert got == per_host([(e["event"]["host"], e["event"]["details"]["i"]) for e in ok_events])
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.offset == spool.stat().st_size and st.clean
    assert not [p.name for p in spool_dir.iterdir() if ".tmp" in p.name], "a temp file was left"
    print(f"ENOSPC via {'tmpfs' if mounted else 'injected os.write'}: {len(ok_events)} events, "
          f"flusher paused {time.monotonic() - t0:.1f}s")


async def test_quarantine_on_a_full_disk_is_a_pause(tmp_path, cfg, ara, caplog, monkeypatch):
    """A bad line met while the disk is full: its quarantine record waits for space (a short write
    then ENOSPC on the quarantine file, injected), then lands whole, once; the good lines ship."""
    spool_dir = tmp_path / "spool"
    run_id = "enospc-q"
    good = [writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h0", "details": {"i": i}},
                          spool_dir=spool_dir) for i in range(3)]
    with open(spool_dir / f"{run_id}.jsonl", "ab") as fh:
        fh.write(b"not json at all\n")
    good += [writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h0", "details": {"i": i}},
                           spool_dir=spool_dir) for i in range(3, 5)]
    full = {"on": True, "short": False, "refused": 0}
    real_write = os.write

    def fake_write(fd: int, data) -> int:
        if full["on"] and os.readlink(f"/proc/self/fd/{fd}").endswith(".rejected.jsonl"):
            if not full["short"]:
                full["short"] = True
                return real_write(fd, bytes(data[:10]))
            full["refused"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)
    asyncio.get_running_loop().call_later(2.0, lambda: full.update(on=False))
    fcfg = Config(server=cfg.server, spool_dir=spool_dir, timeout=30, max_backoff=0.3)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ara_spool.shipper"):
        [outcome] = await oneshot.flush(fcfg, [run_id], timeout=30)
    assert outcome.status == "done" and outcome.quarantined == 1, outcome
    assert full["refused"] >= 1 and time.monotonic() - t0 >= 1.5, "the flusher did not wait for space"
    assert "cannot quarantine a line" in caplog.text and "it has space again" in caplog.text, caplog.text
    [record] = (spool_dir / f"{run_id}.rejected.jsonl").read_text().splitlines()  # no torn record
    assert json.loads(record)["raw"] == "not json at all"
    assert len(ara.results(ara.playbook_for(run_id)["id"])) == len(good)


def test_checkpoint_write_is_all_or_nothing(tmp_path, monkeypatch):
    """A short write then ENOSPC in the checkpoint: the old checkpoint stays whole, the error is
    raised, no temp file is left."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    paths = RunPaths.of(spool_dir, "ckpt")
    st = RunState("ckpt", dest="x", offset=10, shipped=3)
    save(paths, st)
    real_write = os.write

    def short_then_full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp" + str(os.getpid())):
            if len(data) > 10:
                return real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_then_full)
    st.offset, st.shipped = 9999, 300
    with pytest.raises(OSError, match="No space left"):
        save(paths, st)
    monkeypatch.undo()
    again = load(paths, "x")
    assert (again.offset, again.shipped) == (10, 3)
    assert sorted(p.name for p in spool_dir.iterdir()) == ["ckpt.state"]


FILL_PLAY = """
- name: fills the disk
  hosts: web
  gather_facts: false
  roles: [ara_spool]
  tasks:
    - name: before
      ansible.builtin.debug:
        msg: "before {{ inventory_hostname }}"
    - name: fill the disk
      # Then fill the room left in the spool's last page with bytes that are not a line (no newline):
      # nothing more fits, not even the run's short end; they are quarantined once space frees.
      ansible.builtin.shell: |
        dd if=/dev/zero of={{ filler }} bs=4096 2>/dev/null || true
        for n in 2048 1024 512 256 128 64 32 16 8 4 2 1; do
          while head -c $n /dev/zero | tr '\\0' x >> {{ spool }} 2>/dev/null; do :; done
        done
      run_once: true
    - name: after
      ansible.builtin.debug:
        msg: "after {{ inventory_hostname }}"
"""


def _flushers(run_id: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and run_id.encode() in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            pass
    return out


def test_disk_fills_during_a_real_play(tmp_path, ara, ara_server):
    """The disk fills mid-play: the play finishes, its end cannot be spooled; the in-play flusher
    waits for space, then records the run's end (expired: its ansible-playbook is gone) and ships
    every spooled event once; no temp file is left."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs mount -t tmpfs (root, as in CI)")
    try:
        spool_dir, filler = mnt / "spool", mnt / "filler"
        play = tmp_path / "fill.yml"
        play.write_text(FILL_PLAY)
        run_id = f"enospc-play-{uuid.uuid4().hex[:8]}"
        env = ansible_env(tmp_path, spool_dir, ara_server.url, ARA_SPOOL_FLUSH_TIMEOUT="5")
        cmd = playbook_cmd("multi_play.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}",
                           "-e", f"filler={filler}", "-e", f"spool={spool_dir / (run_id + '.jsonl')}")
        cmd[cmd.index(str(PLAYBOOKS / "multi_play.yml"))] = str(play)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "cannot write the spool" in proc.stdout + proc.stderr
        assert ara.playbook_for(run_id)["status"] == "running"  # its end is not in the spool
        assert _flushers(run_id), "the in-play flusher did not wait for space (its last checkpoint)"
        status = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "status", "--run", run_id], env=env,
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and "disk is full" in status.stderr and "pause" in status.stderr, status
        filler.unlink()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (_flushers(run_id) or ara.playbook_for(run_id)["status"] == "running"):
            time.sleep(0.5)
        pb = ara.playbook_for(run_id)
        assert pb["status"] == "expired", pb["status"]
        spooled = [ln.event for ln in read_lines(spool_dir / f"{run_id}.jsonl")
                   if ln.event and ln.event["kind"] == "result"]
        assert len(ara.results(pb["id"])) == len(spooled) >= 3
        log = (spool_dir / f"{run_id}.flusher.log").read_text()
        assert "spool disk full" in log and "recorded the run as expired" in log, log
        assert load(RunPaths.of(spool_dir, run_id)).quarantined == 1  # the filling bytes, nothing else
        assert not [p.name for p in spool_dir.iterdir() if ".tmp" in p.name], "a temp file was left"
        assert not _flushers(run_id)
        print(f"real play on a full tmpfs: {len(spooled)} results shipped, the run ended as expired")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_daemon_ends_a_run_whose_playbook_is_gone_without_its_end(cli_env, ara, spool_dir, tmp_path):
    """Without a play's own flusher (the daemon deployment), a run whose run_end could not be
    spooled is recorded as expired by the daemon once the ansible-playbook named in its run_start
    is gone; a run whose process lives stays running."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    for run_id, pid in (("orphan-run", dead.pid), ("live-run", os.getpid())):
        writer.append(run_id, "run_start", {"path": "/srv/site.yml", "ansible_version": "2.17.0",
                                            "process": process_identity(pid)}, spool_dir=spool_dir)
        writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h1"}, spool_dir=spool_dir)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "-v", "flush", "--follow", "--poll", "0.2"],
                                env=cli_env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (
                ara.playbooks_for("orphan-run") and ara.playbook_for("orphan-run")["status"] == "expired"):
            time.sleep(0.5)
        assert ara.playbook_for("orphan-run")["status"] == "expired", log.read_text()
        assert ara.playbook_for("live-run")["status"] == "running"
        assert "ansible-playbook is gone" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
