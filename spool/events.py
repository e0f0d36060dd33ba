"""The write side of explicit audit events: the one place an `event` body is built.

Four writers spool explicit events: `ara-spool emit`, the `ara_spool_event` action, the callback
(the seed's `set_fact: ara_event_payload`) and the role's `ara_send_event` handler. They all build
the body here, so a status, a duration and a task's `path:line` mean the same thing whoever wrote
the line. This module only builds dicts; spool/writer.py writes them.

The body (schema.REQUIRED["event"]), in this key order:
    task, status, host   strings; status one of schema.EVENT_STATUSES
    details              any JSON, stored as the result's content
    changed              bool, when the writer says
    play_uuid, path, lineno   where the event comes from, when the writer knows
    duration             seconds, when given (the flusher starts the result that long before ts)

The duration rule, for every writer: absent (None) means no duration; otherwise it must be a
number (or a numeric string, as Ansible templating may give one), not a bool, finite, >= 0 and at
most MAX_DURATION. Anything else raises ValueError with a message naming the value. Each writer
turns it into its own answer: emit exits with a usage error, the action fails the task, and the
seed's payload (which must never fail the play) is recorded without its duration, with a warning.
"""

from __future__ import annotations

import math
from typing import Any

from ara_spool.spool.schema import EVENT_STATUSES

# A year: no step takes longer; a bigger value is a unit mistake or a timestamp, and would start
# the result before year 1 for the flusher.
MAX_DURATION = 366 * 24 * 3600.0


def duration_of(value: Any) -> float | None:
    """value as a duration in seconds, None when absent; ValueError when it breaks the rule above."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"duration must be a number of seconds, not {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"duration must be a number of seconds, not {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite, non-negative number of seconds, not {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {value!r} is over {MAX_DURATION:.0f} seconds (a year): "
                         "give the step's length in seconds")
    return seconds


def check_status(status: Any) -> str:
    """status if it is an explicit event's status, else ValueError listing the allowed ones."""
    if status not in EVENT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(EVENT_STATUSES)}, not {status!r}")
    return status


def split_location(spec: str | None) -> tuple[str, int]:
    """Ansible's task location `path:line` (Task.get_path()) as (path, line); ("", 1) without one.
    A line that is not a number is taken as 1."""
    path, _, line = (spec or "").rpartition(":")
    return path, int(line) if line.isdigit() else 1


def event_body(
    task: str,
    status: str,
    host: str,
    details: Any,
    *,
    duration: Any = None,
    changed: bool | None = None,
    play_uuid: str | None = None,
    path: str | None = None,
    lineno: int | None = None,
) -> dict[str, Any]:
    """An `event` body; ValueError for a status or a duration that breaks the rules above.
    Optional fields left None are not written."""
    body: dict[str, Any] = {"task": task, "status": check_status(status), "host": host, "details": details}
    seconds = duration_of(duration)
    if changed is not None:
        body["changed"] = bool(changed)
    for key, value in (("play_uuid", play_uuid), ("path", path), ("lineno", lineno)):
        if value is not None:
            body[key] = value
    if seconds is not None:
        body["duration"] = seconds
    return body


def payload_body(
    payload: Any, *, task: str, host: str, **where: Any
) -> tuple[dict[str, Any], str | None]:
    """The seed's `ara_event_payload` as an event body, and a warning or None. Never refused: a
    payload that is not a mapping becomes the details; an unknown status is recorded as ok with
    {status, details} as the details; a bad duration is left out and named in the warning.
    task and host are the defaults for a payload without them; where: play_uuid, path, lineno."""
    if not isinstance(payload, dict):
        payload = {"details": payload}
    status = str(payload.get("status") or "ok")
    details = payload.get("details", {})
    if status not in EVENT_STATUSES:
        details, status = {"status": status, "details": payload.get("details")}, "ok"
    warning = None
    try:
        duration = duration_of(payload.get("duration"))
    except ValueError as exc:
        duration, warning = None, f"ara_event_payload: {exc}; recorded without a duration"
    body = event_body(str(payload.get("task") or task), status, str(payload.get("host") or host), details,
                      duration=duration, **where)
    return body, warning
