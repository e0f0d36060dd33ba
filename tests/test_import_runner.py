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
    "plays.serial": "a `serial` play is one play (as ara-spool's callback records it), where ara_default "
                    "records one play per batch",
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
    _serial_plays(theirs, ours)
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


# Facts that differ between two runs of the same playbook on this machine (memory, uptime, mounts,
# and lists Ansible builds from sets).
VOLATILE_FACTS = ("ansible_memfree_mb", "ansible_memory_mb", "ansible_mounts", "ansible_uptime_seconds",
                  "ansible_interfaces", "ansible_virtualization_tech_guest", "ansible_virtualization_tech_host",
                  "ansible_date_time")


def _volatile(facts: dict) -> dict:
    for key in VOLATILE_FACTS:
        if key in facts:
            facts[key] = "<volatile>"
    return facts


def _serial_plays(theirs: dict, ours: dict) -> None:
    """ara_default's plays of one serial play's batches (same uuid) become one, as the import has it."""
    uuids = [p["uuid"] for p in theirs["plays"]]
    first: dict[str, int] = {}
    for i, u in enumerate(uuids):
        first.setdefault(u, i)
    assert len(first) < len(uuids) == 6 and len(ours["plays"]) == len(first) == 4
    remap = {i: list(first).index(u) for i, u in enumerate(uuids)}
    batched = {u for u in uuids if uuids.count(u) > 1}
    theirs["plays"] = [theirs["plays"][i] for i in first.values()]
    for plays in (theirs["plays"], ours["plays"]):
        for p in plays:
            if p["uuid"] in batched:
                p.pop("items")
    for t in theirs["tasks"]:
        t["play"] = remap[t["play"]]
    for rows in theirs["results"].values():
        for r in rows:
            r["play"] = remap[r["play"]]
    theirs["playbook"]["items"]["plays"] = ours["playbook"]["items"]["plays"]


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
    assert not diffs, "the import differs from ara_default:\n" + "\n".join(diffs[:60])


def test_secret_and_masking(recorded):
    # The playbook holds the command in clear (its file is recorded, as by ara_default); no result does.
    lines = [json.loads(line) for line in recorded["spool"].read_bytes().splitlines()]
    whole = json.dumps([e for e in lines if e["kind"] != "file"]) + json.dumps(recorded["import"]["results"])
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
    assert len(api.all("results", playbook=pb["id"])) == len(recorded["import"]["results"])
    assert len(api.all("tasks", playbook=pb["id"])) == len(recorded["import"]["tasks"])
    assert pb["status"] == "failed"
