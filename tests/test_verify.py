"""`ara-spool verify [--repair] [--run ID] [--offline]` against spools and a real Ara."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.flusher.verify import raw_of, verify
from ara_spool.spool import writer
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load, save

from tests.runs import emit_events, spool_run


def cli(env: dict[str, str], *args: str) -> tuple[int, Any]:
    p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "verify", "--json", *args], env=env,
                       capture_output=True, text=True)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout)


def records(spool_dir: Path, run_id: str) -> list[dict[str, Any]]:
    path = spool_dir / f"{run_id}.rejected.jsonl"
    return [json.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def post(url: str, path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/api/v1/{path}", data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


async def test_clean_shipped_run_verifies_ok_with_ara(cfg, ara, cli_env, spool_dir):
    spool_run(spool_dir, "ver-ok", hosts=2, tasks=4)
    emit_events(spool_dir, "ver-ok-ev", 7)
    await oneshot.flush(cfg, None, timeout=60)
    code, report = cli(cli_env)
    assert code == 0, report
    by_run = {r["run"]: r for r in report}
    assert by_run["ver-ok"]["ara"]["results"] == by_run["ver-ok"]["ara"]["expected"] == 8
    assert by_run["ver-ok-ev"]["ara"] == {"server": cfg.server, "playbook": ara.playbook_for("ver-ok-ev")["id"],
                                          "results": 7, "expected": 7}
    assert all(r["ok"] and not r["problems"] for r in report)
    # Human output: one line per run.
    p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "verify", "--run", "ver-ok"], env=cli_env,
                       capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.count("\n") == 1 and "ver-ok: 22 event(s)" in p.stdout and "ok" in p.stdout
    pb = by_run["ver-ok"]["ara"]["playbook"]
    assert f"Ara at {cfg.server}: playbook {pb} holds 8 result(s), the shipped part of the spool made 8" in p.stdout
    assert "{" not in p.stdout, p.stdout  # words, not a Python dict


async def test_torn_tail_is_reported_and_repair_moves_it_to_quarantine_losing_no_byte(cfg, cli_env, ara, spool_dir):
    run_id = "ver-torn"
    emit_events(spool_dir, run_id, 3)
    path = spool_dir / f"{run_id}.jsonl"
    tail = b'{"v":1,"run":"ver-torn","seq":9,"ts":"2026-01-01T00:0'
    with open(path, "ab") as fh:
        fh.write(tail)
    original = path.read_bytes()
    code, [r] = cli(cli_env, "--run", run_id, "--offline")
    assert code == 5 and r["torn_tail_bytes"] == len(tail) and "torn tail" in r["problems"][0]
    assert path.read_bytes() == original  # without --repair nothing changes
    code, [r] = cli(cli_env, "--run", run_id, "--offline", "--repair")
    assert code == 0 and r["ok"] and "moved a torn tail" in r["repaired"][0], r
    [rec] = records(spool_dir, run_id)
    assert rec["offset"] == len(original) - len(tail) and raw_of(rec) == tail and "torn tail" in rec["reason"]
    assert path.read_bytes() + raw_of(rec) == original  # every byte is somewhere
    # The next append starts on a clean line; a flush ships all 4 events and quarantines nothing.
    writer.append(run_id, "event", {"task": "after", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.shipped == 4 and outcome.quarantined == 0
    report, ok = verify(cfg, [run_id])
    assert ok, report[0]["summary"]
    assert report[0]["ara"]["results"] == 4


async def test_bad_lines_pending_then_quarantined_then_lost_quarantine_repaired(cfg, cli_env, spool_dir):
    run_id = "ver-bad"
    emit_events(spool_dir, run_id, 2)
    with open(spool_dir / f"{run_id}.jsonl", "ab") as fh:
        fh.write(b"{broken\n\xff\xfe\n")
    emit_events(spool_dir, run_id, 2)
    report, ok = verify(cfg, [run_id])
    assert not ok and report[0]["bad_lines"] == 2
    assert all("the next flush quarantines it" in p for p in report[0]["problems"])
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.quarantined == 2
    report, ok = verify(cfg, [run_id])
    assert ok and report[0]["quarantined"] == 2 and report[0]["ara"]["results"] == 4, report[0]["summary"]
    # The quarantine file is lost: the bad lines the flusher passed are accounted for nowhere.
    kept = [raw_of(r) for r in records(spool_dir, run_id)]
    (spool_dir / f"{run_id}.rejected.jsonl").unlink()
    code, [r] = cli(cli_env, "--run", run_id)
    assert code == 5 and all("not in the quarantine" in p for p in r["problems"]) and len(r["problems"]) == 2
    code, [r] = cli(cli_env, "--run", run_id, "--repair")
    assert code == 0 and len(r["repaired"]) == 2, r
    assert [raw_of(x) for x in records(spool_dir, run_id)] == kept
    code, [r] = cli(cli_env, "--run", run_id, "--repair")  # idempotent: nothing more to do
    assert code == 0 and r["repaired"] == [] and len(records(spool_dir, run_id)) == 2


async def test_ara_missing_or_doubled_results_and_second_playbook_are_problems(cfg, ara, ara_server, spool_dir):
    run_id = "ver-ara"
    emit_events(spool_dir, run_id, 5)
    await oneshot.flush(cfg, [run_id], timeout=60)
    pb = ara.playbook_for(run_id)
    results = ara.results(pb["id"])
    # One more result under the playbook, as a replayed POST would make.
    dup = {k: results[0][k] for k in ("playbook", "play", "task", "host", "status", "started", "ended")}
    extra = post(ara_server.url, "results", {**dup, "content": {}})
    report, ok = verify(cfg, [run_id])
    assert not ok and "1 more" in report[0]["summary"] and "doubled" in report[0]["summary"]
    # A lost one.
    post(ara_server.url, f"results/{extra['id']}", {}, method="DELETE")
    post(ara_server.url, f"results/{results[2]['id']}", {}, method="DELETE")
    report, ok = verify(cfg, [run_id])
    assert not ok and "1 missing" in report[0]["summary"], report[0]["summary"]
    assert report[0]["ara"] == {"server": cfg.server, "playbook": pb["id"], "results": 4, "expected": 5}
    # A second playbook with the run's label breaks "one playbook per run".
    post(ara_server.url, "playbooks", {"path": "/x.yml", "ansible_version": "2.19", "labels": [f"run_id:{run_id}"]})
    report, ok = verify(cfg, [run_id])
    assert any("2 playbooks in Ara carry this run's label" in p for p in report[0]["problems"])


async def test_unclean_state_with_extra_results_in_ara_is_a_note_not_a_problem(cfg, ara, spool_dir):
    """A flusher killed after creating results but before its checkpoint: Ara is ahead of the state."""
    run_id = "ver-unclean"
    emit_events(spool_dir, run_id, 6)
    await oneshot.flush(cfg, [run_id], timeout=60)
    paths = RunPaths.of(spool_dir, run_id)
    st = load(paths)
    ends = [ln for ln in open(paths.spool, "rb")]
    st.offset = sum(len(x) for x in ends[:4])  # as if the last checkpoint was after 4 events
    st.clean = False
    # ...and the floor it would have recorded then: below the results of the two lines past the
    # checkpoint (the window ships hosts side by side: Ara's ids are in completion order, so the
    # 4th id need not be the 4th event's).
    later = [r["id"] for r in ara.results(st.sink["playbook"]) if ara.result(r["id"])["content"]["i"] >= 4]
    st.sink["last_result"] = min(later) - 1
    save(paths, st)
    report, ok = verify(cfg, [run_id])
    assert ok, report[0]["summary"]
    assert "2 more" in report[0]["summary"] and "next flush reconciles" in report[0]["summary"]
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and len(ara.results(ara.playbook_for(run_id)["id"])) == 6


def test_state_inconsistent_with_spool(cfg, spool_dir):
    run_id = "ver-state"
    emit_events(spool_dir, run_id, 3)
    paths = RunPaths.of(spool_dir, run_id)
    size = paths.spool.stat().st_size
    for offset, want in ((size + 10, "past the spool's end"), (5, "not at a line boundary")):
        save(paths, load(paths).__class__(run_id, offset=offset))
        report, ok = verify(cfg, [run_id], ara=False)
        assert not ok and any(want in p for p in report[0]["problems"]), report[0]["problems"]
    paths.state.write_text("{corrupt")
    report, ok = verify(cfg, [run_id], ara=False)
    assert not ok and any("corrupt" in p for p in report[0]["problems"])


def test_unsafe_spool_dir_entries_and_modes_are_reported(cfg, spool_dir, tmp_path):
    emit_events(spool_dir, "ver-mode", 1)
    os.chmod(spool_dir / "ver-mode.jsonl", 0o644)
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b"")
    (spool_dir / "ver-link.jsonl").symlink_to(outside)
    (spool_dir / "-rf.jsonl").write_bytes(b"")
    report, ok = verify(cfg, None, ara=False)
    assert not ok
    text = "\n".join(r["summary"] for r in report)
    assert "ver-mode.jsonl has mode 0644" in text
    assert "ver-link.jsonl is a symlink" in text and "-rf.jsonl: unsafe run id" in text
    # Named explicitly, a symlinked spool is a clear problem, not a crash, and is not followed.
    report, ok = verify(cfg, ["ver-link"], ara=False)
    assert not ok and "symlink" in report[0]["summary"] and outside.read_bytes() == b""
    os.chmod(spool_dir, 0o755)
    report, ok = verify(cfg, ["ver-mode"], ara=False)
    assert any("spool dir" in r["summary"] and "0755" in r["summary"] for r in report)


def test_ara_unreachable_is_a_note(spool_dir):
    emit_events(spool_dir, "ver-down", 2)
    cfg = Config(server="http://127.0.0.1:9", spool_dir=spool_dir, timeout=2)
    report, ok = verify(cfg, None)
    assert ok and "Ara at http://127.0.0.1:9 not compared" in report[0]["summary"], report
    assert "cannot connect" in report[0]["summary"]


def test_verify_asks_the_ara_the_run_went_to_and_names_it(cli_env, ara, ara_server, spool_dir):
    """With ARA_API_SERVER unset, runs shipped elsewhere were checked against the default Ara
    (http://127.0.0.1:8000): "Ara has no playbook for this run", exit 5, and it did not say which Ara."""
    spool_run(spool_dir, "ver-where", hosts=2, tasks=2)
    r = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--quiet"], env=cli_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    unset = {k: v for k, v in cli_env.items() if k != "ARA_API_SERVER"}
    p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "verify", "--run", "ver-where"], env=unset,
                       capture_output=True, text=True, timeout=120)
    pb = ara.playbook_for("ver-where")["id"]
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"Ara at {ara_server.url}: playbook {pb} holds 4 result(s)" in p.stdout, p.stdout
    # --server names another Ara: that one is asked, and named.
    code, [report] = cli(unset, "--run", "ver-where", "--server", "http://127.0.0.1:9")
    assert code == 0 and "Ara at http://127.0.0.1:9 not compared" in report["summary"], report
