"""Ship spooled runs to a real Ara and check what a user of Ara sees."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from ara_spool.flusher import oneshot
from ara_spool.spool import schema
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.runs import assert_once_in_host_order, emit_events, spool_run

pytestmark = pytest.mark.ara_matrix  # the whole file also runs against Ara 1.7.x (tests/matrix.sh)

RESULT_SHOWN = {("ok", False): "ok", ("ok", True): "changed", ("failed", False): "failed",
                ("failed", True): "ignored"}


def shown_status(r):
    return RESULT_SHOWN.get((r["status"], r["changed"] if r["status"] == "ok" else r["ignore_errors"]), r["status"])


async def test_full_run_lands_as_spooled(cfg, ara, spool_dir):
    """With a window of 1 (one request at a time, as before lanes): Ara's ids follow spool order."""
    run_id = "run-full-1"
    spooled = spool_run(spool_dir, run_id, hosts=3, tasks=6, plays=2)
    cfg.window = 1
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 0

    pb = ara.playbook_for(run_id)
    assert pb["status"] == "completed" and pb["ended"] is not None
    assert pb["name"] == f"flow {run_id}" and pb["ansible_version"] == "2.19.14"
    labels = {label["name"] for label in pb["labels"]}
    assert {f"run_id:{run_id}", "env:test", "branch:main"} <= labels

    results = ara.results(pb["id"])
    assert len(results) == len(spooled) == 36
    # Order by id and by started both equal spool order.
    assert [r["id"] for r in results] == sorted(r["id"] for r in results)
    started = [schema.parse_time(r["started"]) for r in results]
    assert started == sorted(started)
    for got, want in zip(results, spooled, strict=True):
        assert schema.parse_time(got["started"]) == schema.parse_time(want["started"])
        assert schema.parse_time(got["ended"]) == schema.parse_time(want["ended"])
        assert got["duration"] == "00:00:00.003000"
        assert got["status"] == shown_status(want)
    # Task and host names, content.
    tasks = {t["id"]: t for t in ara.all("tasks", playbook=pb["id"])}
    hosts = {h["id"]: h for h in ara.all("hosts", playbook=pb["id"])}
    assert sorted(h["name"] for h in hosts.values()) == ["host0", "host1", "host2"]
    assert all(h["ok"] == 6 for h in hosts.values())
    for got, want in zip(results, spooled, strict=True):
        assert tasks[got["task"]]["name"] == want["task_name"]
        assert hosts[got["host"]]["name"] == want["host"]
    assert all(t["status"] == "completed" and t["ended"] for t in tasks.values())
    plays = ara.all("plays", playbook=pb["id"])
    assert len(plays) == 2 and all(p["status"] == "completed" for p in plays)
    detail = ara.result(results[5]["id"])
    assert detail["content"] == spooled[5]["content"]

    st = load(RunPaths.of(spool_dir, run_id))
    assert st.ended and st.final_status == "completed" and st.clean and st.shipped > 0
    # One request per result and per task (tasks are created finished: no end PATCH), plus a
    # create and a stats PATCH per host, a create and an end per play, 5 for the playbook/file, and
    # 2 for the read-back (the playbooks labelled with the run, its results: 1,000 a request).
    assert st.requests <= len(spooled) + len(tasks) + 2 * len(hosts) + 2 * len(plays) + 5 + 2


async def test_same_run_id_reuses_one_playbook(cfg, ara, spool_dir):
    run_id = "run-reuse-1"
    spool_run(spool_dir, run_id, hosts=1, tasks=2)
    await oneshot.flush(cfg, [run_id], timeout=60)
    # A re-run with the same id: the spool grows with a second run_start.
    spool_run(spool_dir, run_id, hosts=2, tasks=2)
    await oneshot.flush(cfg, [run_id], timeout=60)
    pb = ara.playbook_for(run_id)
    assert len(ara.results(pb["id"])) == 2 + 4
    # Even with the state gone (a new controller, a wiped state dir), the label finds the playbook.
    RunPaths.of(spool_dir, run_id).state.unlink()
    other = spool_dir.parent / "other-spool"
    other.mkdir()
    spool_run(other, run_id, hosts=1, tasks=1)
    cfg.spool_dir = other
    await oneshot.flush(cfg, [run_id], timeout=60)
    assert ara.playbook_for(run_id)["id"] == pb["id"]
    assert len(ara.results(pb["id"])) == 7


async def test_explicit_events_via_cli(cli_env, ara, spool_dir):
    run_id = "run-emit-1"
    for i, (task, host, status) in enumerate([("pr_status_check", "ci", "ok"), ("deploy", "web1", "failed"),
                                               ("pr_status_check", "ci", "skipped")]):
        subprocess.run([sys.executable, "-m", "ara_spool.flusher", "emit", "--run", run_id, "--task", task,
                        "--host", host, "--status", status, "--duration", "1.5",
                        "--details", json.dumps({"i": i, "ok": True})],
                       env=cli_env, check=True)
    proc = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--run", run_id, "--timeout", "60"],
                          env=cli_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pb = ara.playbook_for(run_id)
    # As Ara's UI lists them: by start time (two hosts may ship side by side, ids in completion order).
    results = sorted(ara.results(pb["id"]), key=lambda r: schema.parse_time(r["started"]))
    assert [r["status"] for r in results] == ["ok", "failed", "skipped"]
    assert [r["duration"] for r in results] == ["00:00:01.500000"] * 3
    tasks = {t["id"]: t["name"] for t in ara.all("tasks", playbook=pb["id"])}
    assert [tasks[r["task"]] for r in results] == ["pr_status_check", "deploy", "pr_status_check"]
    assert len(tasks) == 2  # one Ara task per name
    assert ara.result(results[1]["id"])["content"] == {"i": 1, "ok": True}
    # status --json shows it shipped, with the Ara link.
    proc = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "status", "--json"], env=cli_env,
                          capture_output=True, text=True, check=True)
    [row] = [r for r in json.loads(proc.stdout) if r["run"] == run_id]
    assert row["pending"] == 0 and row["shipped"] == 3 and row["playbook_id"] == pb["id"]
    assert row["ara_url"].endswith(f"/playbooks/{pb['id']}.html")


async def test_many_runs_concurrently_each_in_order(cfg, ara, spool_dir):
    runs = {f"run-conc-{i}": emit_events(spool_dir, f"run-conc-{i}", 40, hosts=2) for i in range(6)}
    outcomes = await oneshot.flush(cfg, None, timeout=120)
    assert {o.run_id for o in outcomes} >= set(runs)
    assert all(o.status == "done" for o in outcomes)
    for run_id, events in runs.items():
        assert_once_in_host_order(ara, run_id, [(e["event"]["host"], e["ts"]) for e in events])


async def test_oversized_content_is_truncated_with_a_marker(cfg, ara, spool_dir):
    run_id = "run-big-1"
    from ara_spool.spool import writer

    writer.append(run_id, "event", {"task": "big", "status": "ok", "host": "h", "details": {"blob": "x" * 3_000_000}},
                  spool_dir=spool_dir)
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 0
    [r] = ara.results(ara.playbook_for(run_id)["id"])
    content = ara.result(r["id"])["content"]
    assert content["ara_spool_truncated"] is True and content["original_bytes"] > 3_000_000


@pytest.mark.parametrize("bad", [b"{not json\n", b'{"v": 9, "kind": "result"}\n', b"\xff\xfe\n"])
async def test_bad_lines_are_quarantined_and_do_not_block(cfg, ara, spool_dir, bad):
    run_id = "run-bad-" + str(abs(hash(bad)) % 10000)
    emit_events(spool_dir, run_id, 2)
    with open(spool_dir / f"{run_id}.jsonl", "ab") as fh:
        fh.write(bad)
    emit_events(spool_dir, run_id, 2)
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 1
    assert len(ara.results(ara.playbook_for(run_id)["id"])) == 4
    rejected = [json.loads(x) for x in (spool_dir / f"{run_id}.rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and rejected[0]["reason"]
    assert (rejected[0].get("raw", "") + "\n").encode() == bad or "raw_b64" in rejected[0]


async def test_explicit_event_duration_sets_started(cfg, ara, spool_dir):
    run_id = "run-dur-1"
    [ev] = emit_events(spool_dir, run_id, 1)
    await oneshot.flush(cfg, [run_id], timeout=60)
    [r] = ara.results(ara.playbook_for(run_id)["id"])
    assert schema.parse_time(r["ended"]) - schema.parse_time(r["started"]) == timedelta(seconds=0.25)
    assert schema.parse_time(r["ended"]) == schema.parse_time(ev["ts"])


async def test_window_keeps_each_hosts_order_and_parents_first(cfg, ara, spool_dir):
    """With a window (several hosts in flight): per host, Ara's ids and `started` follow spool
    order; every task's row precedes its results; tasks and plays end after all their results."""
    run_id = "run-window-1"
    spooled = spool_run(spool_dir, run_id, hosts=12, tasks=5, plays=2)
    cfg.window = 8
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 0
    pb = ara.playbook_for(run_id)
    results = ara.results(pb["id"])
    assert len(results) == len(spooled) == 120
    hosts = {h["id"]: h["name"] for h in ara.all("hosts", playbook=pb["id"])}
    tasks = {t["id"]: t for t in ara.all("tasks", playbook=pb["id"])}
    for name in {r["host"] for r in spooled}:
        mine = [r for r in results if hosts[r["host"]] == name]
        want = [r for r in spooled if r["host"] == name]
        assert [schema.parse_time(r["started"]) for r in mine] == [schema.parse_time(r["started"]) for r in want]
        assert [tasks[r["task"]]["name"] for r in mine] == [r["task_name"] for r in want]
    for r in results:  # each task's row was made before any of its results
        assert schema.parse_time(tasks[r["task"]]["created"]) <= schema.parse_time(r["created"])
    assert all(t["status"] == "completed" for t in tasks.values())
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.clean and st.offset == RunPaths.of(spool_dir, run_id).spool_size()
