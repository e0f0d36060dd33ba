"""Pure mapping from spool events to Ara REST calls: data in, data out, no I/O.

`plan(event, ids, hints)` is a generator: it yields the Calls one event needs, in order, and
receives each call's response object (created, or found again in Ara by the call's Lookup). It
records the Ara ids it learns in `ids`, so later events reuse them. The shipper drives it, and does
all the I/O, retries and reconciliation.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from ara_spool.flusher.ids import AraIds
from ara_spool.spool.schema import parse_time
from ara_spool.spool.writer import TRUNCATED_HEAD_CHARS

API = "/api/v1"
# Ara refuses bodies over 2,621,440 bytes; leave room for the rest of a result's fields.
MAX_CONTENT_BYTES = 2_400_000
MAX_FIELD = 255
PLACEHOLDER_CONTENT = "# recorded by ara-spool: the source of this file was not captured\n"
# A task_end's notes (Ara's "Notes" column), sent as the task's fields of the same names.
TASK_NOTES = ("exceptions", "warnings", "deprecations")
# Namespace for ids we derive (explicit events' play and tasks): stable across restarts.
NAMESPACE = uuid.UUID("5f0f3a53-6a1c-4c52-9b0c-6d2b7c0e4a11")


@dataclass(frozen=True)
class Lookup:
    """How to find, in Ara, the object a create call may already have made.

    GET path?params, then keep objects with id > min_id whose fields equal `equal` (times are
    compared as instants); the lowest id wins.
    """

    path: str
    params: dict[str, Any]
    equal: dict[str, Any] = field(default_factory=dict)
    min_id: int = 0


@dataclass(frozen=True)
class Call:
    """One Ara API request."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    creates: bool = False  # a POST that makes a new row each time (no idempotency in Ara)
    lookup: Lookup | None = None  # how to find that row again after a crash or a lost response
    lookup_first: bool = False  # always look before creating (run identity)


Plan = Generator[Call, dict[str, Any], None]


@dataclass
class Hints:
    """What the shipper has already read beyond the current event: task uuid -> its task_end."""

    task_ends: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_label(run_id: str) -> str:
    return f"run_id:{run_id}"


# A request body as the client sends it (compact, ASCII-escaped); built once, not per call.
wire_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _sent_size(value: Any) -> int:
    # The client sends ASCII-escaped JSON: a non-ASCII or control character can take 6 bytes
    # there, so the UTF-8 size (what the writer measures) may be far below what Ara receives.
    return len(wire_json(value))


def fit_content(value: Any, limit_bytes: int = MAX_CONTENT_BYTES) -> Any:
    """value if it fits in limit_bytes as sent, else the writer's truncation marker (with its head)."""
    if _sent_size(value) <= limit_bytes:
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return {"ara_spool_truncated": True, "original_bytes": len(text.encode("utf-8", "surrogatepass")),
            "head": text[:TRUNCATED_HEAD_CHARS]}


def fit_file_content(content: str, limit_bytes: int = MAX_CONTENT_BYTES) -> str:
    """A file's source if it fits as sent, else its head and a line that says it was cut."""
    if _sent_size(content) <= limit_bytes:
        return content
    size = len(content.encode("utf-8", "surrogatepass"))
    return content[:TRUNCATED_HEAD_CHARS] + f"\n# [ara-spool: truncated, {size} bytes in all]\n"


def _clip(value: Any, limit: int = MAX_FIELD) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _clip_path(path: str) -> str:
    # Keep the end of a long path: the file name is what a reader needs.
    return path if len(path) <= MAX_FIELD else "…" + path[-(MAX_FIELD - 1):]


def _labels(run_id: str, body: dict[str, Any]) -> list[str]:
    labels = [run_label(run_id)]
    for label in body.get("labels") or []:
        labels.append(str(label))
    metadata = body.get("metadata") or {}
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            labels.append(f"{key}:{value}")
    seen: set[str] = set()
    out = []
    for label in labels:
        label = label[:254]
        if label.lower() not in seen:
            seen.add(label.lower())
            out.append(label)
    return out


def playbook_body(run_id: str, body: dict[str, Any] | None, started: str | None) -> dict[str, Any]:
    """POST /playbooks body for a run (from its run_start, or a stand-in when there is none)."""
    body = body or {}
    out: dict[str, Any] = {
        "path": _clip_path(str(body.get("path") or f"ara-spool:{run_id}")),
        "ansible_version": _clip(str(body.get("ansible_version") or "unknown")),
        "name": _clip(body.get("name") or None),
        "status": "running",
        "labels": _labels(run_id, body),
        "arguments": body.get("arguments") or {},
    }
    for key in ("controller", "user", "python_version", "client_version"):
        if body.get(key):
            out[key] = _clip(str(body[key]))
    if started:
        out["started"] = started
    return out


def ensure_playbook(run_id: str, ids: AraIds, body: dict[str, Any] | None, ts: str) -> Generator[
        Call, dict[str, Any], str | None]:
    """The run's playbook: found by its run_id label (any earlier flush, flusher or controller)
    or created with that label. Returns its status as Ara answered it (None: known already)."""
    if ids.playbook is not None:
        return None
    resp = yield Call(
        "POST",
        f"{API}/playbooks",
        playbook_body(run_id, body, ts),
        creates=True,
        lookup=Lookup(f"{API}/playbooks", {"label": run_label(run_id), "order": "id"}),
        lookup_first=True,
    )
    ids.playbook = resp["id"]
    return resp.get("status")


def ensure_play(run_id: str, ids: AraIds, play_uuid: str, name: str | None, ts: str, batch: int = 1) -> Plan:
    """The play's row. Ansible starts a `serial` play once per batch with the same uuid; as
    ara_default, each batch is its own Ara play, and tasks first seen in it belong to it."""
    key = play_uuid if batch <= 1 else f"{play_uuid}#{batch}"
    if key in ids.plays:
        return
    yield from ensure_playbook(run_id, ids, None, ts)
    earlier = ids.plays.get(play_uuid, 0) if batch > 1 else 0  # batch n's row is above batch n-1's
    resp = yield Call(
        "POST",
        f"{API}/plays",
        {"uuid": play_uuid, "name": _clip(name), "playbook": ids.playbook, "status": "running", "started": ts},
        creates=True,
        lookup=Lookup(f"{API}/plays", {"playbook": ids.playbook, "uuid": play_uuid, "order": "id"}, min_id=earlier),
    )
    ids.plays[key] = ids.plays[play_uuid] = resp["id"]
    if resp.get("status") == "running":
        ids.open_plays[play_uuid] = resp["id"]


def _file_key(path: str, sha1: str) -> str:
    return f"{path}\0{sha1}"


def ensure_file(run_id: str, ids: AraIds, path: str, content: str | None, ts: str) -> Plan:
    """A file row for path. Ara keeps one row per (path, playbook) and answers 500 to the same path
    with other content, so another version of a path (a re-run after an edit) gets its own path."""
    if content is None:
        if path in ids.file_paths:
            return
        content = PLACEHOLDER_CONTENT
    if not content.strip():
        content = PLACEHOLDER_CONTENT  # Ara refuses a blank file
    sha1 = hashlib.sha1(content.encode("utf-8", "surrogatepass")).hexdigest()
    key = _file_key(path, sha1)
    if key in ids.files:
        ids.file_paths[path] = sha1
        return
    yield from ensure_playbook(run_id, ids, None, ts)
    ara_path = path if path not in ids.file_paths else f"{path}@{sha1[:12]}"
    body = {"playbook": ids.playbook, "path": _clip_path(ara_path), "content": fit_file_content(content)}
    resp = yield Call("POST", f"{API}/files", body)
    ids.files[key] = resp["id"]
    ids.file_paths[path] = sha1


def _file_id(ids: AraIds, path: str) -> int:
    return ids.files[_file_key(path, ids.file_paths[path])]


def ensure_task(run_id: str, ids: AraIds, task: dict[str, Any], ts: str, hints: Hints) -> Plan:
    """The task row. When its task_end is already read, create it finished (one request less)."""
    task_uuid = task["uuid"]
    if task_uuid in ids.tasks:
        return
    yield from ensure_play(run_id, ids, task["play_uuid"], None, ts)
    path = str(task.get("path") or "ara-spool:events")
    yield from ensure_file(run_id, ids, path, None, ts)
    body: dict[str, Any] = {
        "uuid": task_uuid,
        "name": task.get("name"),
        "action": task.get("action") or "unknown",
        "lineno": int(task.get("lineno") or 0),
        "handler": bool(task.get("handler", False)),
        "tags": task.get("tags") or [],
        "play": ids.plays[task["play_uuid"]],
        "file": _file_id(ids, path),
        "playbook": ids.playbook,
        "status": "running",
        "started": ts,
    }
    end = hints.task_ends.get(task_uuid)
    if end is not None and not end["task"].get("status_only"):
        body["status"] = end["task"]["status"]
        body["ended"] = end["ts"]
        body.update(task_notes(end["task"]))
    resp = yield Call(
        "POST", f"{API}/tasks", body, creates=True,
        lookup=Lookup(f"{API}/tasks", {"playbook": ids.playbook, "uuid": task_uuid, "order": "id"}),
    )
    ids.tasks[task_uuid] = resp["id"]
    ids.task_plays[task_uuid] = body["play"]
    if resp.get("status") == "running":
        ids.open_tasks[task_uuid] = resp["id"]
    else:  # created ended, by the first task_end read ahead: that end is applied
        ids.task_ends[task_uuid] = [_end_number(end["task"]) if end else 1, resp.get("status")]


def ensure_host(run_id: str, ids: AraIds, name: str, ts: str) -> Plan:
    if name in ids.hosts:
        return
    yield from ensure_playbook(run_id, ids, None, ts)
    # Ara's hosts are get-or-create on (name, playbook): a replay returns the same row.
    resp = yield Call("POST", f"{API}/hosts", {"name": _clip(name), "playbook": ids.playbook})
    ids.hosts[name] = resp["id"]


def post_result(run_id: str, ids: AraIds, r: dict[str, Any], task: dict[str, Any], ts: str, hints: Hints) -> Plan:
    yield from ensure_task(run_id, ids, task, ts, hints)
    yield from ensure_host(run_id, ids, r["host"], ts)
    delegated = []
    for name in r.get("delegated_to") or []:
        if name:  # also the host itself (delegate_to its own name), as ara_default records it
            yield from ensure_host(run_id, ids, name, ts)
            delegated.append(ids.hosts[name])
    task_id, host_id = ids.tasks[task["uuid"]], ids.hosts[r["host"]]
    body = {
        "playbook": ids.playbook,
        # As ara_default: a result is in its task's play (a task of batch 1 run again in batch 2 too).
        "play": ids.task_plays.get(task["uuid"]) or ids.plays[task["play_uuid"]],
        "task": task_id,
        "host": host_id,
        "status": r["status"],
        "changed": bool(r.get("changed", False)),
        "ignore_errors": bool(r.get("ignore_errors", False)),
        "started": r["started"],
        "ended": r["ended"],
        "content": fit_content(r.get("content", {})),
    }
    if delegated:
        body["delegated_to"] = delegated
    resp = yield Call(
        "POST", f"{API}/results", body, creates=True,
        # Ara has no idempotency key: a result this run already made is one with a higher id than
        # any result recorded before it, for the same task and host, with the same start instant.
        lookup=Lookup(
            f"{API}/results",
            {"playbook": ids.playbook, "task": task_id, "host": host_id, "order": "-id", "limit": 20},
            equal={"started": r["started"]},
            min_id=ids.last_result,
        ),
    )
    ids.last_result = max(ids.last_result, resp["id"])
    facts = body["content"].get("ansible_facts") if r.get("host_facts") and isinstance(body["content"], dict) else None
    if isinstance(facts, dict):
        # A setup/gather_facts result: its (masked) facts are the host's, as ara_default records them.
        yield Call("PATCH", f"{API}/hosts/{host_id}", {"facts": facts})


# A task that ends several times (once per serial batch, per host under strategy free) keeps the
# worst status of its ends, as ara_default's sticky "failed".
STATUS_RANK = {"running": 0, "unknown": 0, "completed": 1, "expired": 2, "failed": 3}


def worst_status(a: str | None, b: str) -> str:
    return b if a is None or STATUS_RANK.get(b, 0) >= STATUS_RANK.get(a, 0) else a


def _end_number(task: dict[str, Any]) -> int:
    try:
        return max(1, int(task.get("end") or 1))
    except (TypeError, ValueError):
        return 1


def end_task(ids: AraIds, task: dict[str, Any], ts: str) -> Plan:
    """A task_end: the n-th end of its task. Each later end moves `ended` to its time and keeps the
    worst status; a status_only end (a late failure under strategy free) keeps `ended`."""
    task_uuid = task["uuid"]
    task_id = ids.tasks.get(task_uuid)
    if task_id is None:
        return
    done, status = ids.task_ends.get(task_uuid, [0, None])
    number = _end_number(task)
    if number <= done and task_uuid not in ids.open_tasks:
        return  # applied already (the task was created ended with it)
    new_status = worst_status(status, task["status"])
    body: dict[str, Any] = {"status": new_status, **task_notes(task)}
    if not task.get("status_only"):
        body["ended"] = ts
    if task_uuid in ids.open_tasks or new_status != status or len(body) > 1:
        # Still open until the PATCH is answered: a flusher that stops on it sends it again.
        yield Call("PATCH", f"{API}/tasks/{task_id}", body)
    ids.task_ends[task_uuid] = [max(number, done), new_status]
    ids.open_tasks.pop(task_uuid, None)


def update_playbook(run_id: str, ids: AraIds, body: dict[str, Any], ts: str) -> Plan:
    """A later play's ara_playbook_name / ara_playbook_labels, as ara_default re-reads them."""
    yield from ensure_playbook(run_id, ids, None, ts)
    fields: dict[str, Any] = {}
    if body.get("name"):
        fields["name"] = _clip(str(body["name"]))
    if isinstance(body.get("labels"), list):
        fields["labels"] = _labels(run_id, body)
    if fields:
        yield Call("PATCH", f"{API}/playbooks/{ids.playbook}", fields)


def put_record(run_id: str, ids: AraIds, record: dict[str, Any], ts: str) -> Plan:
    """ara_record: a record of the run's playbook, updated when its key exists (as Ara's action)."""
    yield from ensure_playbook(run_id, ids, None, ts)
    playbook = record.get("playbook_id") if isinstance(record.get("playbook_id"), int) else ids.playbook
    key = _clip(str(record["key"]))
    fields = {"value": record["value"], "type": record.get("type") or "text"}
    found = yield Call("GET", f"{API}/records?{urlencode({'playbook': playbook, 'key': key})}")
    rows = [r for r in found.get("results") or [] if r.get("key") == key]
    if rows:
        yield Call("PATCH", f"{API}/records/{rows[0]['id']}", {"key": key, **fields})
        return
    yield Call("POST", f"{API}/records", {"playbook": playbook, "key": key, **fields}, creates=True,
               lookup=Lookup(f"{API}/records", {"playbook": playbook, "key": key, "order": "id"}))


def task_notes(task: dict[str, Any]) -> dict[str, list[Any]]:
    """The exceptions, warnings and deprecations a task_end carries (lists only)."""
    return {k: task[k] for k in TASK_NOTES if isinstance(task.get(k), list)}


def explicit_play_uuid(run_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{run_id}:events"))


def explicit_task_uuid(run_id: str, play_uuid: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{run_id}:{play_uuid}:{name}"))


def explicit_result(run_id: str, ev: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """The seed's explicit event (task/status/host/duration/details) as a task and a result."""
    body = ev["event"]
    play_uuid = body.get("play_uuid") or explicit_play_uuid(run_id)
    name = str(body["task"])
    task = {
        "uuid": explicit_task_uuid(run_id, play_uuid, name),
        "name": name,
        "action": body.get("action") or "ara_spool_event",
        "path": body.get("path") or "ara-spool:events",
        "lineno": body.get("lineno") or 0,
        "handler": bool(body.get("handler", False)),
        "play_uuid": play_uuid,
    }
    ended = parse_time(ev["ts"])
    duration = body.get("duration")
    started = ended - timedelta(seconds=float(duration)) if duration else ended
    details = body.get("details")
    result = {
        "host": str(body["host"]),
        "status": body["status"],
        "changed": bool(body.get("changed", False)),
        "ignore_errors": bool(body.get("ignore_errors", False)),
        "started": started.isoformat(timespec="microseconds"),
        "ended": ended.isoformat(timespec="microseconds"),
        "content": details if details is not None else {},
        "delegated_to": body.get("delegated_to") or [],
    }
    play_name = None if body.get("play_uuid") else "ara-spool events"
    return task, result, play_name


def host_counters(run_id: str, ids: AraIds, host: str, counters: dict[str, Any], ts: str) -> Plan:
    yield from ensure_host(run_id, ids, host, ts)
    fields = {k: int(counters.get(k, 0) or 0) for k in ("ok", "changed", "failed", "skipped", "unreachable")}
    yield Call("PATCH", f"{API}/hosts/{ids.hosts[host]}", fields)


COUNTERS = ("ok", "changed", "failed", "skipped", "unreachable")


def count_event(ids: AraIds, result: dict[str, Any]) -> None:
    """Count an explicit event's result for its host, as Ansible's stats count a task's."""
    counts = ids.event_counts.setdefault(result["host"], dict.fromkeys(COUNTERS, 0))
    status = result["status"]
    if status == "ok":
        counts["ok"] += 1
        counts["changed"] += bool(result.get("changed"))
    elif status in counts:
        counts[status] += 1


def event_only_counters(ids: AraIds, stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The counters of hosts that only explicit events name (not in Ansible's stats)."""
    return {host: counts for host, counts in ids.event_counts.items() if host not in stats}


def host_stats_plans(ev: dict[str, Any], ids: AraIds) -> list[Plan]:
    """A host_stats event as one independent plan per host (a window ships them side by side),
    with the hosts only explicit events name."""
    stats = {**ev["stats"], **event_only_counters(ids, ev["stats"])}
    ids.stats_sent = True
    return [host_counters(ev["run"], ids, host, counters, ev["ts"]) for host, counters in stats.items()]


def _batch(play: dict[str, Any]) -> int:
    try:
        return max(1, int(play.get("batch") or 1))
    except (TypeError, ValueError):
        return 1


def plan(ev: dict[str, Any], ids: AraIds, hints: Hints | None = None) -> Plan:
    """The Ara calls for one validated spool event, in order."""
    hints = hints or Hints()
    run_id, kind, ts = ev["run"], ev["kind"], ev["ts"]
    if kind == "run_start":
        body = ev["playbook"]
        status = yield from ensure_playbook(run_id, ids, body, ts)
        if status != "running":  # it existed and ended (a re-run with the same id): running again
            yield Call("PATCH", f"{API}/playbooks/{ids.playbook}", {"status": "running"})
    elif kind == "file":
        yield from ensure_file(run_id, ids, str(ev["file"]["path"]), str(ev["file"]["content"]), ts)
    elif kind == "play_start":
        play = ev["play"]
        yield from ensure_play(run_id, ids, play["uuid"], play.get("name"), ts, _batch(play))
    elif kind == "task_start":
        yield from ensure_task(run_id, ids, ev["task"], ts, hints)
    elif kind == "result":
        r = ev["result"]
        task = {"uuid": r["task_uuid"], "play_uuid": r["play_uuid"], "name": r.get("task_name"),
                "action": r.get("action"), "path": r.get("path"), "lineno": r.get("lineno")}
        yield from post_result(run_id, ids, r, task, ts, hints)
    elif kind == "event":
        task, result, play_name = explicit_result(run_id, ev)
        yield from ensure_play(run_id, ids, task["play_uuid"], play_name, ts)
        yield from post_result(run_id, ids, result, task, ts, hints)
        count_event(ids, result)
    elif kind == "task_end":
        yield from end_task(ids, ev["task"], ts)
    elif kind == "playbook_update":
        yield from update_playbook(run_id, ids, ev["playbook"], ts)
    elif kind == "record":
        yield from put_record(run_id, ids, ev["record"], ts)
    elif kind == "play_end":
        play_id = ids.open_plays.get(ev["play"]["uuid"])
        if play_id is not None:
            yield Call("PATCH", f"{API}/plays/{play_id}", {"status": ev["play"]["status"], "ended": ts})
            del ids.open_plays[ev["play"]["uuid"]]
    elif kind == "host_stats":
        for host_plan in host_stats_plans(ev, ids):
            yield from host_plan
    elif kind == "run_end":
        status = ev["end"]["status"]
        yield from ensure_playbook(run_id, ids, None, ts)
        # Whatever the run left open ends with it: expired if the run was cut short.
        leftover = "expired" if status == "expired" else "completed"
        for task_uuid, task_id in list(ids.open_tasks.items()):
            yield Call("PATCH", f"{API}/tasks/{task_id}", {"status": leftover, "ended": ts})
            del ids.open_tasks[task_uuid]
        for play_uuid, play_id in list(ids.open_plays.items()):
            yield Call("PATCH", f"{API}/plays/{play_id}", {"status": leftover, "ended": ts})
            del ids.open_plays[play_uuid]
        if not ids.stats_sent:  # no Ansible stats (an emit-only run): the explicit hosts' counters
            for host, counts in event_only_counters(ids, {}).items():
                yield from host_counters(run_id, ids, host, counts, ts)
            ids.stats_sent = True
        yield Call("PATCH", f"{API}/playbooks/{ids.playbook}", {"status": status, "ended": ts})
