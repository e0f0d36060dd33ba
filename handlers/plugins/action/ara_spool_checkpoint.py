# ara-spool: the role's handlers. register: make sure the run is recorded; send: the seed's
# `ara_send_event` (the callback already spooled each payload as its task set it); flush: ship this
# run to Ara now, bounded by a timeout, warning or failing per ara_fail_on_error.
from __future__ import annotations

DOCUMENTATION = """
module: ara_spool_checkpoint
short_description: ara-spool checkpoints used by the ara_spool role's handlers
options:
  op: {description: "register, send or flush", type: str, required: true}
  timeout: {description: Seconds a flush may take, type: float, default: 30}
"""

import os  # noqa: E402
import sys  # noqa: E402

from ansible.plugins.action import ActionBase  # noqa: E402
from ansible.utils.display import Display  # noqa: E402

try:
    from ara_spool.handlers import runtime
except ImportError as exc:  # the plugins are thin: the package must be in Ansible's own Python
    raise ImportError(f"ara-spool is not installed in the Python that runs Ansible ({sys.executable}): "
                      f"pip install it there ({exc})") from exc
from ara_spool.spool import events, writer  # noqa: E402

display = Display()


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False
    TRANSFERS_FILES = False

    def _var(self, task_vars, name, default=None):
        value = task_vars.get(name, default)
        return self._templar.template(value) if value is not None else default

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        result["changed"] = False
        if not runtime.as_bool(self._var(task_vars, "ara_enabled", False)):
            result.update(skipped=True, skip_reason="ara_enabled is false")
            return result
        op = self._task.args.get("op")
        active = os.environ.get(runtime.ACTIVE_ENV)
        run_id = active or self._var(task_vars, "ara_run_id") or os.environ.get("ARA_RUN_ID")
        if not run_id:
            result.update(failed=True, msg="ara-spool: no run id; is the ara_spool callback enabled (ara-spool env)?")
            return result
        result["ara_run_id"] = str(run_id)
        if op == "register":
            if not active:  # without the callback, register the run here (explicit events only)
                display.warning("ara-spool: the ara_spool callback is not active: only explicit events are recorded")
                writer.append(str(run_id), "run_start", {
                    "path": self._task.get_path() or "unknown", "ansible_version": "unknown",
                    "name": self._var(task_vars, "ara_playbook_name"),
                    "metadata": self._var(task_vars, "ara_default_metadata") or {},
                }, spool_dir=runtime.spool_dir())
            result["msg"] = f"run {run_id} registered"
            return result
        if op == "send":
            if not active:
                # Without the callback only the handler path remains: once per host per flush, so
                # only the last payload per host survives. Record it; the README explains the loss.
                payload = self._var(task_vars, "ara_event_payload")
                if isinstance(payload, dict):
                    body, warning = events.payload_body(payload, task="ara_event",
                                                        host=str(task_vars.get("inventory_hostname")))
                    if warning:
                        display.warning(f"ara-spool: {warning}")
                    writer.append(str(run_id), "event", body, spool_dir=runtime.spool_dir())
            result["msg"] = f"events of run {run_id} are spooled"
            return result
        if op == "flush":
            return self._flush(str(run_id), task_vars, result)
        result.update(failed=True, msg=f"unknown op {op!r}: use register, send or flush")
        return result

    def _flush(self, run_id, task_vars, result):
        timeout = float(self._task.args.get("timeout") or self._var(task_vars, "ara_flush_timeout", 30) or 30)
        fail = runtime.as_bool(self._var(task_vars, "ara_fail_on_error", False))
        # The token reaches the flusher by environment, never argv; this task runs with no_log.
        env = runtime.api_env(self._var(task_vars, "ara_api_base_url"), self._var(task_vars, "ara_api_token"),
                              self._var(task_vars, "ara_verify_ssl"))
        ok, message = runtime.checkpoint_flush(run_id, runtime.spool_dir(), timeout, env)
        if ok:
            result["msg"] = message
            return result
        message = f"ara-spool: {message}"
        display.warning(message)
        if fail:
            result.update(failed=True, msg=message)
        else:
            result["msg"] = message
        return result
