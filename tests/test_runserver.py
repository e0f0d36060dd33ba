"""Against Django's runserver (the dev server many Ara users start first): keep-alive stalls it
~40 ms per request, and it drops kept-alive sockets; the flusher switches to a connection per
request and must ship everything, promptly."""

from __future__ import annotations

import time

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config

from tests.ara import AraAPI, AraServer
from tests.runs import emit_events, spool_run


@pytest.fixture(scope="module")
def runserver(tmp_path_factory):
    server = AraServer(tmp_path_factory.mktemp("ara-runserver"), kind="runserver")
    server.start()
    yield server
    server.cleanup()


async def test_flush_to_runserver_completes(runserver, spool_dir):
    spooled = spool_run(spool_dir, "rs-1", hosts=3, tasks=10)
    emit_events(spool_dir, "rs-2", 30)
    cfg = Config(server=runserver.url, spool_dir=spool_dir, timeout=10, max_backoff=0.5)
    t0 = time.monotonic()
    outcomes = await oneshot.flush(cfg, ["rs-1", "rs-2"], timeout=120)
    took = time.monotonic() - t0
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    ara = AraAPI(runserver.url)
    assert len(ara.results(ara.playbook_for("rs-1")["id"])) == len(spooled) == 30
    assert len(ara.results(ara.playbook_for("rs-2")["id"])) == 30
    # ~110 requests: at runserver's keep-alive pace (~17/s) this would take 6+ s, at a new
    # connection per request (~80-180/s here) about 1-2 s.
    assert took < 30, f"{took:.1f}s"
