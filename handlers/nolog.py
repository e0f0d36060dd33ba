"""A no_log result as Ansible censors it, for writers that may get one uncensored.

Shared by the callback (handlers/plugins/callback/ara_spool.py) and the ansible-runner import
(handlers/runner_events.py). No Ansible import: the importer runs where Ansible may not be.
"""

from __future__ import annotations

from typing import Any

CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
# What Ansible keeps of a no_log result (ansible.executor.task_result): the rest is censored.
NO_LOG_KEPT = ("attempts", "changed", "retries", "exception", "warnings", "deprecations")


def censor(data: dict[str, Any]) -> dict[str, Any]:
    """data censored as Ansible censors a no_log result (unchanged when it already is)."""
    if "censored" in data:
        return data
    return {**{k: data[k] for k in NO_LOG_KEPT if k in data}, "censored": CENSORED}


def strip_internal(value: Any) -> Any:
    """value without Ansible's internal `_ansible_*` keys, at any depth (a copy)."""
    if isinstance(value, dict):
        return {k: strip_internal(v) for k, v in value.items()
                if not (isinstance(k, str) and k.startswith("_ansible_"))}
    if isinstance(value, list):
        return [strip_internal(v) for v in value]
    return value
