"""ansible-runner artifact dirs for the import tests and bench: real runs, and larger ones made
from a real run's own events (its `hello` task block repeated, counters and uuids renewed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
RUNNER = Path(__file__).resolve().parent / "playbooks" / "runner"


def private_data_dir(base: Path, playbook: str = "site.yml") -> Path:
    """A private data dir with the runner test playbooks as its project and their inventory."""
    (base / "project").mkdir(parents=True, exist_ok=True)
    (base / "inventory").mkdir(exist_ok=True)
    shutil.copy(RUNNER / playbook, base / "project" / playbook)
    shutil.copy(RUNNER / "inventory.ini", base / "inventory" / "hosts")
    return base


def runner_cmd(pdd: Path, playbook: str, ident: str) -> list[str]:
    return [str(BIN / "ansible-runner"), "run", str(pdd), "-p", playbook, "--ident", ident]


def run_runner(pdd: Path, playbook: str, ident: str, env: dict[str, str], timeout: float = 240) -> Path:
    proc = subprocess.run(runner_cmd(pdd, playbook, ident), env=env, capture_output=True, text=True,
                          timeout=timeout)
    artifact = pdd / "artifacts" / ident
    assert (artifact / "status").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return artifact


def load_events(artifact: Path) -> list[dict]:
    from ara_spool.flusher.importer import event_files

    return [json.loads(path.read_text()) for _, path in sorted(event_files(artifact).items())]


def enlarge(src: Path, dst: Path, blocks: int, task: str = "hello") -> int:
    """dst: an artifact dir whose run is src's head (start, first play) then `blocks` copies of
    src's `task` block (task start and its results), then the stats. Returns its result count."""
    events = load_events(src)
    start = next(i for i, e in enumerate(events) if e["event"] == "playbook_on_task_start")
    head = events[:start]
    b0 = next(i for i, e in enumerate(events) if e["event"] == "playbook_on_task_start"
              and e["event_data"].get("task") == task)
    b1 = next(i for i in range(b0 + 1, len(events)) if events[i]["event"].startswith("playbook_on_"))
    block = events[b0:b1]
    stats = next(e for e in events if e["event"] == "playbook_on_stats")
    (dst / "job_events").mkdir(parents=True)
    for name in ("command", "rc", "stdout"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    out = list(head)
    results: dict[str, int] = {}
    for k in range(blocks):
        task_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dst.name}:{k}"))
        for e in block:
            e = json.loads(json.dumps(e))
            e["event_data"]["task_uuid"] = task_uuid
            e["event_data"]["task"] = f"{task} {k}"
            if "name" in e["event_data"]:
                e["event_data"]["name"] = f"{task} {k}"
            if e["event"] == "playbook_on_task_start":
                e["uuid"] = e["event_data"]["uuid"] = task_uuid
            else:
                e["uuid"] = e["event_data"]["uuid"] = str(uuid.uuid4())
                e["parent_uuid"] = task_uuid
            if e["event"].startswith("runner_on_") and e["event"] != "runner_on_start":
                results[e["event_data"]["host"]] = results.get(e["event_data"]["host"], 0) + 1
            out.append(e)
    stats = json.loads(json.dumps(stats))
    for key in ("changed", "dark", "failures", "ignored", "rescued", "skipped"):
        stats["event_data"][key] = {}
    stats["event_data"]["ok"] = dict(results)
    out.append(stats)
    for counter, e in enumerate(out, 1):
        e["counter"] = counter
        (dst / "job_events" / f"{counter}-{e['uuid']}.json").write_text(json.dumps(e))
    (dst / "status").write_text("successful")
    return sum(results.values())
