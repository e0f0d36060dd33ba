# ara-spool: Ara's own `ara_record` action, through the spool. A playbook written for ara_default
# keeps working: the record is spooled now and the flusher makes it a record of the run's playbook.
from __future__ import annotations

DOCUMENTATION = """
module: ara_record
short_description: Record a key/value pair on the run's Ara playbook, through the ara-spool spool
description:
  - The same arguments and checks as Ara's own C(ara_record) action. The record is appended to this
    run's spool at once; the flusher creates it in Ara as a record of the run's playbook (or updates
    the record of the same key, as Ara's action does).
options:
  key: {description: Name of the record, type: str, required: true}
  value: {description: Value of the record, type: raw, required: true}
  type: {description: "text, url, json, list or dict", type: str, default: text}
  playbook_id: {description: An Ara playbook id to record on instead of the run's, type: int}
"""

import sys  # noqa: E402

from ansible.plugins.action import ActionBase  # noqa: E402

try:
    from ara_spool.handlers import runtime
except ImportError as exc:  # the plugins are thin: the package must be in Ansible's own Python
    raise ImportError(f"ara-spool is not installed in the Python that runs Ansible ({sys.executable}): "
                      f"pip install it there ({exc})") from exc
from ara_spool.spool import writer  # noqa: E402
from ara_spool.spool.paths import UnsafeRunId  # noqa: E402
from ara_spool.spool.schema import RECORD_TYPES  # noqa: E402

VALID_ARGS = frozenset(("playbook_id", "key", "value", "type"))
VALID_TYPES = ["text", "url", "json", "list", "dict"]  # Ara's order, for its message
assert set(VALID_TYPES) == RECORD_TYPES


class ActionModule(ActionBase):
    """Record persistent data as key/value pairs in ARA (spooled)."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        for arg in self._task.args:  # Ara's checks, in its order and words
            if arg not in VALID_ARGS:
                return {"failed": True, "msg": f"{arg} is not a valid option."}
        result = super().run(tmp, task_vars)
        args = self._task.args
        for parameter in ("key", "value"):
            if not args.get(parameter):
                result.update(failed=True, msg=f"Parameter '{parameter}' is required")
                return result
        kind = args.get("type", "text")
        if kind not in VALID_TYPES:
            result.update(failed=True, msg="Type '{}' is not supported, choose one of: {}".format(
                kind, ", ".join(VALID_TYPES)))
            return result
        run_id = runtime.task_run_id(self._templar, task_vars)
        if not run_id:
            result.update(failed=True, msg="no run id: enable the ara_spool callback or set ara_run_id")
            return result
        body = {"key": str(args["key"]), "value": args["value"], "type": kind}
        if args.get("playbook_id") is not None:
            body["playbook_id"] = int(args["playbook_id"])
        try:
            writer.append(str(run_id), "record", body, spool_dir=runtime.spool_dir())
        except (OSError, ValueError, UnsafeRunId) as exc:
            result.update(failed=True, changed=False,
                          msg=f"Record failed to be created or updated in ARA: cannot spool it: {exc}")
            return result
        # Ara's answer also has playbook_id, created and updated: the flusher makes the record later.
        result.update(changed=True, key=body["key"], value=body["value"], type=kind,
                      msg="Record created or updated in ARA")
        return result
