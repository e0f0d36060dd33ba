"""The spool's event schema (version 1): what a line must hold to be shipped.

Every line is one JSON object with the common fields
    v     schema version (int, 1)
    run   run id
    seq   the line's byte offset in its spool file: unique and monotonic per run
    ts    event time, UTC ISO 8601 with microseconds
    kind  one of KINDS
and a body named after its kind (see REQUIRED). Unknown extra fields are kept and ignored, so a
newer writer can add fields without breaking an older flusher.

Optional fields the flusher uses when present (absent in older spools, which ship as before):
    run_start.playbook.arguments  ansible-playbook's options, censored as configured
    result.result.host_facts      true: the content's ansible_facts are the host's facts
    task_end.task.exceptions, .warnings, .deprecations   lists, Ara's task "Notes"
    task_end.task.end             n-th end of this task (serial batches, strategy free); default 1
    task_end.task.status_only     true: a late failure, the task's status only (not its end time)
    play_start.play.batch         n-th start of this play uuid (serial batches); default 1
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

VERSION = 1

# kind -> (body key, required body fields)
REQUIRED: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "run_start": ("playbook", ("path", "ansible_version")),
    "file": ("file", ("path", "content")),
    "play_start": ("play", ("uuid",)),
    "task_start": ("task", ("uuid", "name", "action", "play_uuid")),
    "result": ("result", ("task_uuid", "play_uuid", "host", "status", "started", "ended")),
    "event": ("event", ("task", "status", "host")),
    "task_end": ("task", ("uuid", "status")),
    "play_end": ("play", ("uuid", "status")),
    "host_stats": ("stats", ()),
    "run_end": ("end", ("status",)),
    # A later play's ara_playbook_name / ara_playbook_labels (as ara_default re-reads them per play).
    "playbook_update": ("playbook", ()),
    # ara_record: a key/value record of the run's playbook (Ara's records).
    "record": ("record", ("key", "value")),
}
KINDS = frozenset(REQUIRED)

# What an explicit event may say (in the order help texts list them); a result may also be unknown.
EVENT_STATUSES = ("ok", "failed", "skipped", "unreachable")
RESULT_STATUSES = frozenset({*EVENT_STATUSES, "unknown"})
RUN_STATUSES = frozenset({"completed", "failed", "expired", "running", "unknown"})
TASK_STATUSES = frozenset({"completed", "failed", "expired", "running", "unknown"})
PLAY_STATUSES = frozenset({"completed", "expired", "running", "unknown"})
RECORD_TYPES = frozenset({"text", "url", "json", "list", "dict"})  # ara_record's


class SchemaError(ValueError):
    """A line that parses as JSON but is not a valid event."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def to_iso(ts: float) -> str:
    """A POSIX timestamp as UTC ISO 8601 with microseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def parse_time(value: str) -> datetime:
    """Parse an ISO 8601 time (a trailing Z allowed); naive times are taken as UTC."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def validate(event: Any) -> dict[str, Any]:
    """Return event if it is a valid v1 event, else raise SchemaError naming what is wrong."""
    if not isinstance(event, dict):
        raise SchemaError(f"event is a JSON {type(event).__name__}, not an object")
    version = event.get("v")
    if version != VERSION:
        raise SchemaError(f"unknown schema version {version!r} (this flusher reads v{VERSION})")
    for field, typ in (("run", str), ("kind", str), ("ts", str)):
        if not isinstance(event.get(field), typ):
            raise SchemaError(f"field {field!r} missing or not a {typ.__name__}")
    if not isinstance(event.get("seq"), int):
        raise SchemaError("field 'seq' missing or not an integer")
    kind = event["kind"]
    if kind not in REQUIRED:
        raise SchemaError(f"unknown kind {kind!r}")
    _check_time(event["ts"], "ts")
    body_key, fields = REQUIRED[kind]
    body = event.get(body_key)
    if not isinstance(body, dict):
        raise SchemaError(f"{kind} event without an object {body_key!r}")
    missing = [f for f in fields if body.get(f) in (None, "")]
    if missing:
        raise SchemaError(f"{kind} event: {body_key} lacks {', '.join(missing)}")
    if kind == "result":
        _check_status(body["status"], RESULT_STATUSES, "result status")
        _check_time(body["started"], "result.started")
        _check_time(body["ended"], "result.ended")
    elif kind == "event":
        _check_status(body["status"], RESULT_STATUSES, "event status")
        duration = body.get("duration")
        bad = isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0
        if duration is not None and bad:
            raise SchemaError(f"event duration {duration!r} is not a non-negative number")
    elif kind == "run_end":
        _check_status(body["status"], RUN_STATUSES, "run status")
    elif kind == "task_end":
        _check_status(body["status"], TASK_STATUSES, "task status")
    elif kind == "play_end":
        _check_status(body["status"], PLAY_STATUSES, "play status")
    elif kind == "record":
        _check_status(body.get("type", "text"), RECORD_TYPES, "record type")
        if not isinstance(body["key"], str) or not body["key"]:
            raise SchemaError("record key is not a non-empty string")
    elif kind == "host_stats":
        for host, counters in body.items():
            if not isinstance(counters, dict):
                raise SchemaError(f"host_stats for {host!r} is not an object")
    return event


def _check_status(value: Any, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise SchemaError(f"{what} {value!r} is not one of {', '.join(sorted(allowed))}")


def _check_time(value: Any, what: str) -> None:
    try:
        parse_time(value)
    except (TypeError, ValueError, AttributeError):
        raise SchemaError(f"{what} {value!r} is not an ISO 8601 time") from None


def make_event(run_id: str, kind: str, body: dict[str, Any], ts: str | None = None) -> dict[str, Any]:
    """A new event without its seq (the writer assigns it under the file lock)."""
    body_key = REQUIRED[kind][0]
    return {"v": VERSION, "run": run_id, "seq": -1, "ts": ts or now_iso(), "kind": kind, body_key: body}
