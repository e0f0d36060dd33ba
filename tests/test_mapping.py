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


def drive(event, ids, hints=None, found=None, status=None, start=100):
    """Run the plan, answering each call as Ara would (a fresh id per create); `status`: the status
    every answer carries instead (a row found already there, ended)."""
    counter = itertools.count(start)
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


def _started(ids, n_tasks=1):
    drive(ev("run_start", {"path": "/p.yml", "ansible_version": "2.19"}), ids)
    drive(ev("play_start", {"uuid": "p1", "name": "rolling", "batch": 1}), ids)
    for i in range(n_tasks):
        drive(ev("task_start", {"uuid": f"t{i}", "name": f"t{i}", "action": "debug", "play_uuid": "p1"}), ids)


def test_a_serial_play_is_one_ara_play_per_batch_and_a_task_stays_in_the_play_it_started_in():
    ids = AraIds()
    _started(ids)
    first = ids.plays["p1"]
    [create] = drive(ev("play_start", {"uuid": "p1", "name": "rolling", "batch": 2}), ids, start=500)
    # batch 2 is a new row; found again after a crash above batch 1's row, never batch 1's
    assert create.method == "POST" and create.lookup.min_id == first and ids.plays["p1"] != first
    assert drive(ev("play_start", {"uuid": "p1", "name": "rolling", "batch": 2}), ids) == []  # replayed
    result = {"task_uuid": "t0", "play_uuid": "p1", "host": "n3", "status": "ok",
              "started": "2026-01-01T10:00:01+00:00", "ended": "2026-01-01T10:00:02+00:00"}
    posted = [c for c in drive(ev("result", result), ids) if c.path == "/api/v1/results"]
    assert posted[0].body["play"] == first  # as ara_default: a result is in its task's play
    drive(ev("task_start", {"uuid": "t9", "name": "new", "action": "debug", "play_uuid": "p1"}), ids, start=600)
    assert ids.task_plays["t9"] == ids.plays["p1"] != first  # first seen in batch 2


def test_a_task_that_ends_again_keeps_its_worst_status_and_its_last_end():
    ids = AraIds()
    _started(ids)
    [patch] = drive(ev("task_end", {"uuid": "t0", "status": "completed", "end": 1}, ts="2026-01-01T10:00:01+00:00"),
                    ids)
    assert patch.body["status"] == "completed"
    [patch] = drive(ev("task_end", {"uuid": "t0", "status": "failed", "end": 2}, ts="2026-01-01T10:00:09+00:00"), ids)
    assert patch.body == {"status": "failed", "ended": "2026-01-01T10:00:09+00:00"}
    [patch] = drive(ev("task_end", {"uuid": "t0", "status": "completed", "end": 3}, ts="2026-01-01T10:00:20+00:00"),
                    ids)
    assert patch.body == {"status": "failed", "ended": "2026-01-01T10:00:20+00:00"}  # failed sticks
    assert drive(ev("task_end", {"uuid": "t0", "status": "completed", "end": 3}), ids) == []  # a replay
    # A late failure (strategy free) turns it failed without moving its end; here it is already.
    late = {"uuid": "t0", "status": "failed", "end": 4, "status_only": True, "exceptions": ["boom"]}
    [patch] = drive(ev("task_end", late), ids)
    assert patch.body == {"status": "failed", "exceptions": ["boom"]}


def test_a_task_created_ended_from_its_first_end_is_patched_by_its_later_ends():
    ids = AraIds()
    drive(ev("run_start", {"path": "/p.yml", "ansible_version": "2.19"}), ids)
    drive(ev("play_start", {"uuid": "p1", "batch": 1}), ids)
    end1 = ev("task_end", {"uuid": "t0", "status": "completed", "end": 1}, ts="2026-01-01T10:00:01+00:00")
    calls = drive(ev("task_start", {"uuid": "t0", "name": "t0", "action": "debug", "play_uuid": "p1"}), ids,
                  Hints({"t0": end1}))
    assert calls[-1].body["status"] == "completed" and drive(end1, ids) == []
    [patch] = drive(ev("task_end", {"uuid": "t0", "status": "failed", "end": 2}, ts="2026-01-01T10:00:05+00:00"), ids)
    assert patch.body["status"] == "failed" and patch.body["ended"] == "2026-01-01T10:00:05+00:00"


def test_a_later_play_renames_the_playbook_and_replaces_its_labels():
    ids = AraIds()
    _started(ids, 0)
    [patch] = drive(ev("playbook_update", {"name": "renamed", "labels": ["a", "b"], "metadata": {"team": "x"}}), ids)
    assert patch.method == "PATCH" and patch.path == f"/api/v1/playbooks/{ids.playbook}"
    assert patch.body == {"name": "renamed", "labels": ["run_id:r1", "a", "b", "team:x"]}


def test_a_record_is_created_or_updated_by_its_key():
    ids = AraIds()
    _started(ids, 0)
    record = ev("record", {"key": "release", "value": {"v": 1}, "type": "dict"})
    calls = drive(record, ids)  # the GET finds none: created
    assert [c.method for c in calls] == ["GET", "POST"]
    assert calls[1].body == {"playbook": ids.playbook, "key": "release", "value": {"v": 1}, "type": "dict"}
    gen = plan(record, ids)
    get = next(gen)
    assert "key=release" in get.path
    patch = gen.send({"count": 1, "results": [{"id": 7, "key": "release"}]})
    assert patch.method == "PATCH" and patch.path == "/api/v1/records/7"


def test_hosts_only_explicit_events_name_get_counters():
    ids = AraIds()
    _started(ids, 0)
    for status, changed in (("ok", True), ("ok", False), ("failed", False)):
        drive(ev("event", {"task": "deploy", "status": status, "host": "github.com", "changed": changed}), ids)
    calls = drive(ev("run_end", {"status": "completed"}), ids)  # no Ansible stats: an emit-only run
    counters = [c for c in calls if c.path == f"/api/v1/hosts/{ids.hosts['github.com']}"]
    assert counters[0].body == {"ok": 2, "changed": 1, "failed": 1, "skipped": 0, "unreachable": 0}
    ids2 = AraIds()
    _started(ids2, 0)
    drive(ev("event", {"task": "deploy", "status": "ok", "host": "github.com"}), ids2)
    calls = drive(ev("host_stats", {"n1": {"ok": 1}}), ids2)
    assert {c.path for c in calls if c.method == "PATCH"} == {f"/api/v1/hosts/{ids2.hosts[h]}"
                                                              for h in ("n1", "github.com")}
    assert not [c for c in drive(ev("run_end", {"status": "completed"}), ids2) if "/hosts/" in c.path]
