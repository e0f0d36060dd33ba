"""How a real Ara fails beyond a lost response: an empty 2xx body, a database reset under a flusher
(with another run shipped into the fresh database meanwhile), run ids that differ in case. Each is
counted through Ara's API: nothing lost, nothing doubled, per-host order kept, no other run's
playbook touched."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.flusher.daemon import Daemon
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.ara import AraAPI, AraServer
from tests.faultproxy import FaultProxy, Rule
from tests.runs import assert_once_in_host_order, spool_run

HOSTS, TASKS = 5, 6


def proxied(cfg: Config, proxy: FaultProxy, **kw) -> Config:
    c = Config(server=proxy.url, spool_dir=cfg.spool_dir, timeout=kw.pop("timeout", 5), max_backoff=0.3, **kw)
    c.check()
    return c


def assert_exactly_once(ara: AraAPI, run_id: str, spooled: list[dict]) -> None:
    assert_once_in_host_order(ara, run_id, [(r["host"], r["started"]) for r in spooled], key="started")
    pb = ara.playbook_for(run_id)
    assert len(ara.all("tasks", playbook=pb["id"])) == len({r["task_uuid"] for r in spooled})


def snapshot(ara: AraAPI, playbook: int) -> tuple:
    """What a run's playbook holds: another run's flush must leave it exactly so."""
    return (ara.get(f"playbooks/{playbook}")["status"],
            sorted(r["id"] for r in ara.results(playbook)),
            sorted(t["id"] for t in ara.all("tasks", playbook=playbook)),
            sorted(h["id"] for h in ara.all("hosts", playbook=playbook)))


@pytest.mark.parametrize("method,path", [("POST", "/api/v1/results"), ("POST", "/api/v1/tasks"),
                                         ("PATCH", "/api/v1/playbooks")])
async def test_an_empty_2xx_body_is_a_server_fault(cfg, ara, proxy, method, path):
    """Ara committed, the answer came back empty (a proxy, a worker dying after its commit): the run
    stops as a server fault (exit 7), nothing is quarantined, and the next flush ships the rest once
    (before: KeyError 'id', good events quarantined; on a PATCH the playbook stayed running)."""
    run_id = f"empty-{method}-{path.rsplit('/', 1)[1]}"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=HOSTS, tasks=TASKS)
    proxy.rules = [Rule("empty", method, path, every=1 if method == "PATCH" else 3, times=1)]
    [first] = await oneshot.flush(proxied(cfg, proxy), [run_id], timeout=30)
    assert first.status == "server" and first.quarantined == 0, first
    assert "empty body" in (first.message or "")
    assert not RunPaths.of(cfg.spool_dir, run_id).rejected.exists()
    [second] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert second.status == "done" and second.quarantined == 0, second
    assert_exactly_once(ara, run_id, spooled)
    assert ara.playbook_for(run_id)["status"] == "completed"


@pytest.fixture
def own_ara(tmp_path):
    server = AraServer(tmp_path / "ara-reset", kind="gunicorn", workers=2)
    server.start()
    yield server
    server.cleanup()


def reset(server: AraServer) -> None:
    """Ara's database wiped and migrated again, Ara back on the same port."""
    server.stop()
    for name in ("ansible.sqlite", "ansible.sqlite-journal", "ansible.sqlite-wal"):
        (server.base_dir / name).unlink(missing_ok=True)
    shutil.rmtree(server.base_dir / "logs", ignore_errors=True)
    server.start()


async def wait_for_results(api: AraAPI, n: int, task: asyncio.Task, limit: float = 60) -> None:
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    while (await loop.run_in_executor(None, lambda: api.get("results", limit=1)["count"])) < n:
        assert not task.done(), task
        assert time.monotonic() - t0 < limit
        await asyncio.sleep(0.05)


async def test_a_reset_database_under_a_one_shot_with_another_run_shipped_meanwhile(own_ara, spool_dir, aiohttp_server):
    """Mid-flush, Ara goes away (the flusher sees an outage), its database is wiped, and another
    run is shipped into the fresh one: its playbook, tasks and hosts now have the ids our run holds.
    The first request after the outage checks our ids again: none is ours, so the whole run ships
    again into a playbook of its own, once; the other run is not touched."""
    api = AraAPI(own_ara.url)
    ours = spool_run(spool_dir, "reset-ours", hosts=HOSTS, tasks=TASKS)
    theirs = spool_run(spool_dir, "reset-theirs", hosts=HOSTS, tasks=TASKS)
    fp = FaultProxy(own_ara.url)
    server = await aiohttp_server(fp.app(), host="127.0.0.1")
    fp.url = str(server.make_url("")).rstrip("/")
    fp.rules = [Rule("delay", "POST", "/api/v1/results", seconds=0.05)]
    cfg = Config(server=fp.url, spool_dir=spool_dir, timeout=3, max_backoff=0.3)
    cfg.check()
    flush = asyncio.create_task(oneshot.flush(cfg, ["reset-ours"], timeout=90))
    await wait_for_results(api, 8, flush)
    fp.rules = [Rule("respond", None, "/api/v1/", status=503)]  # the outage, as the flusher sees it
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, reset, own_ara)
    direct = Config(server=own_ara.url, spool_dir=spool_dir, timeout=5)
    direct.check()
    [other] = await oneshot.flush(direct, ["reset-theirs"], timeout=60)
    assert other.status == "done"
    before = snapshot(api, other.playbook)
    fp.rules = []
    [outcome] = await asyncio.wait_for(flush, 90)
    assert outcome.status == "done" and outcome.quarantined == 0, outcome
    assert outcome.playbook != other.playbook
    assert_exactly_once(api, "reset-ours", ours)
    assert_exactly_once(api, "reset-theirs", theirs)
    assert snapshot(api, other.playbook) == before


async def test_a_reset_database_without_an_outage_is_caught_by_the_first_invalid_id(own_ara, spool_dir, aiohttp_server):
    """The database is replaced while the flusher sees no outage: its next write names a playbook,
    task or host Ara no longer holds (400 "Invalid pk"). That is not the event's fault: nothing is
    quarantined, and the run ships again, once (before: 624 lines quarantined, exit 7)."""
    api = AraAPI(own_ara.url)
    ours = spool_run(spool_dir, "reset-quiet", hosts=HOSTS, tasks=TASKS)
    fp = FaultProxy(own_ara.url)
    server = await aiohttp_server(fp.app(), host="127.0.0.1")
    fp.url = str(server.make_url("")).rstrip("/")
    cfg = Config(server=fp.url, spool_dir=spool_dir, timeout=30, max_backoff=0.3)
    cfg.check()
    fp.rules = [Rule("delay", "POST", "/api/v1/results", seconds=0.05)]
    flush = asyncio.create_task(oneshot.flush(cfg, ["reset-quiet"], timeout=90))
    await wait_for_results(api, 8, flush)
    # Hold the flusher's next requests while Ara is swapped, so that it sees no failed request.
    fp.rules = [Rule("hold", None, "/api/v1/")]
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.3)
    await loop.run_in_executor(None, reset, own_ara)
    fp.rules = []
    fp.opened.set()
    [outcome] = await asyncio.wait_for(flush, 90)
    assert outcome.status == "done" and outcome.quarantined == 0, outcome
    assert fp.count("GET", "/api/v1/playbooks") >= 2  # its identity checked again mid-run
    assert_exactly_once(api, "reset-quiet", ours)


async def test_a_reset_database_under_the_daemon_with_another_run_shipped_meanwhile(own_ara, spool_dir):
    """The daemon shipped the first half of a live run; Ara's database is reset and another run
    shipped into it while the daemon sends nothing. When the run goes on, the daemon's next pass
    finds its playbook id now another run's (its label is not ours): it ships the whole run again,
    into a playbook of its own (before: 563 results landed in the other run's playbook)."""
    api = AraAPI(own_ara.url)
    cfg = Config(server=own_ara.url, spool_dir=spool_dir, timeout=5, max_backoff=0.3)
    cfg.check()
    first = spool_run(spool_dir, "daemon-ours", hosts=HOSTS, tasks=3, end=None)
    daemon = Daemon(cfg, poll=0.1)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for_results(api, len(first), task)
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, reset, own_ara)
        theirs = spool_run(spool_dir, "daemon-theirs", hosts=HOSTS, tasks=TASKS)
        t0 = time.monotonic()
        while True:  # the daemon ships the other run into the fresh database first
            pbs = api.playbooks_for("daemon-theirs")
            if pbs and pbs[0]["status"] == "completed":
                break
            assert time.monotonic() - t0 < 60
            await asyncio.sleep(0.1)
        before = snapshot(api, pbs[0]["id"])
        rest = spool_run(spool_dir, "daemon-ours", hosts=HOSTS, tasks=3, start_run=False)
        t0 = time.monotonic()
        while not (api.playbooks_for("daemon-ours") and api.playbook_for("daemon-ours")["status"] == "completed"):
            assert time.monotonic() - t0 < 60 and not task.done()
            await asyncio.sleep(0.1)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 30)
    assert_exactly_once(api, "daemon-ours", first + rest)
    assert_exactly_once(api, "daemon-theirs", theirs)
    assert snapshot(api, pbs[0]["id"]) == before
    assert load(RunPaths.of(spool_dir, "daemon-ours"), cfg.destination).quarantined == 0


async def test_run_ids_that_differ_in_case_are_two_runs(cfg, ara):
    """Ara's label filter ignores case; run ids do not: `Case-42` and `case-42` each get their own
    playbook, flushed one after the other or at once."""
    runs = {rid: spool_run(cfg.spool_dir, rid, hosts=2, tasks=2) for rid in ("Case-42", "case-42")}
    [a] = await oneshot.flush(cfg, ["Case-42"], timeout=60)
    [b] = await oneshot.flush(cfg, ["case-42"], timeout=60)
    assert a.status == b.status == "done" and a.playbook != b.playbook
    both = {rid: spool_run(cfg.spool_dir, rid, hosts=2, tasks=2) for rid in ("Both-7", "both-7")}
    outcomes = await oneshot.flush(cfg, list(both), timeout=60)
    assert all(o.status == "done" for o in outcomes) and len({o.playbook for o in outcomes}) == 2
    for rid, spooled in {**runs, **both}.items():
        [pb] = [p for p in ara.playbooks_for(rid) if f"run_id:{rid}" in [x["name"] for x in p["labels"]]]
        assert pb["id"] in {a.playbook, b.playbook, *(o.playbook for o in outcomes)}
        got = sorted(r["started"] for r in ara.results(pb["id"]))
        assert len(got) == len(spooled)
