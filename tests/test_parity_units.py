"""What ara-spool records like ara_default, without a server: the callback's masking, labels and
arguments (handlers/parity.py) and the flusher's mapping of host facts, task notes and delegation.
The end-to-end comparison with ara_default is tests/test_parity.py."""

from __future__ import annotations

import socket

from ara_spool.flusher.ids import AraIds
from ara_spool.flusher.mapping import Hints
from ara_spool.handlers import parity

from tests.test_mapping import drive, ev

RESULT = {"task_uuid": "t1", "play_uuid": "p1", "host": "web1", "status": "ok",
          "started": "2026-01-01T10:00:00+00:00", "ended": "2026-01-01T10:00:01+00:00",
          "action": "gather_facts", "path": "/p.yml", "lineno": 3}


def test_ignored_facts_are_masked_also_in_loop_items_and_all_masks_everything():
    content = {"ansible_facts": {"ansible_env": {"PW": "x"}, "ansible_python": 3},
               "results": [{"ansible_facts": {"ansible_env": {"PW": "y"}}}]}
    parity.mask_facts(content, ["ansible_env"])
    assert content["ansible_facts"] == {"ansible_env": parity.IGNORED_FACT, "ansible_python": 3}
    assert content["results"][0]["ansible_facts"]["ansible_env"] == parity.IGNORED_FACT
    everything = parity.mask_facts({"ansible_facts": {"a": 1}}, ["all"])
    assert everything["ansible_facts"] == {"all": parity.IGNORED_FACT}
    assert parity.mask_facts({"ansible_facts": {"a": 1}}, [])["ansible_facts"] == {"a": 1}


def test_content_keys_are_sorted_at_every_level():
    data = parity.sorted_json({"b": 1, "a": {"d": (1, 2), "c": None}})
    assert list(data) == ["a", "b"] and list(data["a"]) == ["c", "d"] and data["a"]["d"] == [1, 2]
    assert parity.sorted_json({1: "x", "a": "y"}) == {"1": "x", "a": "y"}  # mixed keys: not sortable, kept


def test_arguments_are_censored_and_labels_follow_ara_default():
    args = parity.playbook_arguments({"extra_vars": ("token=s3cret",), "tags": ("all",), "skip_tags": (),
                                      "check": False, "subset": None, "forks": 5}, ["extra_vars"])
    assert args["extra_vars"] == parity.IGNORED_ARGUMENT and args["tags"] == ["all"]
    assert "s3cret" not in str(args)
    labels = parity.argument_labels(args, ["remote_user", "check", "tags", "skip_tags", "subset", "forks"])
    assert labels == ["check:False", "tags:all", "forks:5"]
    # Extra vars recorded (not ignored): one that sets an Ara credential still is not.
    shown = parity.playbook_arguments({"extra_vars": ("a=1", "ara_api_token=s3cret x=2", '{"ara_api_password": 1}')},
                                      [])
    assert shown["extra_vars"] == ["a=1", parity.CREDENTIAL_ARGUMENT, parity.CREDENTIAL_ARGUMENT]


def test_ignored_files_match_substrings_and_regexes_and_the_local_temp_dir():
    patterns = parity.FilePatterns([".ansible/tmp", "regex:sec(ret)?s\\.yml$", "regex:("],
                                   "/home/u/tmpdir/ansible-local-1")
    assert patterns.match("/home/u/tmpdir/x.yml") and not patterns.match("/home/u/.ansible/tmp/x.yml")
    assert patterns.match("/srv/secrets.yml") and not patterns.match("/srv/secrets.yml.bak")
    assert patterns.invalid == ["regex:("]


def test_task_notes_keep_each_exception_warning_and_deprecation_once():
    notes = parity.TaskNotes()
    dep = {"msg": "old", "version": "9", "collection_name": "c"}
    for _ in range(2):
        notes.add({"exception": "tb", "warnings": ["w1", "w2"], "deprecations": [dep]})
    notes.add({"warnings": ["w3"]})
    assert notes.fields() == {"exceptions": ["tb"], "warnings": ["w1", "w2", "w3"], "deprecations": [dep]}
    assert parity.TaskNotes().fields() == {}


def test_controller_is_the_fqdn_unless_configured():
    assert parity.controller_name(True, None) == socket.getfqdn()
    assert parity.controller_name(True, None, "hostname_short") == socket.gethostname().split(".")[0]
    assert parity.controller_name(True, "ctl-1") == "ctl-1" and parity.controller_name(False, "x") is None


def test_setup_result_records_its_facts_on_the_host():
    ids = AraIds(playbook=1, plays={"p1": 2}, tasks={"t1": 3}, files={}, hosts={"web1": 4})
    facts = {"ansible_env": parity.IGNORED_FACT, "ansible_hostname": "web1"}
    calls = drive(ev("result", {**RESULT, "host_facts": True, "content": {"ansible_facts": facts}}), ids)
    assert [(c.method, c.path) for c in calls] == [("POST", "/api/v1/results"), ("PATCH", "/api/v1/hosts/4")]
    assert calls[-1].body == {"facts": facts}
    # Without the callback's flag (an older spool, or another action), no facts are recorded.
    calls = drive(ev("result", {**RESULT, "content": {"ansible_facts": facts}}), ids)
    assert [c.path for c in calls] == ["/api/v1/results"]


def test_task_notes_reach_the_task_and_self_delegation_is_kept():
    ids = AraIds(playbook=1, plays={"p1": 2}, tasks={"t1": 3}, open_tasks={"t1": 3}, hosts={"web1": 4})
    [patch] = drive(ev("task_end", {"uuid": "t1", "status": "completed", "warnings": ["w"], "exceptions": ["tb"]}),
                    ids)
    assert patch.body["warnings"] == ["w"] and patch.body["exceptions"] == ["tb"] and "deprecations" not in patch.body
    [post] = drive(ev("result", {**RESULT, "action": "command", "delegated_to": ["web1"], "content": {}}), ids)
    assert post.body["delegated_to"] == [4]


def test_a_task_created_finished_carries_its_notes():
    ids = AraIds(playbook=1, plays={"p1": 2}, files={"/p.yml\0x": 5}, file_paths={"/p.yml": "x"})
    end = ev("task_end", {"uuid": "t2", "status": "completed", "deprecations": [{"msg": "old"}]},
             ts="2026-01-01T10:00:02+00:00")
    start = ev("task_start", {"uuid": "t2", "name": "n", "action": "debug", "path": "/p.yml", "lineno": 1,
                              "play_uuid": "p1"})
    [create] = drive(start, ids, Hints(task_ends={"t2": end}))
    assert create.body["status"] == "completed" and create.body["deprecations"] == [{"msg": "old"}]
    assert "warnings" not in create.body


def test_every_ara_default_switch_of_the_callback_is_in_the_readme():
    import ast
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    source = (root / "handlers/plugins/callback/ara_spool.py").read_text()
    doc = next(node.value.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", "") == "DOCUMENTATION")
    options = yaml.safe_load(doc)["options"]
    section = (root / "README.md").read_text().split("## Differences from ara_default", 1)[1].split("\n## ", 1)[0]
    switches = {ini["key"]: [e["name"] for e in opt.get("env", [])] for opt in options.values()
                for ini in opt.get("ini", []) if ini["section"] == "ara"}
    assert len(switches) >= 12
    for key, envs in switches.items():
        assert f"`{key}`" in section and all(f"`{name}`" in section for name in envs), key
