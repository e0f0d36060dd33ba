"""Disk full (ENOSPC) on a small tmpfs: the writer fails clearly and keeps earlier lines; the next
append after space frees heals the torn tail; a flusher that cannot checkpoint stops cleanly and
the next flush ships every event exactly once.

Needs `mount -t tmpfs` (root, as in CI); where mounting is not allowed, the writer's os.write is
made to fail with ENOSPC after a short write instead, which is what a full disk does.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.spool import writer
from ara_spool.spool.reader import read_lines, tail_info

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


async def test_disk_full_on_append_then_heal_and_ship(small_disk, cfg, ara):
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
    # Every line appended before the failure is intact; the failed one is at most a torn tail.
    lines = list(read_lines(spool_dir / f"{run_id}.jsonl"))
    assert [ln.event["seq"] for ln in lines if ln.event] == [e["seq"] for e in ok_events]
    assert all(ln.event is not None for ln in lines)
    torn = tail_info(spool_dir / f"{run_id}.jsonl")[1]
    assert torn > 0, "expected a partly written line (a short write before ENOSPC)"
    # Still full: a flusher cannot checkpoint, so it stops with a clear error, without a traceback.
    fcfg = Config(server=cfg.server, spool_dir=spool_dir, timeout=10, max_backoff=0.3)
    [outcome] = await oneshot.flush(fcfg, [run_id], timeout=30)
    assert outcome.status == "error" and "No space left" in (outcome.message or ""), outcome
    # Space comes back: the next append heals the torn tail (it becomes one bad line) and lands whole.
    free()
    last = writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h1", "details": {"i": "last"}},
                         spool_dir=spool_dir)
    ok_events.append(last)
    lines = list(read_lines(spool_dir / f"{run_id}.jsonl"))
    assert [ln.event is not None for ln in lines] == [True] * (len(ok_events) - 1) + [False, True]
    assert tail_info(spool_dir / f"{run_id}.jsonl")[1] == 0
    [outcome] = await oneshot.flush(fcfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 1, outcome
    results = ara.results(ara.playbook_for(run_id)["id"])
    assert [r["ended"] for r in results] == [ara.result(r["id"])["ended"] for r in results]
    assert len(results) == len(ok_events)
    # Per host in spool order (the window ships hosts side by side).
    hosts = {h["id"]: h["name"] for h in ara.all("hosts", playbook=ara.playbook_for(run_id)["id"])}
    got = per_host([(hosts[r["host"]], ara.result(r["id"])["content"]["i"]) for r in results])
    assert got == per_host([(e["event"]["host"], e["event"]["details"]["i"]) for e in ok_events])
    [rec] = [json.loads(x) for x in (spool_dir / f"{run_id}.rejected.jsonl").read_text().splitlines()]
    assert "malformed JSON" in rec["reason"]
    print(f"ENOSPC via {'tmpfs' if mounted else 'injected os.write'}: {len(ok_events)} events kept, "
          f"torn tail of {torn} bytes quarantined")
