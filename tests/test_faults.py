"""Faults between the flusher and a real Ara: lost responses, 5xx/429 bursts, timeouts, auth, 413."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.faultproxy import FaultProxy, Rule
from tests.runs import assert_once_in_host_order, emit_events, host_of, spool_run


def proxied(cfg: Config, proxy: FaultProxy, **kw) -> Config:
    c = Config(server=proxy.url, spool_dir=cfg.spool_dir, timeout=kw.pop("timeout", 5), max_backoff=0.3, **kw)
    c.check()
    return c


def assert_exactly_once(ara, run_id, spooled):
    """Each spooled result or event once in Ara, per host in spool order (the window is on)."""
    assert_once_in_host_order(ara, run_id, [(host_of(x), x["ts"] if "event" in x else x["ended"]) for x in spooled])


@pytest.mark.ara_matrix
async def test_lost_responses_make_no_duplicates(cfg, ara, proxy):
    """Ara commits, the response never arrives: the flusher finds the row instead of re-posting."""
    run_id = "lost-1"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=10, tasks=8)
    proxy.rules = [Rule("lose", "POST", "/api/v1/results", every=3),
                   Rule("lose", "POST", "/api/v1/tasks", every=2),
                   Rule("lose", "POST", "/api/v1/plays"),
                   Rule("lose", "POST", "/api/v1/playbooks", times=1)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy), [run_id], timeout=60)
    assert outcome.status == "done", outcome.message
    # Every third result POST is lost (more than 26: a loss stops the writes in flight, some are sent again).
    assert proxy.count("POST", "/api/v1/results", "lose") >= len(spooled) // 3 == 26
    assert_exactly_once(ara, run_id, spooled)
    pb = ara.playbook_for(run_id)
    assert len(ara.all("tasks", playbook=pb["id"])) == 8
    assert len(ara.all("plays", playbook=pb["id"])) == 1


async def test_slow_responses_past_the_timeout_make_no_duplicates(cfg, ara, proxy):
    run_id = "slow-1"
    events = emit_events(cfg.spool_dir, run_id, 6)
    proxy.rules = [Rule("delay", "POST", "/api/v1/results", every=2, seconds=2.5)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy, timeout=1), [run_id], timeout=60)
    assert outcome.status == "done", outcome.message
    assert proxy.count("POST", "/api/v1/results", "delay") >= 3
    assert_exactly_once(ara, run_id, events)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_transient_bursts_are_retried(cfg, ara, proxy, status):
    run_id = f"burst-{status}"
    events = emit_events(cfg.spool_dir, run_id, 5)
    proxy.rules = [Rule("respond", "POST", "/api/v1/results", times=4, status=status)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy), [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 0
    assert proxy.count("POST", "/api/v1/results", "respond") == 4
    assert_exactly_once(ara, run_id, events)


async def test_lines_done_above_the_low_water_mark_survive_a_flusher_that_stops_early(cfg, ara, proxy):
    """A window stopped cleanly with lines done above its low-water mark (a slow lane held the mark
    back): a next flusher stopped before it reaches them must keep them in the checkpoint, or a third
    would send them again (found while moving that list to save time: it was rebuilt from the window
    alone)."""
    run_id = "above-1"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=10, tasks=6)
    paths = RunPaths.of(cfg.spool_dir, run_id)
    proxy.rules = [Rule("delay", "POST", "/api/v1/results", every=7, seconds=0.3)]
    stop, shipped = asyncio.Event(), 0

    def progress(_run: str, n: int) -> None:
        nonlocal shipped
        shipped += n
        if shipped >= 30:
            stop.set()

    c = proxied(cfg, proxy, window=16)
    [first] = await oneshot.flush(c, [run_id], timeout=60, stop=stop, on_progress=progress)
    assert first.status == "stopped"
    st = load(paths)
    assert st.clean and st.done_above and min(st.done_above) > st.offset, (st.clean, st.offset, st.done_above)
    kept = list(st.done_above)

    halted = asyncio.Event()
    halted.set()  # the second flusher stops before it ships a line
    [second] = await oneshot.flush(c, [run_id], timeout=60, stop=halted)
    assert second.status == "stopped" and second.shipped == 0
    assert load(paths).done_above == kept

    proxy.rules = []
    [last] = await oneshot.flush(c, [run_id], timeout=60)
    assert last.status == "done", last.message
    assert_exactly_once(ara, run_id, spooled)


@pytest.mark.parametrize("window", [1, 4])
async def test_the_window_bounds_requests_in_flight(cfg, ara, proxy, window):
    """At most `window` requests of a run are in flight, even with many more lines read ahead into
    the hosts' lanes; and each host's row is created once, however many of its results were read
    before that row existed."""
    run_id = f"inflight-{window}"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=12, tasks=4)
    proxy.rules = [Rule("delay", "POST", "/api/v1/results", seconds=0.05)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy, window=window), [run_id], timeout=60)
    assert outcome.status == "done", outcome.message
    assert proxy.max_inflight == window
    assert proxy.count("POST", "/api/v1/hosts") == 12
    assert_exactly_once(ara, run_id, spooled)


async def test_a_slow_host_does_not_hold_up_the_others_or_the_next_tasks(cfg, ara, proxy):
    """One host's result hangs for a second: its later results wait in its lane without taking a
    slot of the window, so the other hosts go on and the next tasks' rows are created meanwhile
    (the flusher reads up to 4 windows of lines ahead). Before, the waiting results held slots and
    the window filled up behind the slow host."""
    run_id = "slow-host-1"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=4, tasks=8)
    proxy.rules = [Rule("delay", "POST", "/api/v1/results", every=4, times=1, seconds=1.0)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy, window=4), [run_id], timeout=60)
    assert outcome.status == "done", outcome.message
    late = proxy.timeline.index(("answered", "POST", "/api/v1/results", "delay"))
    tasks_before = sum(1 for x in proxy.timeline[:late] if x[:3] == ("sent", "POST", "/api/v1/tasks"))
    assert tasks_before == 8  # every task's row, while the slow result was still unanswered
    assert_exactly_once(ara, run_id, spooled)


async def test_connection_refused_then_back(cfg, ara, proxy, spool_dir):
    """Ara's port closed: the flush gives up at its timeout with the spool kept; later all lands once."""
    run_id = "refused-1"
    events = emit_events(spool_dir, run_id, 4)
    dead = Config(server="http://127.0.0.1:9", spool_dir=spool_dir, timeout=2, max_backoff=0.2)
    t0 = time.monotonic()
    [outcome] = await oneshot.flush(dead, [run_id], timeout=1.5)
    assert outcome.status == "unreachable" and "cannot connect" in outcome.message
    assert time.monotonic() - t0 < 5
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.offset == 0 and st.last_error and st.clean
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done"
    assert_exactly_once(ara, run_id, events)


async def test_dropped_requests_are_resent(cfg, ara, proxy):
    run_id = "drop-1"
    events = emit_events(cfg.spool_dir, run_id, 6)
    proxy.rules = [Rule("drop", "POST", "/api/v1/results", every=2)]
    [outcome] = await oneshot.flush(proxied(cfg, proxy), [run_id], timeout=60)
    assert outcome.status == "done"
    assert_exactly_once(ara, run_id, events)


async def test_one_refused_event_is_quarantined_and_the_rest_go_on(cfg, ara, proxy):
    run_id = "q413-1"
    events = emit_events(cfg.spool_dir, run_id, 5)
    proxy.rules = [Rule("respond", "POST", "/api/v1/results", times=1, status=413, body="Request Entity Too Large")]
    [outcome] = await oneshot.flush(proxied(cfg, proxy), [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 1
    assert_exactly_once(ara, run_id, events[1:])
    [rec] = [json.loads(x) for x in (cfg.spool_dir / f"{run_id}.rejected.jsonl").read_text().splitlines()]
    assert "413" in rec["reason"] and json.loads(rec["raw"])["seq"] == events[0]["seq"]


async def test_auth_refused_stops_the_run_and_keeps_the_spool(cfg, proxy):
    run_id = "auth-1"
    emit_events(cfg.spool_dir, run_id, 3)
    proxy.rules = [Rule("respond", None, "/api/v1/", status=401, body='{"detail":"Invalid username/password."}')]
    c = proxied(cfg, proxy, username="ara", password="wrong-secret")
    [outcome] = await oneshot.flush(c, [run_id], timeout=30)
    assert outcome.status == "auth"
    assert "401" in outcome.message and "basic" in outcome.message and "wrong-secret" not in outcome.message
    st = load(RunPaths.of(cfg.spool_dir, run_id))
    assert st.offset == 0 and st.quarantined == 0
    assert len(proxy.log) == 1  # the first request (the API root check) was refused: nothing more sent


async def test_flush_exit_codes(cli_env, proxy, spool_dir, ara_server):
    """One clear stderr line and a distinct exit code for each way a flush can end."""
    def flush(server, *extra):
        env = dict(cli_env, ARA_API_SERVER=server, ARA_API_TIMEOUT="2")
        return subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--timeout", "2", *extra],
                              env=env, capture_output=True, text=True)

    emit_events(spool_dir, "codes-1", 2)
    loop = asyncio.get_running_loop()
    p = await loop.run_in_executor(None, flush, "http://127.0.0.1:9")
    assert p.returncode == 3 and "Ara unreachable, spool kept" in p.stderr and "Traceback" not in p.stderr
    proxy.rules = [Rule("respond", None, "/api/v1/", status=401, times=1, body="{}")]
    p = await loop.run_in_executor(None, flush, proxy.url)
    assert p.returncode == 4 and "auth refused" in p.stderr
    proxy.rules = [Rule("respond", "POST", "/api/v1/results", times=1, status=400, body='{"x":["bad"]}')]
    p = await loop.run_in_executor(None, flush, proxy.url)
    assert p.returncode == 5 and "quarantined" in p.stderr
    emit_events(spool_dir, "codes-1", 1)
    proxy.rules = [Rule("empty", "POST", "/api/v1/results", times=1)]  # Ara committed, the body is empty
    p = await loop.run_in_executor(None, flush, proxy.url)
    assert p.returncode == 7 and "empty body" in p.stderr and "quarantined" not in p.stderr, p.stderr
    p = await loop.run_in_executor(None, flush, ara_server.url)
    assert p.returncode == 0, p.stderr
    env = dict(cli_env, ARA_API_SERVER="ftp://nope")
    p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "ARA_API_SERVER" in p.stderr
