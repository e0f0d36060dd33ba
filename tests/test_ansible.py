"""Real ansible-playbook runs with the ara-spool callback, action plugin and role, into a real Ara."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ara_spool.spool import schema
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.reader import read_lines
from ara_spool.spool.state import load

from tests.ansible_run import BIN, PLAYBOOKS, ansible_env, playbook_cmd, run_playbook, wait_for_task_start
from tests.conftest import ROOT

PLUGINS = Path(__file__).resolve().parent / "plugins"  # test-only Ansible plugins


@pytest.fixture
def env(tmp_path, spool_dir, ara_server):
    return ansible_env(tmp_path, spool_dir, ara_server.url)


def rid() -> str:
    return f"ans-{uuid.uuid4()}"


def by_id(items):
    return {i["id"]: i for i in items}


def results_view(ara, run_id):
    pb = ara.playbook_for(run_id)
    tasks = by_id(ara.all("tasks", playbook=pb["id"]))
    hosts = by_id(ara.all("hosts", playbook=pb["id"]))
    rows = [(tasks[r["task"]]["name"], hosts[r["host"]]["name"], r["status"], r) for r in ara.results(pb["id"])]
    return pb, tasks, hosts, rows


@pytest.mark.ansible_matrix
@pytest.mark.ara_matrix
def test_multi_play_run_is_complete_in_ara_when_ansible_exits(env, ara, spool_dir):
    run_id = rid()
    proc = run_playbook(env, "multi_play.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # No flush after exit: what Ara holds now is what the run left there.
    pb, tasks, hosts, rows = results_view(ara, run_id)
    assert pb["status"] == "completed" and pb["ended"]
    assert pb["path"].endswith("multi_play.yml") and pb["ansible_version"]
    assert {p["name"] for p in ara.all("plays", playbook=pb["id"])} == {"web tier", "db tier", "everyone"}
    assert all(p["status"] == "completed" for p in ara.all("plays", playbook=pb["id"]))
    seen = {(t, h): s for t, h, s, _ in rows}
    for h in ("web1", "web2", "web3"):
        assert seen[("greet", h)] == "ok"
        assert seen[("change something", h)] == "changed"
        assert seen[("fail but ignore", h)] == "ignored"
        assert seen[("loop items", h)] == "ok"
        assert seen[("restart app", h)] == "ok"
        assert seen[("final", h)] == "ok"
    assert seen[("only on web2", "web2")] == "ok" and seen[("only on web2", "web1")] == "skipped"
    assert seen[("break on web3", "web3")] == "failed" and seen[("rescued", "web3")] == "ok"
    assert seen[("db check", "db1")] == "ok" and seen[("final", "db1")] == "ok"
    assert all(r["ignore_errors"] for t, _, _, r in rows if t == "fail but ignore")
    handler_tasks = [t for t in tasks.values() if t["handler"]]
    assert {t["name"] for t in handler_tasks} >= {"restart app"}
    delegated = [r for t, _, _, r in rows if t == "delegated to db1"]
    db1 = next(i for i, h in hosts.items() if h["name"] == "db1")
    assert len(delegated) == 3 and all(r["delegated_to"] == [db1] for r in delegated)
    # Per host, Ara's order by id agrees with the start times; tasks follow one another.
    for h in ("web1", "web2", "web3"):
        mine = [r for _, hn, _, r in rows if hn == h]
        assert [schema.parse_time(r["started"]) for r in mine] == sorted(schema.parse_time(r["started"]) for r in mine)
    # Per host, results follow the tasks in the order they were created (across hosts, a window
    # ships side by side: ids there are in completion order, as with ara_default).
    for h in ("web1", "web2", "web3", "db1"):
        task_order = [r["task"] for _, hn, _, r in rows if hn == h]
        assert task_order == sorted(task_order), h
    # Every spooled result reached Ara, once.
    spooled = [ln.event for ln in read_lines(spool_dir / f"{run_id}.jsonl") if ln.event["kind"] == "result"]
    assert len(rows) == len(spooled) > 30
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.ended and st.clean and st.quarantined == 0


@pytest.mark.ansible_matrix
@pytest.mark.ara_matrix
def test_seed_pattern_loses_nothing(env, ara):
    run_id = rid()
    proc = run_playbook(env, "seed_pattern.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, tasks, _, rows = results_view(ara, run_id)
    explicit = [(t, h, s, r) for t, h, s, r in rows
                if tasks[r["task"]]["action"] == "ara_spool_event" and t != "explicit event"]
    seed = [(t, h, s, r) for t, h, s, r in explicit if t != "pr_comment"]
    # The ara_spool_event task has its own result per host, as Ansible reports it.
    assert sorted((h, s) for t, h, s, _ in rows if t == "explicit event") == [("web1", "ok"), ("web2", "ok"),
                                                                               ("web3", "ok")]
    assert len(seed) == 9  # 3 payloads x 3 hosts, though the handler ran once per host
    want = {("pr_status_check", 1, "ok"), ("pr_merge_check", 2, "failed"), ("pr_label_check", 3, "skipped")}
    for t, h, s, r in seed:
        content = ara.result(r["id"])["content"]
        assert (t, content["step"], s) in want and content["host"] == h
    for h in ("web1", "web2", "web3"):  # in order, each with its own time
        mine = [r for t, hn, _, r in seed if hn == h]
        assert [tasks[r["task"]]["name"] for r in mine] == ["pr_status_check", "pr_merge_check", "pr_label_check"]
        assert len({r["started"] for r in mine}) == 3
    assert sorted(h for t, h, _, _ in explicit if t == "pr_comment") == ["web1", "web2", "web3"]


@pytest.mark.parametrize("playbook,rc,status,expect", [
    ("failures.yml", 2, "failed", {("notify a handler", "web2"), ("web2 fails", "web2"), ("after the failure", "web1"),
                                   ("never runs on web2", "web1")}),
    ("fatal.yml", 2, "failed", {("before", "web1"), ("before", "web3"), ("web1 fails, all stop", "web1")}),
    ("end_play.yml", 0, "completed", {("before", "web1"), ("before", "web2"), ("before", "web3")}),
])
@pytest.mark.ansible_matrix
def test_failures_lose_nothing_and_end_with_the_right_status(env, ara, playbook, rc, status, expect):
    run_id = rid()
    proc = run_playbook(env, playbook, "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
    assert proc.returncode == rc, proc.stdout + proc.stderr
    pb, _, _, rows = results_view(ara, run_id)
    assert pb["status"] == status
    got = {(t, h) for t, h, _, _ in rows}
    assert expect <= got
    assert not any(t in ("never", "never runs on web2") and h == "web2" for t, h in got)
    if playbook == "failures.yml":
        assert {s for t, h, s, _ in rows if (t, h) == ("web2 fails", "web2")} == {"failed"}


@pytest.mark.ansible_matrix
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_records_what_happened_and_expires_the_run(env, ara, spool_dir, sig, tmp_path):
    run_id = rid()
    # Output to a file, not a pipe: on SIGTERM, ansible-core 2.17 and 2.18 exit without stopping
    # their forked workers, which keep the pipe open until their task ends (67 s here).
    output = tmp_path / "output.txt"
    with open(output, "w") as out_fh:
        # As from a terminal: a shell without job control starts background commands with SIGINT
        # ignored, and ansible-core <= 2.18 keeps that (2.19 installs its own handler), so a CI
        # started in the background would never see the interrupt.
        proc = subprocess.Popen(playbook_cmd("slow.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}"),
                                env=env, stdout=out_fh, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_task_start(spool_dir / f"{run_id}.jsonl", "long")
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    out = output.read_text()
    subprocess.run(["pkill", "-KILL", "-f", "^sleep 67$"], check=False)
    assert proc.returncode != 0
    pb, _, _, rows = results_view(ara, run_id)
    assert pb["status"] == "expired", out
    assert {h for t, h, _, _ in rows if t == "quick"} == {"web1", "web2", "web3"}
    assert load(RunPaths.of(spool_dir, run_id)).final_status == "expired"


def _interrupt_slow_steps(env: dict[str, str], spool_dir: Path, run_id: str, sigint_at_start) -> tuple[int, str]:
    """Run slow_steps.yml (started with SIGINT set to `sigint_at_start`), send it SIGINT once its
    first task has started: (its exit code, its output)."""
    proc = subprocess.Popen(playbook_cmd("slow_steps.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint_at_start))
    wait_for_task_start(spool_dir / f"{run_id}.jsonl")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


@pytest.mark.ansible_matrix
def test_an_ignored_interrupt_leaves_the_run_going(env, ara, spool_dir):
    """ansible-playbook started with SIGINT ignored (a background job of a shell without job
    control). ansible-core <= 2.18 keeps it ignored and the play goes on; 2.19 installs its own
    handler and stops. Either way the recording says what the play did: the callback once took an
    ignored signal over and marked the run expired while the play went on to complete."""
    run_id = rid()
    rc, out = _interrupt_slow_steps(env, spool_dir, run_id, signal.SIG_IGN)
    went_on = rc == 0
    assert went_on or "User interrupted execution" in out, out
    pb, _, _, rows = results_view(ara, run_id)
    assert pb["status"] == ("completed" if went_on else "expired"), out
    assert load(RunPaths.of(spool_dir, run_id)).final_status == pb["status"]


@pytest.mark.ansible_matrix
def test_an_interrupt_the_play_survives_leaves_the_run_going(env, ara, spool_dir, tmp_path):
    """SIGINT reaches a handler before ara-spool's that does not stop the play (here a test callback;
    in CI, ansible-core's KeyboardInterrupt that Python dropped during a fork). The play completes,
    and so does its run in Ara: an interrupt alone does not end a run, the play's end does."""
    run_id = rid()
    note = tmp_path / "sigint-note"
    env = dict(env, ANSIBLE_CALLBACK_PLUGINS=f"{env['ANSIBLE_CALLBACK_PLUGINS']}:{PLUGINS / 'callback'}",
               ANSIBLE_CALLBACKS_ENABLED="swallow_sigint", SWALLOW_SIGINT_NOTE=str(note))
    rc, out = _interrupt_slow_steps(env, spool_dir, run_id, signal.SIG_DFL)
    assert note.read_text() == "2\n", out  # ara-spool's handler passed the signal on, once
    assert rc == 0, out
    pb, _, _, rows = results_view(ara, run_id)
    assert pb["status"] == "completed", out
    assert load(RunPaths.of(spool_dir, run_id)).final_status == "completed"
    assert len(rows) == 8  # slow_steps.yml: 8 steps on one host, each recorded once


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    out = {}
    for line in stdout.splitlines()[stdout.splitlines().index("PLAY RECAP " + "*" * 69):]:
        host, _, counters = line.partition(" : ")
        if counters:
            out[host.strip()] = {k: int(v) for k, v in (c.split("=") for c in counters.split())}
    return out


def test_disabled_changes_nothing(env, ara, spool_dir, tmp_path):
    """ara_enabled false (the role's default): same rc and recap as the play without ara-spool."""
    run_id = rid()
    before = tmp_path / "before.yml"  # the playbook as it was before the role was added
    before.write_text((PLAYBOOKS / "multi_play.yml").read_text().replace("  roles: [ara_spool]\n", ""))
    ours = ("ANSIBLE_CALLBACK", "ANSIBLE_ACTION", "ANSIBLE_ROLES")
    plain_env = {k: v for k, v in env.items() if not k.startswith(ours)}
    with_role = run_playbook(env, "multi_play.yml", "-e", f"ara_run_id={run_id}")
    without = subprocess.run(playbook_cmd("multi_play.yml")[:3] + [str(before)], env=plain_env, capture_output=True,
                             text=True, timeout=180)
    assert with_role.returncode == without.returncode == 0, without.stdout + without.stderr
    a, b = _recap(with_role.stdout), _recap(without.stdout)
    assert a.keys() == b.keys()
    for host in a:  # only the role's skipped register step differs
        same_a = {k: v for k, v in a[host].items() if k != "skipped"}
        assert same_a == {k: v for k, v in b[host].items() if k != "skipped"}
        assert a[host]["skipped"] - b[host]["skipped"] in (0, 1)
    assert list(spool_dir.iterdir()) == []  # no spool file, no flusher (it would write its log here)
    assert ara.playbooks_for(run_id) == []
    # Nothing from ara-spool in the output; paths are left out, as the checkout's may be ".../ara-spool/".
    output = (with_role.stdout + with_role.stderr).replace(str(ROOT), "<checkout>").replace(sys.prefix, "<venv>")
    assert "ara-spool" not in output, output


def test_check_mode_and_tags_still_record(env, ara, tmp_path):
    run_id = rid()
    proc = run_playbook(env, "tags_check.yml", "--check", "--tags", "deploy", "-e", "ara_enabled=true",
                        "-e", f"ara_run_id={run_id}", "-e", f"scratch={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pb, _, _, rows = results_view(ara, run_id)
    names = {t for t, _, _, _ in rows}
    assert {"tagged change", "audit"} <= names and "untagged" not in names
    [audit] = [r for t, _, _, r in rows if t == "audit"]
    assert ara.result(audit["id"])["content"] == {"check": True}
    assert not (tmp_path / "file.txt").exists()


def test_rerun_with_the_same_id_adds_to_the_same_playbook(env, ara):
    run_id = rid()
    for _ in range(2):
        proc = run_playbook(env, "end_play.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}")
        assert proc.returncode == 0
    pb, _, _, rows = results_view(ara, run_id)
    assert [t for t, _, _, _ in rows].count("before") == 6


@pytest.mark.ansible_matrix
def test_generated_run_id_is_shared_by_callback_action_and_flusher(env, ara, spool_dir):
    proc = run_playbook(env, "seed_pattern.yml", "-e", "ara_enabled=true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [spool] = list(spool_dir.glob("*.jsonl"))
    run_id = spool.name.removesuffix(".jsonl")
    assert uuid.UUID(run_id).version == 4
    assert {ln.event["run"] for ln in read_lines(spool)} == {run_id}
    assert ara.playbook_for(run_id)["status"] == "completed"


def test_unreachable_ara_warns_or_fails_per_ara_fail_on_error(env, spool_dir):
    dead = dict(env, ARA_API_SERVER="http://127.0.0.1:9")
    for fail, rc in (("false", 0), ("true", 2)):
        run_id = rid()
        proc = run_playbook(dead, "seed_pattern.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}",
                            "-e", f"ara_fail_on_error={fail}", "-e", "ara_flush_timeout=2",
                            )
        assert proc.returncode == rc, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "not flushed" in out and "--server http://127.0.0.1:9" in out and "Traceback" not in out
        # Everything is still in the spool, for a later flush.
        assert any(ln.event["kind"] == "run_end" for ln in read_lines(spool_dir / f"{run_id}.jsonl"))


def test_in_play_flusher_off_leaves_shipping_to_the_daemon(env, ara, spool_dir, cli_env):
    run_id = rid()
    proc = run_playbook(env, "end_play.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}",
                        "-e", "ara_spool_flusher=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ara.playbooks_for(run_id) == []  # nothing shipped by the play itself
    assert not (spool_dir / f"{run_id}.flusher.log").exists()
    flush = subprocess.run([str(BIN / "ara-spool"), "flush", "--run", run_id], env=cli_env, capture_output=True,
                           text=True)
    assert flush.returncode == 0, flush.stderr
    pb, _, _, rows = results_view(ara, run_id)
    assert pb["status"] == "completed" and [t for t, _, _, _ in rows].count("before") == 3


def test_dead_ara_does_not_make_checkpoints_sit_out_their_timeout(env, spool_dir):
    """With nothing listening, the ara_flush checkpoint and the run's end give up once the flusher
    has failed for a few seconds, instead of waiting the whole ara_flush_timeout (30 s) each."""
    dead = dict(env, ARA_API_SERVER="http://127.0.0.1:9")
    run_id = rid()
    t0 = time.monotonic()
    proc = run_playbook(dead, "seed_pattern.yml", "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}",
                        "-e", "ara_flush_timeout=30")
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cannot connect" in proc.stdout + proc.stderr
    assert took < 40, f"the play took {took:.1f}s against a dead Ara"


def test_live_run_creates_each_task_finished_in_one_request(env, ara, spool_dir):
    """The in-play flusher holds a task (briefly) until its end is spooled: one request per task
    instead of a create and an end PATCH. 8 tasks of 0.3 s on one host, recorded via ARA_SPOOL_ENABLED."""
    run_id = rid()
    proc = run_playbook(dict(env, ARA_SPOOL_ENABLED="true", ARA_RUN_ID=run_id), "slow_steps.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pb, tasks, _, rows = results_view(ara, run_id)
    assert len(rows) == 8 and all(t["status"] == "completed" and t["ended"] for t in tasks.values())
    st = load(RunPaths.of(spool_dir, run_id))
    # API root check, playbook lookup+create+running, file, play (+end), host (+stats), playbook
    # end: 10 besides one task and one result per step.
    assert st.requests <= 8 * 2 + 10, st.requests


def test_ara_enabled_in_group_vars_is_seen(env, ara, spool_dir):
    run_id = rid()
    cmd = [str(BIN / "ansible-playbook"), "-i", str(PLAYBOOKS / "inventory_enabled.ini"),
           str(PLAYBOOKS / "end_play.yml"), "-e", f"ara_run_id={run_id}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pb, _, _, rows = results_view(ara, run_id)
    assert pb["status"] == "completed" and [t for t, _, _, _ in rows].count("before") == 3
    assert "callback is not active" not in proc.stdout + proc.stderr
