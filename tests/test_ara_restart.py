"""Ara itself goes away in the middle of a flush (its port closed for a while), then comes back on
the same port: the flush rides it out, and every event lands exactly once, in order."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config

from tests.ara import AraAPI, AraServer
from tests.runs import assert_once_in_host_order, emit_events, spool_run


@pytest.fixture
def own_ara(tmp_path):
    server = AraServer(tmp_path / "ara-restart", kind="gunicorn", workers=2)
    server.start()
    yield server
    server.cleanup()


def _port_closed(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_ara_stopped_and_restarted_mid_flush(own_ara: AraServer, spool_dir):
    api = AraAPI(own_ara.url)
    runs = {"restart-a": spool_run(spool_dir, "restart-a", hosts=3, tasks=60)}  # 180 results
    events = emit_events(spool_dir, "restart-b", 150, hosts=4)
    cfg = Config(server=own_ara.url, spool_dir=spool_dir, timeout=3, max_backoff=0.5)
    cfg.check()
    loop = asyncio.get_running_loop()
    flush = asyncio.create_task(oneshot.flush(cfg, None, timeout=150))

    async def results_so_far() -> int:
        def count() -> int:
            try:
                return api.get("results", limit=1)["count"]
            except OSError:
                return -1
        return await loop.run_in_executor(None, count)

    outages = []
    for how, after in (("SIGKILL", 60), ("SIGTERM", 200)):
        # Wait until the flush is well under way, then take Ara down hard (SIGKILL: requests in
        # flight die with it, some after their commit) or gracefully (SIGTERM).
        t0 = time.monotonic()
        while await results_so_far() < after:
            assert not flush.done(), "the flush finished before the outage"
            assert time.monotonic() - t0 < 60
            await asyncio.sleep(0.05)
        assert own_ara.proc is not None
        before = await results_so_far()
        if how == "SIGKILL":
            os.killpg(own_ara.proc.pid, signal.SIGKILL)
            await loop.run_in_executor(None, own_ara.proc.wait)
            own_ara.proc = None
        else:
            await loop.run_in_executor(None, own_ara.stop)
        t_down = time.monotonic()
        while not _port_closed(own_ara.port):  # the workers die a moment after the master
            assert time.monotonic() - t_down < 10
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # the port stays closed: connection refused, backoff
        assert not flush.done(), "the flush gave up during the outage"
        await loop.run_in_executor(None, own_ara.start)  # same port, same base dir
        outages.append((how, before))

    outcomes = await asyncio.wait_for(flush, 150)
    assert all(o.status == "done" for o in outcomes), outcomes
    # Each event once; per host, ordered by id: created in spool order (the window ships hosts side by side).
    assert_once_in_host_order(api, "restart-a", [(r["host"], r["started"]) for r in runs["restart-a"]], key="started")
    assert_once_in_host_order(api, "restart-b", [(e["event"]["host"], e["ts"]) for e in events])
    pb = api.playbook_for("restart-a")
    assert pb["status"] == "completed"
    assert len(api.all("tasks", playbook=pb["id"])) == 60
    print(f"outages (how, results in Ara when it went down): {outages}")
