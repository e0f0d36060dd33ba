# ara-spool: spool one explicit audit event (the seed's task/status/host/duration/details) at the
# moment a task calls it. Runs on the controller; no module is sent to the host.
from __future__ import annotations

DOCUMENTATION = """
module: ara_spool_event
short_description: Record an explicit audit event for Ara through the ara-spool spool
description:
  - Appends one event to this run's spool; Ara shows it as a result of a task named I(task) on host
    I(host), with I(details) as the result's content. Does nothing when C(ara_enabled) is false.
options:
  task: {description: Task name shown in Ara (default this task's name), type: str}
  status: {description: "ok, failed, skipped or unreachable", type: str, default: ok}
  host: {description: Host shown in Ara (default inventory_hostname), type: str}
  duration: {description: Seconds the step took, type: float}
  details: {description: Any data, stored as the result's content, type: raw}
  changed: {description: Mark the result changed, type: bool, default: false}
"""

import os  # noqa: E402
import sys  # noqa: E402

from ansible.plugins.action import ActionBase  # noqa: E402

try:
    from ara_spool.handlers import runtime
except ImportError as exc:  # the plugins are thin: the package must be in Ansible's own Python
    raise ImportError(f"ara-spool is not installed in the Python that runs Ansible ({sys.executable}): "
                      f"pip install it there ({exc})") from exc
from ara_spool.spool import events, writer  # noqa: E402
from ara_spool.spool.paths import UnsafeRunId  # noqa: E402


def play_uuid_of(task) -> str | None:
    parent = getattr(task, "_parent", None)
    while parent is not None:
        play = getattr(parent, "_play", None)
        if play is not None:
            return str(play._uuid)[:36]
        parent = getattr(parent, "_parent", None)
    return None


class ActionModule(ActionBase):
    _supports_check_mode = True  # an audit event is recorded under --check too
    _supports_async = False
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        result["changed"] = False
        enabled = self._templar.template(task_vars.get("ara_enabled", False))
        if not (runtime.as_bool(enabled) or os.environ.get(runtime.ACTIVE_ENV)):
            result.update(skipped=True, skip_reason="ara_enabled is false")
            return result
        args = self._task.args
        path, lineno = events.split_location(self._task.get_path())
        try:
            body = events.event_body(
                str(args.get("task") or self._task.get_name()), str(args.get("status", "ok")),
                str(args.get("host") or task_vars.get("inventory_hostname", "localhost")), args.get("details", {}),
                duration=args.get("duration"), changed=bool(args.get("changed", False)),
                play_uuid=play_uuid_of(self._task), path=path or None, lineno=lineno if path else None)
        except ValueError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        run_id = runtime.task_run_id(self._templar, task_vars)
        if not run_id:
            result.update(failed=True, msg="no run id: enable the ara_spool callback or set ara_run_id")
            return result
        try:
            event = writer.append(str(run_id), "event", body, spool_dir=runtime.spool_dir())
        except (OSError, ValueError, UnsafeRunId) as exc:
            fail = runtime.as_bool(self._templar.template(task_vars.get("ara_fail_on_error", False)))
            msg = f"ara-spool: cannot spool the event: {exc}"
            if fail:
                result.update(failed=True, msg=msg)
            else:
                result["warnings"] = [msg]
            return result
        result.update(msg=f"event spooled for run {run_id}", ara_run_id=str(run_id), ara_event_seq=event["seq"])
        return result
