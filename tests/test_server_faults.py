"""How a real Ara fails beyond a lost response: an empty 2xx body, a database reset under a flusher
(with another run shipped into the fresh database meanwhile), run ids that differ in case. Each is
counted through Ara's API: nothing lost, nothing doubled, per-host order kept, no other run's
playbook touched."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import timedelta

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.flusher.daemon import Daemon
from ara_spool.spool import quarantine
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.schema import parse_time as parse_ts
from ara_spool.spool.state import load

from tests.ara import AraAPI, AraServer
from tests.faultproxy import FaultProxy, Rule
from tests.runs import assert_once_in_host_order, spool_run

HOSTS, TASKS = 5, 6


def proxied(cfg: Config, proxy: FaultProxy, **kw) -> Config:
    c = Config(server=proxy.url, spool_dir=cfg.spool_dir, timeout=kw.pop("timeout", 5), max_backoff=0.3, **kw)
    c.check()
    return c


def tally(ara: AraAPI, run_id: str, want: list[tuple[str, str]]) -> dict[str, int]:
    """What Ara holds of a run against its spooled (host, started) pairs, over every playbook
    labelled exactly with its id: lost, doubled, hosts out of spool order, playbooks."""
    from collections import Counter

    from ara_spool.spool.schema import parse_time

    pbs = [p for p in ara.playbooks_for(run_id) if f"run_id:{run_id}" in [x["name"] for x in p["labels"]]]
    got: list[tuple[int, str, object]] = []
    for pb in pbs:
        hosts = {h["id"]: h["name"] for h in ara.all("hosts", playbook=pb["id"])}
        got += [(r["id"], hosts[r["host"]], parse_time(r["started"])) for r in ara.results(pb["id"])]
    wanted = Counter((h, parse_time(t)) for h, t in want)
    have = Counter((h, t) for _, h, t in got)
    order = 0
    for host in {h for h, _ in want}:
        seen = [t for _, h, t in sorted(got) if h == host]
        deduped = list(dict.fromkeys(seen))
        order += deduped != [parse_time(t) for h, t in want if h == host]
    return {"lost": sum((wanted - have).values()), "doubled": sum((have - wanted).values()),
            "order_breaks": order, "playbooks": len(pbs)}


def check(ara: AraAPI, scenario: str, run_id: str, spooled: list[dict], *, other_touched: bool = False) -> None:
    """Print the scenario's figures (tests/ figures for the README), then require exactly once."""
    want = [(r["event"]["host"], r["ts"]) if "event" in r else (r["host"], r["started"]) for r in spooled]
    if "event" in spooled[0]:  # explicit events: Ara's started is ts - duration
        want = [(h, (parse_ts(t) - timedelta(seconds=float(r["event"].get("duration") or 0))).isoformat())
                for (h, t), r in zip(want, spooled, strict=True)]
    got = tally(ara, run_id, want)
    print(f"FIGURE {scenario}: lost={got['lost']} doubled={got['doubled']} order_breaks={got['order_breaks']} "
          f"playbooks={got['playbooks']} other_run_touched={other_touched}")
    assert got == {"lost": 0, "doubled": 0, "order_breaks": 0, "playbooks": 1}, (scenario, got)
    assert not other_touched, scenario


def assert_exactly_once(ara: AraAPI, run_id: str, spooled: list[dict], scenario: str | None = None) -> None:
    check(ara, scenario or run_id, run_id, spooled)
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
    rejected = RunPaths.of(cfg.spool_dir, run_id).rejected.exists()
    quarantine.requeue(RunPaths.of(cfg.spool_dir, run_id))  # what a user does with quarantined lines
    [second] = await oneshot.flush(cfg, [run_id], timeout=60)
    check(ara, f"empty body on {method} {path}", run_id, spooled)
    assert first.status == "server" and first.quarantined == 0, first
    assert "empty body" in (first.message or "") and not rejected
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
    if outcome.quarantined:  # what a user does with quarantined lines (before: 624 of them)
        quarantine.requeue(RunPaths.of(spool_dir, "reset-ours"))
        await oneshot.flush(direct, ["reset-ours"], timeout=60)
    check(api, "db reset under a one-shot, another run shipped meanwhile", "reset-ours", ours,
          other_touched=snapshot(api, other.playbook) != before)
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
    if outcome.quarantined:  # what a user does with quarantined lines
        quarantine.requeue(RunPaths.of(spool_dir, "reset-quiet"))
        await oneshot.flush(cfg, ["reset-quiet"], timeout=60)
    check(api, "db reset under a one-shot, no outage seen", "reset-quiet", ours)
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
    loop = asyncio.get_running_loop()

    async def off_loop(fn, *args):  # the daemon runs in this loop: never block it on Ara
        return await loop.run_in_executor(None, fn, *args)

    async def completed(run_id: str) -> dict | None:
        t0 = time.monotonic()
        while True:
            pbs = [p for p in await off_loop(api.playbooks_for, run_id) if p["status"] == "completed"]
            if pbs:
                return pbs[0]
            if time.monotonic() - t0 > 60 or task.done():
                return None  # counted below
            await asyncio.sleep(0.1)

    first = spool_run(spool_dir, "daemon-ours", hosts=HOSTS, tasks=2, end=None)
    daemon = Daemon(cfg, poll=0.1)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for_results(api, len(first), task)
        # A second pass over the run: the daemon has checked its playbook once (before, it never
        # checked it again in that process).
        first += spool_run(spool_dir, "daemon-ours", hosts=HOSTS, tasks=2, start_run=False, end=None)
        await wait_for_results(api, len(first), task)
        await asyncio.sleep(0.5)
        await off_loop(reset, own_ara)
        theirs = spool_run(spool_dir, "daemon-theirs", hosts=HOSTS, tasks=TASKS)
        other = await completed("daemon-theirs")  # the daemon ships it into the fresh database first
        assert other is not None
        before = await off_loop(snapshot, api, other["id"])
        rest = spool_run(spool_dir, "daemon-ours", hosts=HOSTS, tasks=2, start_run=False)
        await completed("daemon-ours")
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 30)
    check(api, "db reset under the daemon, another run shipped meanwhile", "daemon-ours", first + rest,
          other_touched=snapshot(api, other["id"]) != before)
    assert_exactly_once(api, "daemon-ours", first + rest)
    assert_exactly_once(api, "daemon-theirs", theirs)
    assert snapshot(api, other["id"]) == before
    assert load(RunPaths.of(spool_dir, "daemon-ours"), cfg.destination).quarantined == 0


async def test_run_ids_that_differ_in_case_are_two_runs(cfg, ara):
    """Ara's label filter ignores case; run ids do not: `Case-42` and `case-42` each get their own
    playbook, flushed one after the other or at once."""
    runs = {rid: spool_run(cfg.spool_dir, rid, hosts=2, tasks=2) for rid in ("Case-42", "case-42")}
    [a] = await oneshot.flush(cfg, ["Case-42"], timeout=60)
    [b] = await oneshot.flush(cfg, ["case-42"], timeout=60)
    both = {rid: spool_run(cfg.spool_dir, rid, hosts=2, tasks=2) for rid in ("Both-7", "both-7")}
    outcomes = await oneshot.flush(cfg, list(both), timeout=60)
    for pair, (x, y) in (("one after the other", (a, b)), ("at once", outcomes)):
        # The other id's rows in this one's playbook: "another run touched".
        touched = any(len(ara.results(o.playbook)) != len((runs | both)[o.run_id]) for o in (x, y))
        for o in (x, y):
            check(ara, f"case-different ids {pair}: {o.run_id}", o.run_id, (runs | both)[o.run_id],
                  other_touched=touched)
        assert x.status == y.status == "done" and x.playbook != y.playbook


def repeated_events(spool_dir, run_id: str, n: int = 30) -> list[dict]:
    """An explicit event looped n times on one host (one task name), among a few on other hosts."""
    from ara_spool.spool import writer

    out = []
    for i in range(n):
        for host in ("loop-host", f"other{i % 3}") if i % 5 == 0 else ("loop-host",):
            ev = writer.append(run_id, "event", {"task": "poll", "status": "ok", "host": host, "duration": 0.1,
                                                 "details": {"i": i}}, spool_dir=spool_dir)
            out.append(ev)
    return out


def assert_events_once(ara: AraAPI, run_id: str, events: list[dict], scenario: str) -> None:
    from tests.runs import host_of

    check(ara, scenario, run_id, events)
    assert_once_in_host_order(ara, run_id, [(host_of(e), e["ts"]) for e in events])


async def test_repeated_events_after_a_lost_state_and_a_copied_spool(cfg, ara, tmp_path):
    """30 results of one task on one host: a flush without its checkpoint (state removed, or the
    spool copied to another spool dir) finds each among all of them, not among the newest 20
    (before: +30 and +100 doubles)."""
    run_id = "repeat-1"
    events = repeated_events(cfg.spool_dir, run_id)
    [first] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert first.status == "done"
    RunPaths.of(cfg.spool_dir, run_id).state.unlink()
    [again] = await oneshot.flush(cfg, [run_id], timeout=60)
    check(ara, "30 repeated events, state removed", run_id, events)
    assert again.status == "done" and again.playbook == first.playbook
    copy = tmp_path / "copied"
    copy.mkdir(mode=0o700)
    shutil.copy(RunPaths.of(cfg.spool_dir, run_id).spool, RunPaths.of(copy, run_id).spool)
    other = Config(server=cfg.server, spool_dir=copy, timeout=15)
    other.check()
    [copied] = await oneshot.flush(other, [run_id], timeout=60)
    assert copied.status == "done" and copied.playbook == first.playbook
    assert_events_once(ara, run_id, events, "30 repeated events, spool copied to another dir")


async def test_late_commits_through_a_delaying_proxy_converge(cfg, ara, proxy):
    """Some creates reach Ara only after the client gave up on them (a late commit): the lookup
    before the retry finds nothing and the retry makes a row; then the original commits. The
    read-back at the end of the flush deletes those doubles, keeping each host's spool order
    (before: doubles and per-host order breaks stayed)."""
    run_id = "late-1"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=HOSTS, tasks=TASKS)
    proxy.rules = [Rule("late", "POST", "/api/v1/results", every=7, times=3, seconds=1.5)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy, timeout=1), [run_id], timeout=60)
    await proxy.settle()
    check(ara, "late commits through a delaying proxy", run_id, spooled)
    assert outcome.status == "done" and outcome.quarantined == 0, outcome
    assert proxy.late_done == 3
    assert proxy.count("DELETE", "/api/v1/results") >= 1  # doubles were made, and removed
    assert_exactly_once(ara, run_id, spooled)


async def test_late_commits_behind_a_held_sqlite_write_lock_converge(own_ara, spool_dir):
    """No proxy: Ara's database is write-locked for a few seconds (a backup, a long migration) past
    the client's timeout; the creates waiting on the lock commit after it, retries included."""
    import sqlite3
    import threading

    api = AraAPI(own_ara.url)
    spooled = spool_run(spool_dir, "locked-1", hosts=HOSTS, tasks=TASKS)
    cfg = Config(server=own_ara.url, spool_dir=spool_dir, timeout=1, max_backoff=0.3)
    cfg.check()
    loop = asyncio.get_running_loop()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        db = sqlite3.connect(own_ara.base_dir / "ansible.sqlite", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(30)
        db.execute("ROLLBACK")
        db.close()

    flush = asyncio.create_task(oneshot.flush(cfg, ["locked-1"], timeout=90))
    await wait_for_results(api, 10, flush)
    holder = threading.Thread(target=hold_lock)
    holder.start()
    await loop.run_in_executor(None, locked.wait, 10)
    await asyncio.sleep(3)
    release.set()
    await loop.run_in_executor(None, holder.join)
    [outcome] = await asyncio.wait_for(flush, 90)
    await asyncio.sleep(1)  # let any create still held by the lock commit before counting
    check(api, "late commits behind a held sqlite write lock", "locked-1", spooled)
    assert outcome.status == "done" and outcome.quarantined == 0, outcome
    assert_exactly_once(api, "locked-1", spooled)


async def test_two_controllers_shipping_one_run_at_once_end_with_one_playbook(cfg, ara, tmp_path):
    """Copies of one run's spool flushed by two flushers at the same moment: if both made a
    playbook, the read-back keeps the lowest and deletes the other, and its flusher ships into the
    kept one; doubles either made are deleted (before: 1 trial in 9 left 2 playbooks, 800 results
    for 400)."""
    for trial in range(3):
        run_id = f"twice-{trial}"
        spooled = spool_run(cfg.spool_dir, run_id, hosts=HOSTS, tasks=TASKS)
        copy = tmp_path / f"copy{trial}"
        copy.mkdir(mode=0o700)
        shutil.copy(RunPaths.of(cfg.spool_dir, run_id).spool, RunPaths.of(copy, run_id).spool)
        other = Config(server=cfg.server, spool_dir=copy, timeout=15)
        other.check()
        outcomes = await asyncio.gather(oneshot.flush(cfg, [run_id], timeout=60),
                                        oneshot.flush(other, [run_id], timeout=60))
        check(ara, f"two controllers, trial {trial}", run_id, spooled)
        assert all(o.status == "done" for [o] in outcomes), outcomes
        assert_exactly_once(ara, run_id, spooled)


async def test_verify_shows_the_read_back_comparison(cfg, ara, ara_server):
    """`verify` matches the shipped spool's results with Ara's rows as the read-back does: a double
    with the same task, host and start is named as such."""
    import json
    import urllib.error
    import urllib.request

    from ara_spool.flusher.verify import verify

    run_id = "verify-back"
    spool_run(cfg.spool_dir, run_id, hosts=2, tasks=2)
    await oneshot.flush(cfg, [run_id], timeout=60)
    report, ok = verify(cfg, [run_id])
    assert ok and report[0]["read_back"] == {"missing": 0, "doubled": 0, "out_of_order": 0}
    first = ara.results(ara.playbook_for(run_id)["id"])[0]
    dup = {k: first[k] for k in ("playbook", "play", "task", "host", "status", "started", "ended")}
    if dup["status"] == "changed":  # how Ara lists an ok result that changed something
        dup["status"] = "ok"
    req = urllib.request.Request(f"{ara_server.url}/api/v1/results", json.dumps({**dup, "content": {}}).encode(),
                                 {"Content-Type": "application/json"}, method="POST")
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(exc.read()) from None
    report, ok = verify(cfg, [run_id])
    assert not ok and report[0]["read_back"]["doubled"] == 1
    assert any("read-back" in p and "1 doubled" in p for p in report[0]["problems"])


def test_repeated_events_through_sigkills(cli_env, ara, spool_dir):
    """The same looped event on one host, the flusher SIGKILLed mid-flush a few times (its
    checkpoint rarely): the next flusher finds every one of them already in Ara among
    all the results of that task and host (before: +23 and +75 doubles)."""
    import os
    import signal
    import subprocess
    import sys

    run_id = "repeat-kill"
    env = dict(cli_env, ARA_SPOOL_CHECKPOINT_EVERY="1000")  # the kills leave long unrecorded tails
    events, kills = [], 0
    for _ in range(4):
        events += repeated_events(spool_dir, run_id, 40)
        before = ara.get("results", limit=1)["count"]
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--timeout", "60"],
                                env=env, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()  # kill it once it has shipped a few of this round's results
        while proc.poll() is None and ara.get("results", limit=1)["count"] < before + 8 \
                and time.monotonic() - t0 < 20:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--timeout", "60"], env=env,
                           capture_output=True, text=True)
    check(ara, f"{len(events)} repeated events, {kills} SIGKILLs", run_id, events)
    assert final.returncode == 0, final.stderr
    assert kills >= 1
    assert_events_once(ara, run_id, events, "repeated events through SIGKILLs")


async def test_a_404_on_a_row_of_the_run_stops_writes_until_its_ids_are_checked(cfg, ara, proxy):
    """Ara answers 404 for a row this run created (a task's end): not the event's fault, and not
    a wrong URL either. The flusher checks its ids again (they hold here) and goes on; nothing is
    quarantined."""
    run_id = "row-404"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=HOSTS, tasks=TASKS)
    proxy.rules = [Rule("respond", "PATCH", "/api/v1/plays/", times=1, status=404, body='{"detail":"Not found."}')]
    c = proxied(cfg, proxy)
    c.task_hold_seconds = 0
    [outcome] = await oneshot.flush(c, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 0, outcome
    assert proxy.count("PATCH", "/api/v1/plays/", "respond") == 1
    assert proxy.count("GET", "/api/v1/tasks") >= 1  # each cached task id checked against the playbook
    assert_exactly_once(ara, run_id, spooled)
    assert all(p["status"] == "completed" for p in ara.all("plays", playbook=outcome.playbook))
