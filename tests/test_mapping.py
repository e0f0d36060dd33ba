"""The pure event -> Ara calls mapping, without a server."""

from __future__ import annotations

import itertools

from ara_spool.flusher.ids import AraIds
from ara_spool.flusher.mapping import Call, Hints, plan
from ara_spool.spool import schema


def ev(kind, body, ts="2026-01-01T10:00:00.000000+00:00", run="r1"):
    e = schema.make_event(run, kind, body, ts)
    e["seq"] = 0
    return schema.validate(e)


def drive(event, ids, hints=None, found=None, status=None):
    """Run the plan, answering each call as Ara would (a fresh id per create); `status`: the status
    every answer carries instead (a row found already there, ended)."""
    counter = itertools.count(100)
    calls: list[Call] = []
    gen = plan(event, ids, hints)
    try:
        call = next(gen)
        while True:
            calls.append(call)
            resp = {"id": next(counter), "status": status or (call.body or {}).get("status", "running")}
            call = gen.send(resp)
    except StopIteration:
        pass
    return calls


def test_run_start_looks_up_the_run_label_before_creating():
    ids = AraIds()
    calls = drive(ev("run_start", {"path": "/p.yml", "ansible_version": "2.19", "metadata": {"branch": "main"},
                                   "labels": ["x"]}), ids)
    [create] = calls  # created running: no PATCH to say so again (one round trip less per run)
    assert create.method == "POST" and create.path == "/api/v1/playbooks" and create.lookup_first
    assert create.lookup.params["label"] == "run_id:r1"
    assert create.body["labels"] == ["run_id:r1", "x", "branch:main"]
    assert ids.playbook == 100


def test_run_start_of_a_run_that_ended_sets_it_running_again():
    start = ev("run_start", {"path": "/p.yml", "ansible_version": "2.19"})
    # Its playbook found ended in Ara (a re-run with the same id, by another flusher or controller).
    ids = AraIds()
    create, patch = drive(start, ids, status="completed")
    assert create.path == "/api/v1/playbooks" and create.lookup_first
    assert (patch.method, patch.path, patch.body) == ("PATCH", "/api/v1/playbooks/100", {"status": "running"})
    # The same spool's second run_start, its playbook known: running again, whatever it was.
    assert [(c.method, c.body) for c in drive(start, ids)] == [("PATCH", {"status": "running"})]


def test_result_creates_its_prerequisites_once_in_order():
    ids = AraIds(playbook=1)
    body = {"task_uuid": "5b9ee2a4-0000-4000-8000-000000000001", "play_uuid": "5b9ee2a4-0000-4000-8000-00000000000a",
            "host": "web1", "status": "ok", "changed": True, "started": "2026-01-01T10:00:00+00:00",
            "ended": "2026-01-01T10:00:01+00:00", "content": {"msg": "hi"}, "delegated_to": ["db1"],
            "task_name": "t", "action": "debug", "path": "/p.yml", "lineno": 3}
    calls = drive(ev("result", body), ids)
    assert [(c.method, c.path) for c in calls] == [
        ("POST", "/api/v1/plays"), ("POST", "/api/v1/files"), ("POST", "/api/v1/tasks"),
        ("POST", "/api/v1/hosts"), ("POST", "/api/v1/hosts"), ("POST", "/api/v1/results")]
    result = calls[-1]
    assert result.creates and result.lookup.min_id == 0 and result.lookup.equal == {"started": body["started"]}
    assert result.body["delegated_to"] == [ids.hosts["db1"]] and result.body["changed"] is True
    assert ids.last_result == 105  # ids 100..104 went to play, file, task and the two hosts
    # The same result again needs only the result POST, and its lookup starts above the last id.
    again = drive(ev("result", body), ids)
    assert [(c.method, c.path) for c in again] == [("POST", "/api/v1/results")]
    assert again[0].lookup.min_id == 105


def test_task_created_finished_when_its_end_is_known():
    ids = AraIds(playbook=1, plays={"p": 2})
    ids.file_paths["/p.yml"] = "s"
    ids.files["/p.yml\0s"] = 3
    start = ev("task_start", {"uuid": "t", "name": "n", "action": "debug", "play_uuid": "p", "path": "/p.yml"})
    end = ev("task_end", {"uuid": "t", "status": "failed"}, ts="2026-01-01T10:00:05+00:00")
    [create] = drive(start, ids, Hints({"t": end}))
    assert create.body["status"] == "failed" and create.body["ended"] == end["ts"]
    assert drive(end, ids) == []  # no PATCH: already finished
    ids2 = AraIds(playbook=1, plays={"p": 2}, files=dict(ids.files), file_paths=dict(ids.file_paths))
    drive(start, ids2)
    [patch] = drive(end, ids2)
    assert patch.method == "PATCH" and patch.body["status"] == "failed"


def test_file_with_new_content_for_the_same_path_gets_its_own_path():
    ids = AraIds(playbook=1)
    [a] = drive(ev("file", {"path": "/p.yml", "content": "one"}), ids)
    [b] = drive(ev("file", {"path": "/p.yml", "content": "two"}), ids)
    assert a.body["path"] == "/p.yml" and b.body["path"].startswith("/p.yml@")
    assert drive(ev("file", {"path": "/p.yml", "content": "one"}), ids) == []


def test_explicit_event_maps_to_a_named_task_and_result():
    ids = AraIds(playbook=1)
    e = ev("event", {"task": "pr_status_check", "status": "ok", "host": "localhost", "duration": 1.23,
                     "details": {"message": "task finished"}}, ts="2026-01-01T10:00:10+00:00")
    calls = drive(e, ids)
    task = next(c for c in calls if c.path == "/api/v1/tasks")
    result = calls[-1]
    assert task.body["name"] == "pr_status_check" and task.body["action"] == "ara_spool_event"
    assert result.body["content"] == {"message": "task finished"}
    assert schema.parse_time(result.body["ended"]) - schema.parse_time(result.body["started"]) == \
        schema.parse_time("2026-01-01T10:00:01.230000+00:00") - schema.parse_time("2026-01-01T10:00:00+00:00")
    # A second event for the same task name reuses the task (same derived uuid).
    assert [c.path for c in drive(e, ids)] == ["/api/v1/results"]


def test_run_end_closes_what_was_left_open():
    ids = AraIds(playbook=1, open_tasks={"t": 5}, open_plays={"p": 6})
    calls = drive(ev("run_end", {"status": "expired"}), ids)
    assert [(c.path, c.body["status"]) for c in calls] == [
        ("/api/v1/tasks/5", "expired"), ("/api/v1/plays/6", "expired"), ("/api/v1/playbooks/1", "expired")]
    assert not ids.open_tasks and not ids.open_plays
