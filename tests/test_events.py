"""The write side of explicit events (spool/events.py): one body, one duration rule, one status list."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from ara_spool.spool import events, schema
from ara_spool.spool.events import MAX_DURATION, duration_of, event_body, payload_body, split_location

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value, expected", [
    (None, None), (0, 0.0), (1.23, 1.23), ("1.5", 1.5), (" 2 ", 2.0), (MAX_DURATION, MAX_DURATION),
])
def test_duration_accepted(value, expected):
    assert duration_of(value) == expected
    assert expected is None or isinstance(duration_of(value), float)


@pytest.mark.parametrize("value", [
    -1, -0.001, "-3", True, False, "abc", "", [1], {"s": 1}, math.inf, -math.inf, math.nan, "nan", "inf", 1e400,
    MAX_DURATION + 1, 1.7e9,
])
def test_duration_refused_with_a_message_naming_the_value(value):
    with pytest.raises(ValueError, match="duration") as info:
        duration_of(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("spec, expected", [
    ("/p/site.yml:12", ("/p/site.yml", 12)), ("/p/a:b.yml:3", ("/p/a:b.yml", 3)), ("/p/x.yml:", ("/p/x.yml", 1)),
    ("/p/x.yml:abc", ("/p/x.yml", 1)), ("", ("", 1)), (None, ("", 1)), ("nocolon", ("", 1)),
])
def test_split_location(spec, expected):
    assert split_location(spec) == expected


def test_event_body_keys_and_values():
    body = event_body("t", "failed", "h", {"a": 1}, duration=2, changed=False, play_uuid="p", path="/x.yml", lineno=4)
    assert list(body) == ["task", "status", "host", "details", "changed", "play_uuid", "path", "lineno", "duration"]
    assert body == {"task": "t", "status": "failed", "host": "h", "details": {"a": 1}, "changed": False,
                    "play_uuid": "p", "path": "/x.yml", "lineno": 4, "duration": 2.0}
    assert event_body("t", "ok", "h", {}) == {"task": "t", "status": "ok", "host": "h", "details": {}}
    # What it builds is a valid v1 event.
    schema.validate({**schema.make_event("r", "event", body), "seq": 0})


@pytest.mark.parametrize("status", ["unknown", "OK", "", None, "changed"])
def test_event_body_refuses_a_status_outside_the_schema(status):
    with pytest.raises(ValueError, match="status must be one of ok, failed, skipped, unreachable"):
        event_body("t", status, "h", {})


def test_event_body_refuses_a_bad_duration():
    with pytest.raises(ValueError, match="duration"):
        event_body("t", "ok", "h", {}, duration=-1)


def test_payload_body_as_the_seed_pattern_recorded_it():
    body, warning = payload_body({"task": "pr", "status": "skipped", "duration": 0, "details": {"n": 1}},
                                 task="the task", host="web1", play_uuid="p", path="/s.yml", lineno=7)
    assert warning is None
    assert body == {"task": "pr", "status": "skipped", "host": "web1", "details": {"n": 1}, "play_uuid": "p",
                    "path": "/s.yml", "lineno": 7, "duration": 0.0}
    # Not a mapping: the payload is the details, under the setting task's name.
    assert payload_body([1, 2], task="t", host="h")[0] == {"task": "t", "status": "ok", "host": "h", "details": [1, 2]}
    # An unknown status is kept in the details, recorded as ok.
    body, _ = payload_body({"status": "weird", "details": {"x": 1}}, task="t", host="h")
    assert body["status"] == "ok" and body["details"] == {"status": "weird", "details": {"x": 1}}
    assert payload_body({"status": "weird"}, task="t", host="h")[0]["details"] == {"status": "weird", "details": None}


@pytest.mark.parametrize("duration", [-1, "soon", math.inf, True])
def test_payload_body_drops_a_bad_duration_with_a_warning(duration):
    body, warning = payload_body({"task": "t", "duration": duration}, task="x", host="h")
    assert "duration" not in body and body["task"] == "t"
    assert warning and "duration" in warning and "without a duration" in warning


def test_statuses_are_listed_once():
    """RESULT_STATUSES etc. in spool/schema.py are the one list: no module re-lists the event statuses."""
    assert schema.RESULT_STATUSES == frozenset(schema.EVENT_STATUSES) | {"unknown"}
    listing = re.compile(r"""["']ok["']\s*,\s*["']failed["']\s*,\s*["']skipped["']\s*,\s*["']unreachable["']""")
    offenders = [str(p.relative_to(ROOT)) for folder in ("spool", "flusher", "handlers")
                 for p in (ROOT / folder).rglob("*.py") if listing.search(p.read_text())]
    assert offenders == ["spool/schema.py"]


def test_spool_layer_imports_neither_ansible_nor_the_flusher():
    imported = re.findall(r"^\s*(?:from|import) (\S+)", Path(events.__file__).read_text(), re.M)
    assert not [m for m in imported if m.startswith(("ansible", "ara_spool.flusher", "ara_spool.handlers"))]
