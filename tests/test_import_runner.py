"""`ara-spool import runner`: ansible-runner runs into Ara, as ara_default records them, exactly once.

tests/playbooks/runner/site.yml (4 plays: linear with facts, a loop with items, no_log, a skip, an
ignored failure and a handler; strategy: free; serial: 1; a failure and an unreachable host) is run
through ansible-runner and, at the same time, by ansible-playbook with Ara's own callback
(ara_default) into Ara A. The artifact dir is imported into Ara B. Both are read back whole and
compared field by field (tests/test_parity.py's normalising); only the gaps in GAPS may remain,
each checked to be really there, and the README's import section lists exactly those.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ara_spool.flusher.importer import event_files
from ara_spool.handlers import parity, runner_events

from tests.ansible_run import BIN, ansible_env
from tests.ara import AraAPI, AraServer
from tests.runner_artifacts import enlarge, load_events, private_data_dir, run_runner, runner_cmd
from tests.test_parity import differences, normalise, read_all

ROOT = Path(__file__).resolve().parent.parent

# What the job events cannot give, so the import differs from ara_default: (field, why). The
# README's "Import from ansible-runner / AWX / ansible-navigator" lists one row per entry.
GAPS = {
    "playbook.ansible_version": "not in the job events: `unknown`",
    "playbook.controller": "not in the job events: Ara's default (`localhost`)",
    "playbook.user": "not in the job events: empty",
    "playbook.python_version": "not in the job events: empty",
    "playbook.client_version": "`ara-spool <version> import`",
    "playbook.arguments": "not recorded: the artifact's `command` holds the whole environment, so nothing "
                          "is taken from it but the playbook's path (ignored_arguments has nothing to mask)",
    "playbook.labels": "`run_id:<ident>` and `source:ansible-runner` (plus ARA_DEFAULT_LABELS); no "
                       "`check:`/`tags:` argument labels",
    "tasks.tags": "not in the job events: empty",
    "results.no_log": "ansible-runner keeps only `censored` of a no_log result: its `changed` is lost, so the "
                      "result is `ok`, not `changed`",
    "results.skipped": "a skipped result's content is empty: ansible-runner sends no result for a skip",
    "ansible_env": "ansible-runner strips `ansible_env` from facts: absent, where ara_default shows the "
                   "ignored_facts note",
    "files": "only the playbook and the task files, read from the project dir when it is here",
}


def _gathered(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env["ANSIBLE_FORKS"] = "4"
    return env


@pytest.fixture(scope="module")
def ara_default_server(tmp_path_factory):
    server = AraServer(tmp_path_factory.mktemp("ara-default-runner"), kind="gunicorn", workers=2)
    server.start()
    yield server
    server.cleanup()


def _import(env: dict[str, str], *paths: Path, args: tuple[str, ...] = (), timeout: float = 240):
    return subprocess.run([str(BIN / "ara-spool"), "import", "runner", *map(str, paths), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, ara_server, ara_default_server):
    """site.yml through ansible-runner and through ara_default (concurrently), the runner's artifact
    imported into the session's Ara."""
    tmp = tmp_path_factory.mktemp("runner")
    spool_dir = tmp / "spool"
    spool_dir.mkdir(mode=0o700)
    pdd = private_data_dir(tmp / "pdd")
    ident = "runner-site-1"
    env = _gathered(ansible_env(tmp, spool_dir, ara_server.url))
    callbacks = subprocess.run([sys.executable, "-m", "ara.setup.callback_plugins"], capture_output=True,
                               text=True, check=True).stdout.strip()
    env_default = dict(env, ANSIBLE_CALLBACK_PLUGINS=callbacks, ARA_API_CLIENT="http",
                       ARA_API_SERVER=ara_default_server.url)
    cmd = [str(BIN / "ansible-playbook"), "-i", str(pdd / "inventory"), str(pdd / "project" / "site.yml")]
    with ThreadPoolExecutor(2) as pool:
        theirs = pool.submit(subprocess.run, cmd, env=env_default, capture_output=True, text=True,
                             cwd=pdd / "project", timeout=240)
        artifact = pool.submit(run_runner, pdd, "site.yml", ident, env).result()
        proc = theirs.result()
    assert proc.returncode == 4 and "gone" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (artifact / "status").read_text() == "failed"
    first = _import(env, pdd)
    assert first.returncode == 0, first.stderr
    default_api, ours_api = AraAPI(ara_default_server.url), AraAPI(ara_server.url)
    [pb] = default_api.all("playbooks")
    return {"ara_default": read_all(default_api, pb["id"]),
            "import": read_all(ours_api, ours_api.playbook_for(ident)["id"]),
            "ident": ident, "pdd": pdd, "env": env, "artifact": artifact, "spool": spool_dir / f"{ident}.jsonl",
            "api": ours_api, "stderr": first.stderr}


def apply_gaps(theirs: dict, ours: dict, ident: str) -> None:
    """Remove the gaps from both sides, checking each one is there as GAPS says."""
    tp, op = theirs["playbook"], ours["playbook"]
    assert op["ansible_version"] == "unknown" and tp["ansible_version"] != "unknown"
    # Not in the events: Ara's own defaults (its controller is "localhost") or empty.
    assert (op["controller"], op["user"], op["python_version"]) != (tp["controller"], tp["user"], tp["python_version"])
    assert op["user"] in (None, "") and op["python_version"] in (None, "")
    assert re.fullmatch(r"ara-spool \S+ import", op["client_version"]), op["client_version"]
    assert op["arguments"] == "{}" and len(json.loads(tp["arguments"])) > 20
    assert op["labels"] == sorted([f"run_id:{ident}", runner_events.SOURCE_LABEL])
    assert "check:False" in tp["labels"]
    for key in ("ansible_version", "controller", "user", "python_version", "client_version", "arguments",
                "labels"):
        op[key] = tp[key]
    assert not any(t["tags"] for t in ours["tasks"]) and any(t["tags"] for t in theirs["tasks"])
    for t in theirs["tasks"]:
        t["tags"] = []  # gather_facts' implicit `always`
    assert [p["name"] for p in ours["plays"]].count("serial") == 3  # one play per batch, as ara_default
    _result_gaps(theirs, ours)
    for rows in (theirs["hosts"], ours["hosts"]):
        for h in rows:
            facts = _volatile(json.loads(h["facts"]))
            if facts:
                if rows is theirs["hosts"]:
                    assert facts.pop("ansible_env") == parity.IGNORED_FACT
                else:
                    assert "ansible_env" not in facts
            h["facts"] = json.dumps(facts)
    for per_host in (theirs["results"], ours["results"]):
        for rows in per_host.values():
            for r in rows:
                content = json.loads(r["content"])
                facts = content.get("ansible_facts") if isinstance(content, dict) else None
                if isinstance(facts, dict):
                    facts.pop("ansible_env", None)
                    _volatile(facts)
                r["content"] = json.dumps(content)
    theirs["files"] = [f for f in theirs["files"] if f in ours["files"]]
    op["items"]["files"] = tp["items"]["files"] = len(ours["files"])


# Facts that differ between two runs of the same playbook on this machine (memory, load, uptime,
# mounts, and lists Ansible builds from sets).
VOLATILE_FACTS = ("ansible_memfree_mb", "ansible_loadavg", "ansible_memory_mb", "ansible_mounts",
                  "ansible_uptime_seconds", "ansible_interfaces", "ansible_virtualization_tech_guest",
                  "ansible_virtualization_tech_host", "ansible_date_time")


def _volatile(facts: dict) -> dict:
    for key in VOLATILE_FACTS:
        if key in facts:
            facts[key] = "<volatile>"
    return facts


def _result_gaps(theirs: dict, ours: dict) -> None:
    no_log = skipped = 0
    for host, rows in ours["results"].items():
        for r, t in zip(rows, theirs["results"][host], strict=True):
            content, their_content = json.loads(r["content"]), json.loads(t["content"])
            if "censored" in content:
                assert set(content) == {"censored"} and their_content.get("changed") is True
                their_content.pop("changed")
                t["status"], t["changed"] = r["status"], r["changed"]
                no_log += 1
            elif r["status"] == "skipped":
                assert content == {} and "skip_reason" in their_content
                their_content = {}
                skipped += 1
            t["content"] = json.dumps(their_content)
    assert no_log == 3 and skipped >= 4


def test_import_records_what_ara_default_records(recorded):
    theirs, ours = normalise(recorded["ara_default"]), normalise(recorded["import"])
    assert len(recorded["import"]["results"]) == len(recorded["ara_default"]["results"]) >= 36
    hosts = {h["name"]: h for h in ours["hosts"]}
    assert hosts["gone"]["unreachable"] == 1 and hosts["db1"]["failed"] == 1
    assert {p["name"] for p in ours["plays"]} == {"linear", "free", "serial", "failure and unreachable"}
    apply_gaps(theirs, ours, recorded["ident"])
    diffs = differences(theirs, ours)
    their_facts = {h["name"]: json.loads(h["facts"]) for h in theirs["hosts"]}
    for h in ours["hosts"]:  # name the facts that differ: the diff above cuts long values
        facts = json.loads(h["facts"])
        diffs += [f"facts of {h['name']}: {k}" for k in sorted(set(facts) | set(their_facts[h["name"]]))
                  if facts.get(k) != their_facts[h["name"]].get(k)]
    assert not diffs, "the import differs from ara_default:\n" + "\n".join(diffs[:60])


def test_secret_and_masking(recorded):
    # The playbook holds the command in clear (its file is recorded, as by ara_default); no result does.
    lines = [json.loads(line) for line in recorded["spool"].read_bytes().splitlines()]
    whole = json.dumps([e for e in lines if e["kind"] != "file"]) + json.dumps(recorded["import"]["results"])
    assert "AWX_ISOLATED_DATA_DIR" in (recorded["artifact"] / "command").read_text()
    assert "AWX_ISOLATED_DATA_DIR" not in recorded["spool"].read_text()  # the command's environment
    assert "hunter2-runner" not in whole and "hunter2-runner" in (recorded["pdd"] / "project/site.yml").read_text()
    facts = [e["result"]["content"]["ansible_facts"] for e in lines
             if e["kind"] == "result" and e["result"]["action"] == "gather_facts" and e["result"]["status"] == "ok"]
    assert len(facts) == 3 and all("ansible_env" not in f for f in facts)
    secret = [r for r in recorded["import"]["results"] if r["task"]["name"] == "secret"]
    assert len(secret) == 3 and all("censored" in r["content"] for r in secret)


def test_import_again_creates_nothing(recorded):
    api, ident = recorded["api"], recorded["ident"]
    before = recorded["spool"].stat().st_size
    again = _import(recorded["env"], recorded["artifact"])
    assert again.returncode == 0, again.stderr
    assert "0 new event(s)" in again.stderr
    assert recorded["spool"].stat().st_size == before
    pb = api.playbook_for(ident)
    assert len(api.playbooks_for(ident)) == 1 and pb["status"] == "failed"
    for table in ("plays", "tasks", "results", "hosts", "files"):
        assert len(api.all(table, playbook=pb["id"])) == len(recorded["import"][table]), table


def _spool_env(env: dict[str, str], tmp: Path, name: str = "spool") -> dict[str, str]:
    (tmp / name).mkdir(mode=0o700)
    return dict(env, ARA_SPOOL_DIR=str(tmp / name))


def _results_in_ara(api: AraAPI, ident: str) -> list[tuple[str, str, str]]:
    pb = api.playbook_for(ident)
    tasks = {t["id"]: t["name"] for t in api.all("tasks", playbook=pb["id"])}
    hosts = {h["id"]: h["name"] for h in api.all("hosts", playbook=pb["id"])}
    return [(tasks[r["task"]], hosts[r["host"]], r["status"]) for r in api.all("results", playbook=pb["id"])]


def _ara_status(event: dict) -> str:
    """The status Ara shows for a result event (it says changed for a changed ok)."""
    status = runner_events.RESULT_EVENTS[event["event"]]
    if status == "ok" and (event["event_data"].get("res") or {}).get("changed"):
        return "changed"
    return status


def _results_in_events(artifact: Path) -> list[tuple[str, str, str]]:
    return [(e["event_data"]["task"], e["event_data"]["host"], _ara_status(e))
            for e in load_events(artifact) if e["event"] in runner_events.RESULT_EVENTS]


def test_sigkill_during_a_large_import_is_exact(recorded, tmp_path, ara):
    """10 SIGKILLs of the importer at random points (the first 4 while it writes the spool, the rest
    mostly while it ships), then one import to the end: the spool is byte for byte the spool of one
    clean import, and Ara holds each result once."""
    ident = "runner-big-kill"
    big = tmp_path / "pdd" / "artifacts" / ident
    results = enlarge(recorded["artifact"], big, blocks=400)
    assert results == 1200
    env = _spool_env(recorded["env"], tmp_path)
    rng = random.Random(24)
    kills = 0
    for i in range(10):
        args = ["--no-ship"] if i < 4 else []
        proc = subprocess.Popen([str(BIN / "ara-spool"), "import", "runner", str(big), *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) if i < 4 else rng.uniform(0.5, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    last = _import(env, big)
    assert last.returncode == 0, last.stderr
    assert kills >= 5, f"only {kills} of 10 imports were still running when killed"
    clean_env = _spool_env(recorded["env"], tmp_path, "clean")
    assert _import(clean_env, big, args=("--no-ship",)).returncode == 0
    spool = (tmp_path / "spool" / f"{ident}.jsonl").read_bytes()
    assert spool == (tmp_path / "clean" / f"{ident}.jsonl").read_bytes()
    in_ara = _results_in_ara(ara, ident)
    assert len(in_ara) == len(set(in_ara)) == results
    assert sorted(in_ara) == sorted(_results_in_events(big))
    pb = ara.playbook_for(ident)
    assert pb["status"] == "completed" and len(ara.playbooks_for(ident)) == 1
    # A torn last line (a kill in the middle of a write) is cut, and what it held is written again.
    torn = tmp_path / "clean" / f"{ident}.jsonl"
    torn.write_bytes(spool[:-37])
    assert _import(clean_env, big, args=("--no-ship",)).returncode == 0
    assert torn.read_bytes() == spool


def _start_runner(pdd: Path, ident: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(runner_cmd(pdd, "slow.yml", ident), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    events = pdd / "artifacts" / ident / "job_events"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (events.is_dir() and event_files(events.parent)):
        time.sleep(0.05)
    return proc


def test_follow_a_run_being_written_then_a_killed_run_ends_expired(recorded, tmp_path, ara):
    pdd = private_data_dir(tmp_path / "pdd", "slow.yml")
    env = _spool_env(recorded["env"], tmp_path)
    runner = _start_runner(pdd, "runner-followed", env)
    follower = subprocess.Popen([str(BIN / "ara-spool"), "import", "runner", "--follow", "--poll", "0.2",
                                 str(pdd / "artifacts" / "runner-followed")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert runner.wait(timeout=120) == 0
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    assert "(still running)" in err and err.rstrip().endswith("(ended)"), err
    artifact = pdd / "artifacts" / "runner-followed"
    in_ara = _results_in_ara(ara, "runner-followed")
    assert sorted(in_ara) == sorted(_results_in_events(artifact)) and len(in_ara) == 18
    assert ara.playbook_for("runner-followed")["status"] == "completed"

    # Killed mid-play: ansible-runner cancels the run on SIGTERM; there are no stats.
    runner = _start_runner(pdd, "runner-killed", env)
    artifact = pdd / "artifacts" / "runner-killed"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _results_in_events(artifact):
        time.sleep(0.05)
    os.killpg(runner.pid, signal.SIGTERM)
    runner.wait(timeout=60)
    status = (artifact / "status").read_text()
    assert status in runner_events.ENDED_STATUSES, status
    assert not any(e["event"] == "playbook_on_stats" for e in load_events(artifact))
    done = _import(env, artifact)
    assert done.returncode == 0, done.stderr
    pb = ara.playbook_for("runner-killed")
    assert pb["status"] == "expired"
    assert sorted(_results_in_ara(ara, "runner-killed")) == sorted(_results_in_events(artifact))


def test_masking_task_files_and_fact_cache(recorded, tmp_path):
    """ARA_IGNORED_FACTS masks as the callback does; a run from a container (AWX: /runner/project/...)
    gets its task files from this private data dir's project/, and says so plainly when it is not
    here; a gather_facts result ansible-runner dropped (over its size limit) takes fact_cache/."""
    ident = "runner-moved"
    pdd = tmp_path / "pdd"
    artifact = pdd / "artifacts" / ident
    shutil.copytree(recorded["artifact"], artifact)
    project = str(recorded["pdd"] / "project")
    for path in (artifact / "job_events").glob("*.json"):
        event = json.loads(path.read_text())
        data = event["event_data"]
        if "task_path" in data:
            data["task_path"] = data["task_path"].replace(project, "/runner/project")
        if data.get("host") == "web1" and data.get("task_action") == "gather_facts" and "res" in data:
            data["res"] = {}
        path.write_text(json.dumps(event))
    command = json.loads((artifact / "command").read_text())
    (artifact / "command").write_text(json.dumps({**command, "cwd": "/runner/project"}))
    env = _spool_env(recorded["env"], tmp_path)
    env["ARA_IGNORED_FACTS"] = "ansible_python,ansible_hostname"

    def spooled() -> list[dict]:
        assert _import(env, artifact, args=("--no-ship",)).returncode == 0
        lines = (tmp_path / "spool" / f"{ident}.jsonl").read_bytes().splitlines()
        return [json.loads(line) for line in lines]

    files = {e["file"]["path"]: e["file"]["content"] for e in spooled() if e["kind"] == "file"}
    assert files == {"/runner/project/site.yml": runner_events.missing_file_note("/runner/project/site.yml")}
    (tmp_path / "spool" / f"{ident}.jsonl").unlink()
    (pdd / "project").mkdir()
    shutil.copy(recorded["pdd"] / "project" / "site.yml", pdd / "project" / "site.yml")
    events = spooled()
    files = {e["file"]["path"]: e["file"]["content"] for e in events if e["kind"] == "file"}
    assert files == {"/runner/project/site.yml": (pdd / "project" / "site.yml").read_text()}
    gathered = {e["result"]["host"]: e["result"]["content"] for e in events
                if e["kind"] == "result" and e["result"]["action"] == "gather_facts" and e["result"]["status"] == "ok"}
    assert gathered["web1"]["ara_spool_note"] == runner_events.FACTS_NOTE
    for host, content in gathered.items():
        facts = content["ansible_facts"]
        assert facts["ansible_python"] == facts["ansible_hostname"] == parity.IGNORED_FACT, host
    # The fact cache holds ansible_env (the events do not): masked by the default ignored_facts too.
    env.pop("ARA_IGNORED_FACTS")
    env.update(ARA_IGNORED_FILES="site.yml", ARA_DEFAULT_LABELS="team:ops,awx")
    (tmp_path / "spool" / f"{ident}.jsonl").unlink()
    events = spooled()
    web1 = next(e["result"]["content"] for e in events if e["kind"] == "result"
                and e["result"]["host"] == "web1" and e["result"]["action"] == "gather_facts")
    assert web1["ansible_facts"]["ansible_env"] == parity.IGNORED_FACT
    assert [e["file"]["content"] for e in events if e["kind"] == "file"] == [parity.IGNORED_FILE]
    [start] = [e["playbook"] for e in events if e["kind"] == "run_start"]
    assert start["labels"] == [runner_events.SOURCE_LABEL, "team:ops", "awx"]


def test_readme_lists_every_gap():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Import from ansible-runner / AWX / ansible-navigator", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_.]+)` \|", section, re.M))
    assert rows == set(GAPS), f"README rows {sorted(rows)} != the test's gaps {sorted(GAPS)}"


NAVIGATOR = ROOT / "tests" / "fixtures" / "navigator" / "site-artifact-2026-12-04T15:23:45.593089+00:00.json"


def test_navigator_playbook_artifact(tmp_path, ara, cli_env):
    """ansible-navigator's playbook artifact (recorded here: `ansible-navigator run site.yml --ee false
    --mode stdout` of tests/playbooks/runner/site.yml without gather_facts; navigator's settings
    dropped, its paths made /home/ops/project) carries the results' event_data: imported as one run,
    plays and tasks made from them, the host counters from its PLAY RECAP; once."""
    doc = json.loads(NAVIGATOR.read_text())
    run_id = NAVIGATOR.name.removesuffix(".json")
    env = dict(cli_env, ARA_SPOOL_DIR=str(tmp_path / "spool"))
    for _ in range(2):
        done = _import(env, NAVIGATOR)
        assert done.returncode == 0, done.stderr
    assert "0 new event(s)" in done.stderr
    pb = ara.playbook_for(run_id)
    assert pb["status"] == "failed" and pb["path"] == "/home/ops/project/site.yml"
    assert {label["name"] for label in pb["labels"]} == {f"run_id:{run_id}", runner_events.NAVIGATOR_LABEL}
    expected = [(r["task"], r["host"], "ignored" if r["__result"] == "Ignored" else
                 "changed" if r["__result"] == "Ok" and r["res"].get("changed") else r["__result"].lower())
                for p in doc["plays"] for r in p["tasks"]]
    assert sorted(_results_in_ara(ara, run_id)) == sorted(expected) and len(expected) == 33
    plays = ara.all("plays", playbook=pb["id"])
    # serial: 1 on 3 hosts: one play per batch, as ara_default
    assert sorted(p["name"] for p in plays) == ["failure and unreachable", "free", "linear"] + ["serial"] * 3
    hosts = {h["name"]: h for h in ara.all("hosts", playbook=pb["id"])}
    assert [hosts["db1"][k] for k in ("ok", "changed", "failed", "skipped")] == [8, 3, 1, 1]
    assert hosts["gone"]["unreachable"] == 1
    [file] = ara.all("files", playbook=pb["id"])
    assert ara.get(f"files/{file['id']}")["content"] == runner_events.missing_file_note("/home/ops/project/site.yml")


def test_a_run_still_running_is_imported_up_to_its_first_missing_event(recorded, tmp_path):
    """While the status file says running, the import stops before a missing counter (the event is
    not written yet); once the run is over, what is there is imported past it, in counter order."""
    ident = "runner-gap"
    artifact = tmp_path / "pdd" / "artifacts" / ident
    shutil.copytree(recorded["artifact"], artifact)
    files = event_files(artifact)
    gap = len(files) // 2
    files[gap].unlink()
    (artifact / "status").write_text("running")
    env = _spool_env(recorded["env"], tmp_path)
    spool = tmp_path / "spool" / f"{ident}.jsonl"

    def sources() -> list[int]:
        assert _import(env, artifact, args=("--no-ship",)).returncode == 0
        return [json.loads(line)["import_source"][0] for line in spool.read_bytes().splitlines()]

    before = sources()
    assert before and max(before) < gap
    (artifact / "status").write_text("failed")
    after = sources()
    assert after[:len(before)] == before and after == sorted(after) and gap not in after
    assert max(after) == len(files)  # the stats: the run ends as they say, not expired
    assert json.loads(spool.read_bytes().splitlines()[-1])["end"]["status"] == "failed"


def test_follow_stall_leaves_a_run_whose_runner_died(recorded, tmp_path):
    """ansible-runner SIGKILLed: its status file says running forever. --stall ends the follow."""
    ident = "runner-died"
    artifact = tmp_path / "pdd" / "artifacts" / ident
    shutil.copytree(recorded["artifact"], artifact)
    files = event_files(artifact)
    for counter in sorted(files)[len(files) // 2:]:
        files[counter].unlink()
    (artifact / "status").write_text("running")
    env = _spool_env(recorded["env"], tmp_path)
    started = time.monotonic()
    done = _import(env, artifact, args=("--follow", "--stall", "1", "--poll", "0.2", "--no-ship"), timeout=60)
    assert done.returncode == 0 and time.monotonic() - started < 30, done.stderr
    assert "no new event for 1s and not ended: left running" in done.stderr
    lines = (tmp_path / "spool" / f"{ident}.jsonl").read_bytes().splitlines()
    assert lines and not any(json.loads(line)["kind"] == "run_end" for line in lines)


def test_translation_of_a_prefix_is_a_prefix_and_a_lost_head_still_gives_valid_events():
    """What resuming and following rest on (pure, on the recorded navigator run's events): each
    prefix of a run translates to a prefix of the whole run's spool events; a run whose first
    events are lost still gives schema-valid events, each task started and ended."""
    from ara_spool.spool import schema

    events = runner_events.navigator_job_events(json.loads(NAVIGATOR.read_text()))
    info = runner_events.RunInfo(run_id="prefix", playbook_path="/p.yml")

    def run(evs: list[dict], ended: bool) -> list[runner_events.Spooled]:
        return list(runner_events.translate(info, evs, lambda path: "x", lambda host: None, ended=ended))

    whole = run(events, ended=False)
    assert whole[-1].kind == "run_end" and [s.source for s in whole] == sorted(s.source for s in whole)
    for n in range(len(events)):
        part = run(events[:n], ended=False)
        assert part == whole[:len(part)], n
    for cut in (1, 2, 3, len(events) // 2):
        out = run(events[cut:cut + 20], ended=True)
        kinds = [s.kind for s in out]
        assert (kinds[0], kinds[-1]) == ("run_start", "run_end")
        assert kinds.count("task_start") == kinds.count("task_end")
        for s in out:
            schema.validate({**schema.make_event("prefix", s.kind, s.body, s.ts), "seq": 0})


def _rows(api: AraAPI, ident: str) -> dict[str, list[int]]:
    """The ids of every row of the run in Ara, by table (its playbooks: all labelled with its id)."""
    [pb] = api.playbooks_for(ident)
    out = {"playbooks": [p["id"] for p in api.playbooks_for(ident)]}
    for table in ("plays", "tasks", "results", "hosts", "files"):
        out[table] = sorted(r["id"] for r in api.all(table, playbook=pb["id"]))
    return out


def test_a_pruned_run_imported_again_creates_no_row(recorded, tmp_path, ara):
    """`prune` removes the run's spool and checkpoint: the next import spools the run again from its
    first event and ships it as a run this spool never shipped. The flusher finds the run's playbook
    by its run_id label and looks every create up: Ara gets no new row."""
    ident = "runner-pruned"
    artifact = tmp_path / "pdd" / "artifacts" / ident
    shutil.copytree(recorded["artifact"], artifact)
    env = _spool_env(recorded["env"], tmp_path)
    first = _import(env, artifact)
    assert first.returncode == 0, first.stderr
    before = _rows(ara, ident)
    assert len(before["results"]) == len(recorded["import"]["results"])
    pruned = subprocess.run([str(BIN / "ara-spool"), "prune", "--days", "0"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert pruned.returncode == 0 and "1 run(s) shipped and idle" in pruned.stderr, pruned.stderr
    assert not list((tmp_path / "spool").glob(f"{ident}*"))
    again = _import(env, artifact)
    assert again.returncode == 0, again.stderr
    assert f"run {ident}: {first.stderr.split(f'run {ident}: ')[1].split()[0]} new event(s)" in again.stderr
    assert _rows(ara, ident) == before
    assert ara.playbook_for(ident)["status"] == "failed"


def _wait_for(check, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_follow_a_private_data_dir_imports_each_new_run(recorded, tmp_path, ara):
    """`--follow PDD` started on an empty private data dir: two ansible-runner runs made after it
    started are each imported while they are written and land in Ara exactly; the follower keeps
    watching after they end, SIGTERM stops it (exit 0), and an import again adds nothing."""
    pdd = private_data_dir(tmp_path / "pdd", "slow.yml")
    env = _spool_env(recorded["env"], tmp_path)
    follower = subprocess.Popen([str(BIN / "ara-spool"), "import", "runner", "--follow", "--poll", "0.2", str(pdd)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        idents = ["runner-new-1", "runner-new-2"]
        for ident in idents:  # one job after the other, as AWX runs them
            run_runner(pdd, "slow.yml", ident, env)
            _wait_for(lambda ident=ident: ara.playbooks_for(ident)
                      and ara.playbook_for(ident)["status"] == "completed")
        time.sleep(1)  # passes after both ended: the follower still runs, nothing more is shipped
        assert follower.poll() is None
        before = {ident: _rows(ara, ident) for ident in idents}
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert "stopped by signal 15" in err and "0 run(s) not ended" in err, err
    for ident in idents:
        assert re.search(rf"run {ident}: [1-9]\d* new event\(s\) spooled \(still running\)", err), err
        assert re.search(rf"run {ident}: \d+ new event\(s\) spooled \(ended\)", err), err
        in_ara = _results_in_ara(ara, ident)
        assert sorted(in_ara) == sorted(_results_in_events(pdd / "artifacts" / ident)) and len(in_ara) == 18
    again = _import(env, pdd)
    assert again.returncode == 0 and again.stderr.count("0 new event(s)") == 2, again.stderr
    assert {ident: _rows(ara, ident) for ident in idents} == before


def test_follow_stopped_by_sigint_while_shipping_leaves_the_rest_spooled(recorded, tmp_path, ara):
    """SIGINT while `--follow PDD` ships a run: the shipping stops with its checkpoint saved (exit 0,
    or 3 when a request was cut short), the rest stays in the spool, and the next import ships it:
    each result once in Ara."""
    ident = "runner-big-stop"
    pdd = tmp_path / "pdd"
    big = pdd / "artifacts" / ident
    results = enlarge(recorded["artifact"], big, blocks=150)
    env = _spool_env(recorded["env"], tmp_path)
    follower = subprocess.Popen([str(BIN / "ara-spool"), "import", "runner", "--follow", "--poll", "0.2", str(pdd)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def shipped() -> int:
        pbs = ara.playbooks_for(ident)
        return ara.get("results", playbook=pbs[0]["id"], limit=1)["count"] if pbs else 0

    try:
        _wait_for(lambda: shipped() > 0, timeout=60)
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode in (0, 3) and "stopped by signal 2" in err, err
    assert 0 < shipped() < results == 450
    again = _import(env, pdd)
    assert again.returncode == 0 and "0 new event(s)" in again.stderr, again.stderr
    in_ara = _results_in_ara(ara, ident)
    assert len(in_ara) == len(set(in_ara)) == results and sorted(in_ara) == sorted(_results_in_events(big))
    assert ara.playbook_for(ident)["status"] == "completed"
