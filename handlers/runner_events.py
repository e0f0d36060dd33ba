"""ansible-runner job events as ara-spool spool events: the callback's event building, from disk.

ansible-runner (and AWX, AAP, ansible-navigator, which run playbooks with it) writes every
callback event of a run to `artifacts/<ident>/job_events/<counter>-<uuid>.json`. `Translator` turns
them, in counter order, into the spool events the ara_spool callback writes for the same run
(run_start, file, play_start, task_start, result, task_end, play_end, host_stats, run_end), with
the same content rules (internal keys stripped, no_log censored, `ignored_facts` masked, keys
sorted: handlers/parity.py). The flusher then maps them to Ara as it maps the callback's: there is
no second mapping to Ara here.

Pure: no I/O. The importer hands it the events and two readers (a task file's text, a host's
cached facts). Every spool event it yields carries its source position (counter, n): the n-th
spool event made from job event `counter`. The translation of a prefix of a run's events is a
prefix of the translation of the whole run (nothing is closed before the event that closes it),
which is what lets the importer resume after a crash or follow a run still being written.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ara_spool.handlers import nolog, parity
from ara_spool.spool import events

SOURCE_LABEL = "source:ansible-runner"
# Results: the callback records these four; ansible-runner names them runner_on_<status>.
RESULT_EVENTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
                 "runner_on_unreachable": "unreachable"}
ITEM_EVENTS = ("runner_item_on_ok", "runner_item_on_failed")
# ansible-runner's status file: the run is over once it says one of these.
ENDED_STATUSES = frozenset({"successful", "failed", "timeout", "canceled", "error"})
FACTS_NOTE = ("ansible-runner dropped this result (over its size limit): the facts are those of the "
              "run's fact_cache/, recorded by ara-spool import")


def missing_file_note(path: str) -> str:
    """A task file's content when the project dir is not where the import runs."""
    return (f"# {path}: not available to `ara-spool import` (the project directory the run used is not "
            "on this machine); the tasks keep their path and line\n")


@dataclass(frozen=True)
class Spooled:
    """One spool event to write, and where it comes from (job event counter, n-th event of it)."""

    counter: int
    n: int
    kind: str
    body: dict[str, Any]
    ts: str

    @property
    def source(self) -> tuple[int, int]:
        return (self.counter, self.n)


@dataclass
class RunInfo:
    """What the importer knows of the run beside its events."""

    run_id: str
    playbook_path: str  # absolute, from the artifact's `command` (cwd + playbook) when it has one
    ignored_facts: tuple[str, ...] = ("ansible_env",)
    record_content: bool = True
    labels: tuple[str, ...] = ()
    source_label: str = SOURCE_LABEL
    client_version: str = "ara-spool import"


class Translator:
    """Feed a run's job events in counter order; get its spool events."""

    def __init__(self, info: RunInfo, read_file: Callable[[str], str],
                 cached_facts: Callable[[str], dict[str, Any] | None]) -> None:
        self.info = info
        self.read_file = read_file
        self.cached_facts = cached_facts
        self.started = False
        self.ended = False
        self.play_uuid: str | None = None
        self.task_uuid: str | None = None
        self.failed_tasks: set[str] = set()  # failed on some host, in any batch (sticky, as ara_default)
        self.task_ends: dict[str, int] = {}  # task uuid -> ends so far (once per serial batch)
        self.play_batches: dict[str, int] = {}  # play uuid -> starts (one per serial batch)
        self.task_started: dict[str, str] = {}
        self.files: set[str] = set()
        self.notes: dict[str, parity.TaskNotes] = {}
        self.item_delegates: dict[tuple[str, str], list[str]] = {}
        self.last_counter = 0
        self.last_ts: str | None = None
        self._out: list[Spooled] = []
        self._counter = 0

    # -- output --------------------------------------------------------------------------------
    def _emit(self, kind: str, body: dict[str, Any], ts: str) -> None:
        self._out.append(Spooled(self._counter, len(self._out), kind, body, ts))

    def feed(self, job_event: dict[str, Any]) -> list[Spooled]:
        """The spool events job_event makes (often none)."""
        self._out = []
        self._counter = int(job_event["counter"])
        self.last_counter = self._counter
        name = job_event.get("event")
        data = job_event.get("event_data") or {}
        ts = _iso(job_event.get("created")) or self.last_ts or "1970-01-01T00:00:00+00:00"
        self.last_ts = ts
        if self.ended:
            return []
        if not self.started and name != "playbook_on_start":
            self._start(ts)  # a run whose first events are missing still gets its playbook
        handler = {
            "playbook_on_start": lambda: self._start(ts),
            "playbook_on_play_start": lambda: self._play_start(data, ts),
            # ansible-runner sends a handler's start as a task start with is_conditional true (as
            # Ansible 1 marked handlers); Ansible itself always passes false for a task's.
            "playbook_on_task_start": lambda: self._task_start(data, ts, bool(data.get("is_conditional"))),
            "playbook_on_handler_task_start": lambda: self._task_start(data, ts, True),
            "playbook_on_stats": lambda: self._stats(data, ts),
        }.get(name)
        if handler is not None:
            handler()
        elif name in RESULT_EVENTS:
            self._result(data, RESULT_EVENTS[name], ts)
        elif name in ITEM_EVENTS:
            self._item_delegate(data)
        return self._out

    def finish(self) -> list[Spooled]:
        """The run ended (its status file says so) without playbook_on_stats: killed mid-play.
        As the callback ends a run its process leaves early: the task ends, the run is expired."""
        self._out = []
        self._counter = self.last_counter + 1
        if not self.ended:
            ts = self.last_ts or "1970-01-01T00:00:00+00:00"
            if not self.started:
                self._start(ts)
            self._end_task(ts)
            self.ended = True
            self._emit("run_end", {"status": "expired"}, ts)
        return self._out

    # -- the run, plays and tasks ---------------------------------------------------------------
    def _start(self, ts: str) -> None:
        if self.started:
            return
        self.started = True
        info = self.info
        self._emit("run_start", {
            "path": info.playbook_path, "name": None, "ansible_version": "unknown",
            "labels": [info.source_label, *info.labels], "arguments": {}, "metadata": {},
            "controller": None, "user": None, "python_version": None, "client_version": info.client_version,
        }, ts)
        self._file(info.playbook_path, ts)

    def _file(self, path: str, ts: str) -> None:
        if not path or path in self.files:
            return
        self.files.add(path)
        self._emit("file", {"path": path, "content": self.read_file(path)}, ts)

    def _play_start(self, data: dict[str, Any], ts: str, lost: bool = False) -> None:
        """A play starts; lost: made for a task whose play start is missing (data is the task's)."""
        self._end_task(ts)
        self._end_play(ts)
        found = data.get("play_uuid") or (None if lost else data.get("uuid"))
        self.play_uuid = str(found or uuid.uuid5(uuid.NAMESPACE_URL, f"{self.info.run_id}:play"))[:36]
        name = data.get("play") if lost else data.get("name") or data.get("play")
        batch = self.play_batches[self.play_uuid] = self.play_batches.get(self.play_uuid, 0) + 1
        self._emit("play_start", {"uuid": self.play_uuid, "name": name, "batch": batch}, ts)

    def _task_start(self, data: dict[str, Any], ts: str, handler: bool) -> None:
        self._end_task(ts)
        if self.play_uuid is None:  # its play's start was lost (events missing at the head of a run)
            self._play_start(data, ts, lost=True)
        path, lineno = events.split_location(data.get("task_path"))
        path = path or self.info.playbook_path
        self._file(path, ts)
        self.task_uuid = str(data.get("task_uuid") or data.get("uuid") or "")[:36]
        self.task_started[self.task_uuid] = ts
        self._emit("task_start", {
            "uuid": self.task_uuid, "name": data.get("name") or data.get("task") or "",
            "action": data.get("task_action") or "", "path": path, "lineno": lineno, "handler": handler,
            "tags": [], "play_uuid": self.play_uuid,
        }, ts)

    def _end_task(self, ts: str) -> None:
        if self.task_uuid is not None:
            notes = self.notes.get(self.task_uuid)
            end = self.task_ends[self.task_uuid] = self.task_ends.get(self.task_uuid, 0) + 1
            status = "failed" if self.task_uuid in self.failed_tasks else "completed"
            self._emit("task_end", {"uuid": self.task_uuid, "status": status, "end": end,
                                    **(notes.fields() if notes else {})}, ts)
            self.task_started.pop(self.task_uuid, None)
            self.task_uuid = None

    def _end_play(self, ts: str) -> None:
        if self.play_uuid is not None:
            self._emit("play_end", {"uuid": self.play_uuid, "status": "completed"}, ts)
            self.play_uuid = None

    # -- results ----------------------------------------------------------------------------------
    def _item_delegate(self, data: dict[str, Any]) -> None:
        name = _delegate(data.get("res"))
        if name:
            names = self.item_delegates.setdefault((str(data.get("host")), str(data.get("task_uuid"))[:36]), [])
            if name not in names:
                names.append(name)

    def _content(self, res: Any, action: str, host: str) -> dict[str, Any]:
        if not self.info.record_content:
            return {}
        # A skip has no res in the job events: recorded empty.
        data = res if isinstance(res, dict) else ({} if res is None else {"result": res})
        if data.get("_ansible_no_log"):
            data = nolog.censor(data)
        data = nolog.strip_internal(data)
        if action in parity.SETUP_ACTIONS and not data:
            facts = self.cached_facts(host)
            if facts is not None:
                data = {"ansible_facts": facts, "ara_spool_note": FACTS_NOTE}
        data = parity.mask_facts(data, list(self.info.ignored_facts))
        try:
            return parity.sorted_json(data)
        except (TypeError, ValueError):
            return {"unrecordable": str(data)[:10000]}

    def _result(self, data: dict[str, Any], status: str, ts: str) -> None:
        host = str(data.get("host") or "")
        task_uuid = str(data.get("task_uuid") or "")[:36]
        if task_uuid != self.task_uuid:  # a result whose task start was lost
            self._task_start(data, ts, False)
        res = data.get("res")
        ignore_errors = bool(data.get("ignore_errors"))
        if status in ("failed", "unreachable") and not ignore_errors:
            self.failed_tasks.add(task_uuid)
        action = str(data.get("task_action") or "")
        ended = _iso(data.get("end")) or ts
        started = _iso(data.get("start")) or self.task_started.get(task_uuid) or ended
        delegated = self.item_delegates.pop((host, task_uuid), [])
        if not delegated and status != "skipped":
            delegated = [d for d in [_delegate(res)] if d]
        content = self._content(res, action, host)
        self.notes.setdefault(task_uuid, parity.TaskNotes()).add(content)
        path, lineno = events.split_location(data.get("task_path"))
        body = {
            "task_uuid": task_uuid, "play_uuid": self.play_uuid, "host": host,
            "delegated_to": [] if status == "skipped" else delegated,
            "status": status, "changed": bool(isinstance(res, dict) and res.get("changed", False)),
            "ignore_errors": ignore_errors, "started": started, "ended": ended, "content": content,
            "task_name": data.get("task") or "", "action": action, "path": path or self.info.playbook_path,
            "lineno": lineno,
        }
        if parity.host_facts(action, content) is not None:
            body["host_facts"] = True
        self._emit("result", body, ended)

    def _stats(self, data: dict[str, Any], ts: str) -> None:
        self._end_task(ts)
        self._end_play(ts)
        names = {"ok": "ok", "changed": "changed", "failures": "failed", "skipped": "skipped", "dark": "unreachable"}
        hosts: set[str] = set()
        for key in (*names, "processed"):
            hosts.update((data.get(key) or {}).keys())
        counters = {}
        failed = False
        for host in sorted(hosts):
            counters[host] = {ours: int((data.get(theirs) or {}).get(host, 0)) for theirs, ours in names.items()}
            failed = failed or bool(counters[host]["failed"] or counters[host]["unreachable"])
        self._emit("host_stats", counters, ts)
        self.ended = True
        self._emit("run_end", {"status": "failed" if failed else "completed"}, ts)


def _delegate(res: Any) -> str:
    dvars = res.get("_ansible_delegated_vars") if isinstance(res, dict) else None
    if not isinstance(dvars, dict):
        return ""
    return str(dvars.get("ansible_delegated_host") or dvars.get("ansible_host") or "")


def _iso(value: Any) -> str | None:
    """ansible-runner's times (ISO 8601, with an offset or naive UTC) as the spool's."""
    if not isinstance(value, str) or not value:
        return None
    try:
        from ara_spool.spool.schema import parse_time

        return parse_time(value).isoformat(timespec="microseconds")
    except ValueError:
        return None


def translate(info: RunInfo, job_events: list[dict[str, Any]], read_file: Callable[[str], str],
              cached_facts: Callable[[str], dict[str, Any] | None], ended: bool) -> Iterator[Spooled]:
    """A whole run's spool events (job_events in counter order); ended: close it if stats lack."""
    tr = Translator(info, read_file, cached_facts)
    for ev in job_events:
        yield from tr.feed(ev)
    if ended:
        yield from tr.finish()


# -- ansible-navigator's playbook artifact ------------------------------------------------------
NAVIGATOR_LABEL = "source:ansible-navigator"
# Its results carry ansible-runner's event_data, named by `__result` instead of by event.
NAVIGATOR_RESULTS = {"Ok": "runner_on_ok", "Changed": "runner_on_ok", "Failed": "runner_on_failed",
                     "Ignored": "runner_on_failed", "Skipped": "runner_on_skipped",
                     "Unreachable": "runner_on_unreachable"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)")


def _recap(stdout: Any) -> dict[str, dict[str, int]] | None:
    """The PLAY RECAP of ansible-playbook's output as playbook_on_stats' event_data, or None."""
    lines = [_ANSI.sub("", str(x)) for x in stdout] if isinstance(stdout, list) else []
    if not any(line.startswith("PLAY RECAP") for line in lines):
        return None
    stats: dict[str, dict[str, int]] = {"ok": {}, "changed": {}, "dark": {}, "failures": {}, "skipped": {}}
    for line in lines[next(i for i, x in enumerate(lines) if x.startswith("PLAY RECAP")) + 1:]:
        m = _RECAP.match(line)
        if m:
            host, *counts = m.groups()
            for key, value in zip(("ok", "changed", "dark", "failures", "skipped"), counts, strict=True):
                stats[key][host] = int(value)
    return stats


def navigator_job_events(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """ansible-navigator's playbook artifact (`<playbook>-artifact-<ts>.json`) as ansible-runner job
    events: its plays hold the results' event_data in order; the play and task starts are made from
    them, the stats from the PLAY RECAP of its stdout. Counters are positions: the same document
    always gives the same events."""
    out: list[dict[str, Any]] = []

    def add(event: str, data: dict[str, Any], created: Any) -> None:
        out.append({"counter": len(out) + 1, "event": event, "event_data": data, "created": created})

    plays = [p for p in doc.get("plays") or [] if isinstance(p, dict)]
    first = next((t for p in plays for t in p.get("tasks") or []), {})
    last = first.get("start")
    add("playbook_on_start", {"playbook": plays[0].get("playbook") if plays else None}, last)
    for play in plays:
        results = [r for r in play.get("tasks") or [] if isinstance(r, dict)]
        last = results[0].get("start") if results else last
        add("playbook_on_play_start", {"play_uuid": play.get("play_uuid") or play.get("uuid"),
                                       "name": play.get("name")}, last)
        task = None
        for r in results:
            if r.get("task_uuid") != task:
                task = r.get("task_uuid")
                add("playbook_on_task_start", {
                    "task": r.get("task"), "name": r.get("task"), "task_uuid": task,
                    "task_action": r.get("task_action"), "task_path": r.get("task_path"),
                    "play": r.get("play"), "play_uuid": r.get("play_uuid")},
                    r.get("start"))
            last = r.get("end") or last
            add(NAVIGATOR_RESULTS.get(str(r.get("__result")), "runner_on_ok"),
                {k: v for k, v in r.items() if not k.startswith("__")}, last)
    stats = _recap(doc.get("stdout"))
    if stats is not None:
        add("playbook_on_stats", stats, last)
    return out
